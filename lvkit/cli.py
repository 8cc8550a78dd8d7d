"""The ``lvkit`` command: each subcommand is one library call plus printing.

Errors of the API print ``error: <Code>: <message>`` on stderr and exit with status 1.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from lvkit.cli_bench import bench
from lvkit.cli_common import client_for, home_option, print_json
from lvkit.cli_datasets import datasets, models_create
from lvkit.errors import AccessDeniedException, ConflictException, DatasetError, LookoutVisionError, LvkitError
from lvkit.hosting import HostingOptions
from lvkit.images import DEFAULT_MAX_BYTES
from lvkit.server_defaults import BODY_IDLE_TIMEOUT, BODY_TIMEOUT, DEFAULT_HOST, DEFAULT_PORT, MAX_BODY_BYTES_IN_FLIGHT
from lvkit.shapes import CONTENT_TYPES, ModelStatus

__all__ = ["main"]

#: the hosting defaults ``lvkit serve``'s options show (the library's, never typed here)
_HOSTING = HostingOptions()


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


def _key_values(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
    """``("a=1", "b=x")`` -> ``{"a": 1, "b": "x"}``: JSON values where they parse, text otherwise
    (``lvkit.training_jobs.option_value``); a key given twice is refused."""
    from lvkit.training_jobs import option_value

    out: dict[str, Any] = {}
    for item in values:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        if key in out:
            raise click.BadParameter(f"{key} is given twice")
        try:
            out[key] = option_value(key, text)
        except LookoutVisionError as exc:
            raise click.BadParameter(exc.message) from None
    return out


@main.command()
@click.option("--project", required=True, help="Project name (created if missing).")
@click.option("--dataset", required=True, type=click.Path(exists=True),
              help="MVTec folder, normal/anomaly folder or manifest.")
@click.option("--model", default="patchcore", show_default=True)
@click.option("--backbone", default=None, help="timm backbone (default: offline EfficientNet-Lite0).")
@click.option("--layers", default=None, help="Comma-separated feature layers.")
@click.option("--image-size", default=256, show_default=True, type=int, help="Model input side.")
@click.option("--epochs", default=None, type=int)
@click.option("--resize/--no-resize", default=False, show_default=True, help="Accept images of other sizes.")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--description", default=None)
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE", callback=_key_values,
              help="An option of the model (repeatable): n_features=100 (PaDiM), teacher_weights=PATH and "
                   "imagenet_dir=DIR (EfficientAD)... VALUE is read as JSON when it parses, else as text.")
@home_option
def train(project: str, dataset: str, model: str, backbone: str | None, layers: str | None, image_size: int,
          epochs: int | None, resize: bool, device: str, seed: int, description: str | None,
          model_options: dict[str, Any], home: str | None) -> None:
    """Train a new model version from a dataset."""
    from lvkit.training import train as run

    version = run(project, dataset, model=model, backbone=backbone,
                  layers=layers.split(",") if layers else None, image_size=image_size, model_kwargs=model_options,
                  epochs=epochs, resize=resize, device=device, seed=seed, description=description, home=home)
    print_json(client_for(home).describe_model(ProjectName=project, ModelVersion=version))


@main.command()
@click.option("--project", required=True)
@click.option("--version", "version", default="latest", show_default=True, help="The anomalib version to export.")
@click.option("--format", "fmt", required=True, help="openvino or onnx: the new version's runtime.")
@click.option("--precision", default="fp32", show_default=True, help="fp32, fp16 (OpenVINO only) or int8.")
@click.option("--calibration-images", default=None, type=int,
              help="int8: how many of the version's sorted training images calibrate it (default 32).")
@click.option("--description", default=None)
@home_option
def export(project: str, version: str, fmt: str, precision: str, calibration_images: int | None,
           description: str | None, home: str | None) -> None:
    """Export an anomalib version to OpenVINO or ONNX as a new model version of the project."""
    from lvkit.backends.anomalib.export import export_version

    options: dict[str, Any] = {} if calibration_images is None else {"calibration_images": calibration_images}
    new = export_version(home, project, version, format=fmt, precision=precision, description=description, **options)
    print_json(client_for(home).describe_model(ProjectName=project, ModelVersion=new))


@main.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--project", required=True)
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--content-type", default=None, type=click.Choice(CONTENT_TYPES),
              help="Default: from each file's extension.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Write one row per image to this .csv or .jsonl file (default: JSON lines on stdout).")
@click.option("--masks", "masks_dir", default=None, type=click.Path(file_okay=False),
              help="Write each AnomalyMask PNG under this folder (images' folders mirrored).")
@click.option("--heatmaps", "heatmaps_dir", default=None, type=click.Path(file_okay=False),
              help="Write each raw anomaly map (.npy float32, an lvkit extension) under this folder; "
                   "in process, anomalib backend only.")
@click.option("--mask-out", default=None, type=click.Path(dir_okay=False),
              help="One image: write its AnomalyMask PNG here.")
@click.option("--endpoint-url", default=None, help="Send the images to a running `lvkit serve` at this URL "
              "instead of loading the model in this process.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Concurrent requests with --endpoint-url (in process, images run one at a time).")
@click.option("--start", is_flag=True, help="Host the version for this run if it is not HOSTED, and stop it after.")
@click.option("--allow-failures", is_flag=True,
              help="Exit 0 even when some images failed (they are rows with their error either way).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@home_option
def detect(images: tuple[str, ...], project: str, version: str, content_type: str | None, out: str | None,
           masks_dir: str | None, heatmaps_dir: str | None, mask_out: str | None, endpoint_url: str | None,
           workers: int, start: bool, allow_failures: bool, progress: bool | None, home: str | None) -> None:
    """DetectAnomalies on IMAGES (files, folders, globs) through one hosted model version.

    One file and no --out/--masks/--heatmaps prints the DetectAnomalies JSON, as the service
    returns it. Otherwise each image is a row (path, verdict, confidence, anomaly areas, or its
    error); a failed image does not stop the run, and any failure makes the exit status 1
    unless --allow-failures.
    """
    from lvkit import batch

    single = len(images) == 1 and Path(images[0]).is_file() and not (out or masks_dir or heatmaps_dir)
    if mask_out and not single:
        raise click.UsageError("--mask-out is for one image; use --masks DIR for several")
    if heatmaps_dir and endpoint_url:
        raise click.UsageError("--heatmaps needs the model in this process: the API's answer carries no "
                               "anomaly map. Drop --endpoint-url (and run where the model's store is).")
    try:
        paths = batch.expand_images(images)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="IMAGES") from exc
    lv = _detect_client(home, endpoint_url, workers)
    try:
        with batch.hosted_version(lv, project, version, start=start) as number:
            if single:
                _detect_one(lv, project, number, paths[0], content_type, mask_out)
                return
            raw = batch.raw_backend(lv, project, number) if heatmaps_dir else None
            rows = batch.detect_files(lv, project, number, paths, content_type=content_type, raw=raw,
                                      masks_dir=Path(masks_dir) if masks_dir else None,
                                      heatmaps_dir=Path(heatmaps_dir) if heatmaps_dir else None,
                                      workers=workers if endpoint_url else 1)
            counts = _write_rows(rows, out, total=len(paths),
                                 progress=sys.stderr.isatty() if progress is None else progress)
    except ValueError as exc:  # heat maps that the backend cannot give, a results file name
        raise click.ClickException(str(exc)) from exc
    except (ConflictException, AccessDeniedException) as exc:
        click.echo(f"error: {exc.code}: {exc.message}", err=True)
        click.echo(_detect_hint(exc, lv, project, version), err=True)
        sys.exit(1)
    failed = counts["failed"]
    click.echo(f"{len(paths)} images: {counts['anomalous']} anomalous, {counts['normal']} normal, {failed} failed"
               + (f" -> {out}" if out else ""), err=True)
    if failed and not allow_failures:
        sys.exit(1)


def _detect_client(home: str | None, endpoint_url: str | None, workers: int) -> Any:
    if endpoint_url is None:
        return client_for(home)
    from botocore.config import Config

    from lvkit.boto import boto3_client

    return boto3_client(endpoint_url, config=Config(max_pool_connections=max(10, workers)))


def _detect_hint(exc: LookoutVisionError, lv: Any, project: str, version: str) -> str:
    from lvkit.batch import is_unsigned

    if isinstance(exc, AccessDeniedException):
        if is_unsigned(lv):
            return ("  no AWS credentials were found, so the requests went unsigned and this server wants SigV4: "
                    "export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a key the server's --credentials holds)")
        return "  the server refused these credentials: use a key its --credentials holds"
    return (f"  host it with `lvkit models start --project {project} --version {version}` (and stop it after), "
            "or pass --start to host it for this run only")


def _detect_one(lv: Any, project: str, version: str, image: Path, content_type: str | None,
                mask_out: str | None) -> None:
    """The single-image form: print DetectAnomalies' JSON (mask base64), as before."""
    from lvkit.batch import detect_one

    result = detect_one(lv, project, version, image, content_type=content_type)
    if mask_out and result.anomaly_mask is not None:
        Path(mask_out).write_bytes(result.anomaly_mask)
    click.echo(json.dumps({"DetectAnomalyResult": result.to_json()}, indent=2))


