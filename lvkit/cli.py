"""The ``lvkit`` command: each subcommand is one library call plus printing.

Errors of the API print ``error: <Code>: <message>`` on stderr and exit with status 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lvkit.errors import DatasetError, LvkitError, LookoutVisionError

__all__ = ["main"]


def _client(home: str | None) -> Any:
    from lvkit.client import client

    return client(home)


def _print_json(data: dict[str, Any]) -> None:
    data = {k: v for k, v in data.items() if k != "ResponseMetadata"}
    click.echo(json.dumps(data, indent=2, default=str))


class _Group(click.Group):
    """Turns lvkit's errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LookoutVisionError as exc:
            click.echo(f"error: {exc.code}: {exc.message}", err=True)
            sys.exit(1)
        except (DatasetError, LvkitError) as exc:
            click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(1)


home_option = click.option("--home", envvar="LVKIT_HOME", default=None, type=click.Path(file_okay=False),
                           help="State folder (default $LVKIT_HOME or ~/.lvkit).")


@click.group(cls=_Group)
@click.version_option(package_name="lvkit")
def main() -> None:
    """Lookout for Vision's DetectAnomalies on open anomalib models."""


@main.command()
@click.option("--out", default="lvkit-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the generated data, results CSV and PNG sheet.")
@click.option("--category", default="brick", show_default=True, type=click.Choice(["brick", "gravel", "grass"]))
@click.option("--model", default="patchcore", show_default=True, help="anomalib model name.")
@click.option("--device", default="auto", show_default=True)
@home_option
def demo(out: str, category: str, model: str, device: str, home: str | None) -> None:
    """Generate the bundled benchmark, train, host, detect every test image, report."""
    from lvkit.demo import run_demo

    run_demo(Path(out), category=category, model=model, device=device, home=home)


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
def generate(out: str, seed: int) -> None:
    """Write the bundled synthetic benchmark (MVTec layout + manifests) into OUT."""
    from lvkit.datasets.synthetic import generate as gen

    click.echo(gen(Path(out), seed=seed))


@main.command()
@click.option("--project", required=True, help="Project name (created if missing).")
@click.option("--dataset", required=True, type=click.Path(exists=True), help="MVTec folder, normal/anomaly folder or manifest.")
@click.option("--model", default="patchcore", show_default=True)
@click.option("--backbone", default=None, help="timm backbone (default: offline EfficientNet-Lite0).")
@click.option("--layers", default=None, help="Comma-separated feature layers.")
@click.option("--image-size", default=256, show_default=True, type=int)
@click.option("--epochs", default=None, type=int)
@click.option("--resize/--no-resize", default=False, show_default=True, help="Accept images of other sizes.")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--description", default=None)
@home_option
def train(project: str, dataset: str, model: str, backbone: str | None, layers: str | None, image_size: int,
          epochs: int | None, resize: bool, device: str, seed: int, description: str | None, home: str | None) -> None:
    """Train a new model version from a dataset."""
    from lvkit.training import train as run

    version = run(project, dataset, model=model, backbone=backbone,
                  layers=layers.split(",") if layers else None, image_size=image_size, epochs=epochs,
                  resize=resize, device=device, seed=seed, description=description, home=home)
    _print_json(_client(home).describe_model(ProjectName=project, ModelVersion=version))


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--project", required=True)
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--content-type", default=None, help="Default: from the file's extension.")
@click.option("--mask-out", default=None, type=click.Path(dir_okay=False), help="Write AnomalyMask PNG here.")
@home_option
def detect(image: str, project: str, version: str, content_type: str | None, mask_out: str | None,
           home: str | None) -> None:
    """Print the DetectAnomalies JSON the service would return for IMAGE."""
    from lvkit.shapes import DetectAnomalyResult

    if content_type is None:
        content_type = "image/png" if image.lower().endswith(".png") else "image/jpeg"
    r = _client(home).detect_anomalies(ProjectName=project, ModelVersion=version, ContentType=content_type,
                                       Body=Path(image).read_bytes())
    result = DetectAnomalyResult.from_wire(r["DetectAnomalyResult"])
    if mask_out and result.anomaly_mask is not None:
        Path(mask_out).write_bytes(result.anomaly_mask)
    click.echo(json.dumps({"DetectAnomalyResult": result.to_json()}, indent=2))


@main.group(cls=_Group)
def models() -> None:
    """List, describe, start and stop model versions."""


@models.command("list")
@click.option("--project", required=True)
@home_option
def models_list(project: str, home: str | None) -> None:
    """List a project's model versions."""
    lv = _client(home)
    pages = []
    token = None
    while True:
        r = lv.list_models(ProjectName=project, **({"NextToken": token} if token else {}))
        pages += r["Models"]
        token = r.get("NextToken")
        if not token:
            break
    for m in pages:
        perf = m.get("Performance", {})
        f1 = f"F1 {perf['F1Score']:.3f}" if "F1Score" in perf else ""
        click.echo(f"{m['ModelVersion']:>4}  {m['Status']:<16} {f1:<9} {m['StatusMessage']}")


@models.command("describe")
@click.option("--project", required=True)
@click.option("--version", "version", default="latest", show_default=True)
@home_option
def models_describe(project: str, version: str, home: str | None) -> None:
    """Print DescribeModel's JSON."""
    _print_json(_client(home).describe_model(ProjectName=project, ModelVersion=version))


@models.command("start")
@click.option("--project", required=True)
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--min-units", default=1, show_default=True, type=int)
@click.option("--max-units", default=None, type=int)
@home_option
def models_start(project: str, version: str, min_units: int, max_units: int | None, home: str | None) -> None:
    """Start hosting a model version (returns once it is hosted)."""
    lv = _client(home)
    kw: dict[str, Any] = {"MaxInferenceUnits": max_units} if max_units else {}
    lv.start_model(ProjectName=project, ModelVersion=version, MinInferenceUnits=min_units, **kw)
    d = lv.describe_model(ProjectName=project, ModelVersion=version)["ModelDescription"]
    click.echo(f"{project}/{d['ModelVersion']}: {d['Status']} ({d['StatusMessage']})")
    if d["Status"] != "HOSTED":
        sys.exit(1)


@models.command("stop")
@click.option("--project", required=True)
@click.option("--version", "version", default="latest", show_default=True)
@home_option
def models_stop(project: str, version: str, home: str | None) -> None:
    """Stop hosting a model version."""
    lv = _client(home)
    lv.stop_model(ProjectName=project, ModelVersion=version)
    d = lv.describe_model(ProjectName=project, ModelVersion=version)["ModelDescription"]
    click.echo(f"{project}/{d['ModelVersion']}: {d['Status']}")


@main.command()
@home_option
def projects(home: str | None) -> None:
    """List projects."""
    lv = _client(home)
    for p in lv.list_projects()["Projects"]:
        click.echo(f"{p['ProjectName']}  {p['ProjectArn']}")
