"""``lvkit datasets create|describe|list-entries|update|delete`` and ``lvkit models create``.

The API's dataset operations and CreateModel, in process: manifests may be ``s3://`` URIs (read
with boto3's default configuration: a profile, ``AWS_ENDPOINT_URL_S3``...), ``file://`` URIs or
local paths. The commands wait for the work to end and exit with status 1 when it failed,
printing the StatusMessage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lvkit.cli_common import client_for, home_option, print_json

__all__ = ["datasets", "models_create"]

_TYPE = click.option("--type", "dataset_type", required=True, type=click.Choice(["train", "test"]),
                     help="The project's train or test dataset.")


def _report(service: Any, project: str, dataset_type: str, success: str) -> None:
    """One line on the dataset as the work left it; exit status 1 unless its status is ``success``."""
    d = service.describe_dataset(project, dataset_type)
    click.echo(f"{project}/{dataset_type}: {d.status} ({d.status_message}); {d.total} images, {d.labeled} labeled: "
               f"{d.normal} normal, {d.anomaly} anomaly")
    if d.status != success:
        sys.exit(1)


@click.group()
def datasets() -> None:
    """Create, describe, list, update and delete a project's datasets (the API's operations)."""


@datasets.command("create")
@click.option("--project", required=True, help="Project name (created if missing).")
@_TYPE
@click.option("--manifest", default=None, help="s3://bucket/key, file:// URI or path of a manifest (JSON lines); "
              "without it the dataset is created empty.")
@click.option("--version-id", default=None, help="The S3 object version of the manifest.")
@home_option
def datasets_create(project: str, dataset_type: str, manifest: str | None, version_id: str | None,
                    home: str | None) -> None:
    """CreateDataset: copy the manifest's images (and masks) into the dataset."""
    from lvkit.errors import ResourceNotFoundException

    service = client_for(home).service
    try:
        service.describe_project(project)
    except ResourceNotFoundException:
        service.create_project(project)
    source = manifest if manifest is None or "://" in manifest else str(Path(manifest).absolute())
    service.create_dataset(project, dataset_type, source, version_id=version_id)
    _report(service, project, dataset_type, "CREATE_COMPLETE")


@datasets.command("describe")
@click.option("--project", required=True)
@_TYPE
@home_option
def datasets_describe(project: str, dataset_type: str, home: str | None) -> None:
    """Print DescribeDataset's JSON."""
    print_json(client_for(home).describe_dataset(ProjectName=project, DatasetType=dataset_type))


@datasets.command("list-entries")
@click.option("--project", required=True)
@_TYPE
@click.option("--labeled/--unlabeled", default=None, help="Only labeled (or unlabeled) entries.")
@click.option("--anomaly-class", default=None, type=click.Choice(["normal", "anomaly"]))
@click.option("--before", default=None, help="Added before this date (ISO 8601).")
@click.option("--after", default=None, help="Added after this date (ISO 8601).")
@click.option("--source-ref-contains", default=None)
@home_option
def datasets_list_entries(project: str, dataset_type: str, labeled: bool | None, anomaly_class: str | None,
                          before: str | None, after: str | None, source_ref_contains: str | None,
                          home: str | None) -> None:
    """Print the dataset's entries as JSON lines (every page)."""
    lv = client_for(home)
    filters = {"Labeled": labeled, "AnomalyClass": anomaly_class, "BeforeCreationDate": before,
               "AfterCreationDate": after, "SourceRefContains": source_ref_contains}
    kw: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
    while True:
        page = lv.list_dataset_entries(ProjectName=project, DatasetType=dataset_type, **kw)
        for line in page["DatasetEntries"]:
            click.echo(line)
        if not page.get("NextToken"):
            break
        kw["NextToken"] = page["NextToken"]


@datasets.command("update")
@click.option("--project", required=True)
@_TYPE
@click.argument("changes", type=click.File("rb"))
@home_option
def datasets_update(project: str, dataset_type: str, changes: Any, home: str | None) -> None:
    """UpdateDatasetEntries: add or replace entries from a file of JSON lines (``-`` for stdin);
    references must be absolute (s3://, file:// or absolute paths)."""
    service = client_for(home).service
    service.update_dataset_entries(project, dataset_type, changes.read())
    _report(service, project, dataset_type, "UPDATE_COMPLETE")


@datasets.command("delete")
@click.option("--project", required=True)
@_TYPE
@home_option
def datasets_delete(project: str, dataset_type: str, home: str | None) -> None:
    """DeleteDataset (the source images are not touched)."""
    client_for(home).delete_dataset(ProjectName=project, DatasetType=dataset_type)
    click.echo(f"deleted {project}/{dataset_type}")


@click.command("create")
@click.option("--project", required=True)
@click.option("--output", default=None, help="Where the evaluation manifest and result go: s3://bucket/prefix or a "
              "folder (default: nowhere but the version).")
@click.option("--model", default=None, help="anomalib model (tag lvkit:model; default patchcore).")
@click.option("--backbone", default=None, help="timm backbone (tag lvkit:backbone).")
@click.option("--image-size", default=None, type=int, help="Model input side (tag lvkit:image-size; default 256).")
@click.option("--epochs", default=None, type=int, help="Tag lvkit:epochs.")
@click.option("--resize/--no-resize", default=None, help="Accept images of other sizes (tag lvkit:resize).")
@click.option("--seed", default=None, type=int, help="Tag lvkit:seed.")
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--description", default=None)
@click.option("--kms-key-id", default=None, help="Accepted and recorded; lvkit encrypts nothing with it.")
@home_option
def models_create(project: str, output: str | None, model: str | None, backbone: str | None,
                  image_size: int | None, epochs: int | None, resize: bool | None, seed: int | None,
                  tags: tuple[str, ...], description: str | None, kms_key_id: str | None, home: str | None) -> None:
    """CreateModel: train a new version from the project's datasets, showing progress."""
    chosen: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep:
            raise click.BadParameter(f"{tag!r} is not KEY=VALUE", param_hint="--tag")
        chosen[key] = value
    options: dict[str, object] = {"lvkit:model": model, "lvkit:backbone": backbone, "lvkit:image-size": image_size,
                                  "lvkit:epochs": epochs, "lvkit:seed": seed,
                                  "lvkit:resize": None if resize is None else str(resize).lower()}
    chosen |= {key: str(option) for key, option in options.items() if option is not None}
    if output is not None and "://" not in output:
        output = str(Path(output).absolute())
    service = client_for(home).service
    m = service.create_model(project, output=output, description=description, kms_key_id=kms_key_id,
                             tags=chosen, progress="bar" if sys.stderr.isatty() else "lines")
    described = service.describe_model(project, m.model_version)
    d = described.to_wire()
    click.echo(json.dumps({k: d[k] for k in ("ModelVersion", "Status", "StatusMessage", "Performance") if k in d},
                          indent=2))
    if described.evaluation_result_uri:
        click.echo(f"evaluation result: {described.evaluation_result_uri}")
    if d["Status"] != "TRAINED":
        sys.exit(1)