def _write_rows(rows: Any, out: str | None, *, total: int, progress: bool) -> dict[str, int]:
    """Write rows to ``out`` (or JSON lines on stdout) under a progress bar; count the verdicts."""
    from tqdm import tqdm

    from lvkit.batch import ResultsWriter, open_results

    counts = {"anomalous": 0, "normal": 0, "failed": 0}
    with (open_results(out) if out else contextlib.nullcontext(ResultsWriter(sys.stdout, "jsonl"))) as writer, \
            tqdm(total=total, unit="img", desc="detect", file=sys.stderr, disable=not progress) as bar:
        try:
            for row in rows:
                writer.write(row)
                counts["failed" if row.failed else "anomalous" if row.is_anomalous else "normal"] += 1
                bar.update()
                bar.set_postfix(failed=counts["failed"], refresh=False)
        except BaseException:
            bar.close()
            click.echo(f"stopped after {writer.rows} of {total} images" + (f" (written to {out})" if out else ""),
                       err=True)
            raise
    return counts


@main.group(cls=_Group)
def models() -> None:
    """Create (train from the datasets), list, describe, start, stop and delete model versions."""


models.add_command(models_create)
main.add_command(datasets)
main.add_command(bench)


@models.command("list")
@click.option("--project", required=True)
@home_option
def models_list(project: str, home: str | None) -> None:
    """List a project's model versions."""
    lv = client_for(home)
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
    print_json(client_for(home).describe_model(ProjectName=project, ModelVersion=version))


@models.command("start")
@click.option("--project", required=True)
@click.option("--version", "version", default="latest", show_default=True)
@click.option("--min-units", default=1, show_default=True, type=int)
@click.option("--max-units", default=None, type=int)
@home_option
def models_start(project: str, version: str, min_units: int, max_units: int | None, home: str | None) -> None:
    """Start hosting a model version (returns once it is hosted)."""
    lv = client_for(home)
    kw: dict[str, Any] = {"MaxInferenceUnits": max_units} if max_units else {}
    lv.start_model(ProjectName=project, ModelVersion=version, MinInferenceUnits=min_units, **kw)
    d = lv.describe_model(ProjectName=project, ModelVersion=version)["ModelDescription"]
    click.echo(f"{project}/{d['ModelVersion']}: {d['Status']} ({d['StatusMessage']})")
    if d["Status"] != ModelStatus.HOSTED:
        sys.exit(1)


@models.command("delete")
@click.option("--project", required=True)
@click.option("--version", "version", required=True)
@home_option
def models_delete(project: str, version: str, home: str | None) -> None:
    """Delete a model version that is not hosted (a failed training, an old version)."""
    from lvkit.validation import check_version

    check_version(version)
    store = client_for(home).service.store
    m = store.delete_model(project, version)
    click.echo(f"deleted {m.project}/{m.version} ({m.status})")


@models.command("calibrate")
@click.option("--project", required=True)
@click.option("--version", "version", default="latest", show_default=True)
@click.argument("calibration", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--detach", is_flag=True, help="Serve uncalibrated Confidence again.")
@home_option
def models_calibrate(project: str, version: str, calibration: str | None, detach: bool, home: str | None) -> None:
    """Attach a recalibrator (a JSON file of lvkit.eval's to_dict(), e.g. recalibration_report's
    "calibration" column) to a model version, or --detach it.

    The recalibrated P(anomaly) decides (IsAnomalous is p > 0.5) and Confidence is the
    confidence in that verdict; DescribeModel's Performance shows the resulting operating point.
    """
    from lvkit.locks import ServerLock

    if detach == (calibration is not None):
        raise click.UsageError("give a CALIBRATION file or --detach (one of them)")
    data = None
    if calibration is not None:
        try:
            data = json.loads(Path(calibration).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise click.UsageError(f"{calibration}: not a JSON file ({exc})") from None
    lv = client_for(home)
    d = lv.attach_calibration(ProjectName=project, ModelVersion=version, Calibration=data)["ModelDescription"]
    performance = ", ".join(f"{k} {v:.3f}" for k, v in sorted(d.get("Performance", {}).items())) or "none recorded"
    what = f"attached {data.get('kind')}" if isinstance(data, dict) else "detached"
    click.echo(f"{project}/{d['ModelVersion']}: {what}; Performance {performance}")
    lock = ServerLock(lv.service.store.home)
    try:
        lock.acquire()
    except LvkitError as exc:  # a server holds this home: its loaded copy keeps the old recalibrator
        click.echo(f"note: {exc.args[0].split(';')[0]}; it applies this from the version's next StartModel "
                   "(stop and start it there)", err=True)
    finally:
        lock.release()


@models.command("stop")
@click.option("--project", required=True)
@click.option("--version", "version", default="latest", show_default=True)
@home_option
def models_stop(project: str, version: str, home: str | None) -> None:
    """Stop hosting a model version."""
    lv = client_for(home)
    lv.stop_model(ProjectName=project, ModelVersion=version)
    d = lv.describe_model(ProjectName=project, ModelVersion=version)["ModelDescription"]
    click.echo(f"{project}/{d['ModelVersion']}: {d['Status']}")


@main.command()
@home_option
def projects(home: str | None) -> None:
    """List projects."""
    lv = client_for(home)
    for p in lv.list_projects()["Projects"]:
        click.echo(f"{p['ProjectName']}  {p['ProjectArn']}")


@main.command()
@click.option("--out", default="lvkit-reports", show_default=True, type=click.Path(file_okay=False),
              help="Where <name>.html, <name>.json and index.md go; --out reports replaces the committed ones.")
@click.option("--notebooks", "notebooks_dir", default="notebooks", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="The notebooks to run.")
@click.option("--smoke", is_flag=True, help="CI sizes (SMOKE=True) instead of full size.")
@click.option("--only", multiple=True, help="Run only this notebook (name or prefix, e.g. 02); repeatable.")
@click.option("--clean", is_flag=True, help="Only strip the notebooks' outputs and metadata for committing.")
def report(out: str, notebooks_dir: str, smoke: bool, only: tuple[str, ...], clean: bool) -> None:
    """Execute the notebooks (papermill), render them to HTML and index their headline numbers."""
    from lvkit.publish import clean_notebook, find_notebooks, run_reports

    if clean:
        for path in find_notebooks(notebooks_dir, only):
            click.echo(f"{path}: {'cleaned' if clean_notebook(path) else 'already clean'}")
        return
    results = run_reports(out, notebooks=notebooks_dir, only=only, smoke=smoke, log=click.echo,
                          progress_bar=sys.stderr.isatty())
    if any(r["error"] is not None for r in results):
        sys.exit(1)


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to bind; other than loopback needs --credentials or --insecure.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@home_option
@click.option("--credentials", "credentials_file", default=None, envvar="LVKIT_CREDENTIALS_FILE",
              type=click.Path(exists=True, dir_okay=False),
              help="Access keys whose SigV4 signatures are accepted: an AWS credentials INI file or "
                   "ID:SECRET lines (also $LVKIT_ACCESS_KEYS=ID:SECRET,...). Without any, requests are not checked.")
@click.option("--insecure", is_flag=True, help="Serve a non-loopback address without credentials.")
@click.option("--max-queue", default=_HOSTING.max_queue, show_default=True, type=click.IntRange(min=0),
              help="Requests that may wait per hosted model; more get ThrottlingException (429).")
@click.option("--max-batch", default=_HOSTING.max_batch, show_default=True, type=click.IntRange(min=1),
              help="Most concurrent requests a worker runs as one batch (backends with detect_many).")
@click.option("--idle-timeout", default=_HOSTING.idle_timeout, show_default=True,
              type=click.FloatRange(min=0.01),
              help="Seconds after which an idle worker above MinInferenceUnits stops.")
@click.option("--max-bytes", default=DEFAULT_MAX_BYTES, show_default=True, type=click.IntRange(min=1),
              help="DetectAnomalies body limit.")
@click.option("--max-inflight-bytes", default=MAX_BODY_BYTES_IN_FLIGHT, show_default=True,
              type=click.IntRange(min=1),
              help="Request body bytes the server holds at once; beyond it a request gets ThrottlingException "
                   "(429) before its body is read. At least the largest body limit.")
@click.option("--body-timeout", default=BODY_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds a request body may take to arrive in all.")
@click.option("--body-idle-timeout", default=BODY_IDLE_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds a request body may go without a byte arriving; a stalled upload is answered and "
                   "its connection closed.")
@click.option("--max-inference-units", default=None, type=click.IntRange(min=1),
              help="Most inference units (model workers) of all hosted versions together (default: from the "
                   "CPU cores).")
@click.option("--device", default="auto", show_default=True)
@click.option("--local-files", default=None, type=click.Path(exists=True, file_okay=False),
              help="A folder whose files datasets may reference (file:// or paths); without it only s3:// "
                   "references are read, so no client can make the server copy its files.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option("--torch-threads", default=None, type=click.IntRange(min=1),
              help="CPU threads each torch operation may use (sets OMP_NUM_THREADS before torch loads); "
                   "on CPU, cores divided by inference units avoids oversubscription.")
def serve(host: str, port: int, home: str | None, credentials_file: str | None, insecure: bool, max_queue: int,
          max_batch: int, idle_timeout: float, max_bytes: int, max_inflight_bytes: int, body_timeout: float,
          body_idle_timeout: float, max_inference_units: int | None, device: str, local_files: str | None,
          log_level: str, access_log: bool, torch_threads: int | None) -> None:
    """Serve the Lookout for Vision REST API over HTTP (boto3 clients point endpoint_url here)."""
    import os

    if torch_threads is not None:
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(torch_threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(torch_threads)
    from lvkit.server import check_bind, load_credentials
    from lvkit.server import serve as run

    try:
        credentials = load_credentials(credentials_file)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--credentials") from exc
    check_bind(host, has_credentials=bool(credentials), insecure=insecure)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    click.echo(f"lvkit serve: {url}  (SigV4 {'on, ' + str(len(credentials)) + ' key(s)' if credentials else 'off'})",
               err=True)
    # what a boto3 program needs, ready to paste: the endpoint, lvkit's service model (today's
    # boto3 lacks it) and credentials (botocore signs every request; any value when SigV4 is off)
    keys = "" if credentials else " AWS_ACCESS_KEY_ID=lvkit AWS_SECRET_ACCESS_KEY=lvkit"
    click.echo(f"  for boto3: export AWS_ENDPOINT_URL_LOOKOUTVISION={url} AWS_DATA_PATH=\"$(lvkit aws-data-path)\""
               f"{keys} AWS_DEFAULT_REGION=${{AWS_DEFAULT_REGION:-us-east-1}}", err=True)
    run(home, host=host, port=port, credentials=credentials or None, insecure=insecure,
        hosting=HostingOptions(max_queue=max_queue, max_batch=max_batch, idle_timeout=idle_timeout),
        max_bytes=max_bytes, device=device, log_level=log_level, access_log=access_log,
        max_body_bytes_in_flight=max_inflight_bytes, body_timeout=body_timeout, body_idle_timeout=body_idle_timeout,
        max_inference_units=max_inference_units, local_files=local_files)


@main.command("aws-data-path")
def aws_data_path() -> None:
    """Print the folder to put in AWS_DATA_PATH so boto3.client("lookoutvision") works on today's boto3."""
    from lvkit.boto import DATA_PATH

    click.echo(DATA_PATH)


if __name__ == "__main__":
    main()
