"""DetectAnomalies over many image files through one hosted model version (``lvkit detect``).

Owns: turning file, folder and glob arguments into a list of images; checking, before the
first image, that the version is HOSTED (or hosting it for the run and stopping it after);
sending each image through a boto3-shaped client, either ``lvkit.client()`` in process (one
model load, images one at a time in the caller's thread) or a boto3 client of a running
``lvkit serve`` (a small thread pool); one :class:`DetectRow` per image, written as CSV or
JSON lines; the AnomalyMask PNGs and, in process with a backend that has them, the raw
anomaly maps. Imports ``lvkit.errors``, ``lvkit.shapes`` and (for the error translation at
the boto3 boundary) ``lvkit.backends.service``; never ``lvkit.server``, torch or click.

Choices where the public material is silent:

* An error that belongs to one image (ValidationException for an undecodable image or a wrong
  size, InternalServerException, ThrottlingException after botocore's retries, a file that
  cannot be read) is that image's row, and the run goes on. An error that belongs to the run
  (AccessDeniedException, ResourceNotFoundException, ConflictException: the version was
  stopped meanwhile, or an endpoint that cannot be reached) stops it: the rows already written
  stay written.
* Folders are searched recursively for ``.png``, ``.jpg`` and ``.jpeg`` files (any case),
  skipping hidden files and folders; glob patterns (``*``, ``?``, ``[...]``, ``**``) are
  expanded here, so they work quoted. A file named explicitly is sent whatever its suffix. An
  argument that names nothing, or a folder or pattern without images, is an error before
  anything runs. A file named twice is sent once; rows follow the order of the arguments.
* The content type comes from the suffix, then from the bytes (a file with another suffix), and
  is ``image/jpeg`` otherwise (so the service, not lvkit, refuses what it cannot decode).
* Masks and heat maps mirror the images' folders under the output folder, relative to the
  images' deepest common folder: ``test/good/000.png`` -> ``DIR/good/000.png`` (mask) and
  ``DIR/good/000.npy`` (heat map). Two images whose names differ only in suffix keep it
  (``a.jpg.png``).
* Heat maps are the backend's raw anomaly map at the image's resolution, float32 ``.npy``,
  unbounded (higher is more anomalous): an lvkit extension that is not in the API's answer.
  They need the model in this process and a backend with raw maps (the anomalib backend);
  the verdict and mask of that row come from the same model call. Anomalib models without maps
  (DFKDE, GANomaly) stop the run at their first image.
* ``--start`` hosts a TRAINED (or HOSTING_FAILED) version with one inference unit and stops it
  when the run ends, failed or not; a version that is already HOSTED is used and left HOSTED.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from lvkit.errors import (
    AccessDeniedException,
    ConflictException,
    InternalServerException,
    LookoutVisionError,
    ResourceNotFoundException,
    redact_paths,
)
from lvkit.shapes import SUFFIX_TYPES, DetectAnomalyResult, ModelStatus

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "COLUMNS",
    "DetectRow",
    "ResultsWriter",
    "content_type_for",
    "detect_files",
    "detect_one",
    "expand_images",
    "hosted_version",
    "is_unsigned",
    "open_results",
    "output_names",
    "raw_backend",
]

#: image suffixes found in folders and globs, and the content type each is sent as

#: errors that concern the whole run, not one image: the run stops at the first
RUN_ERRORS: tuple[type[LookoutVisionError], ...] = (AccessDeniedException, ResourceNotFoundException,
                                                    ConflictException)

logger = logging.getLogger("lvkit.batch")

_OPERATIONS = {"describe_model": "DescribeModel", "start_model": "StartModel", "stop_model": "StopModel",
               "detect_anomalies": "DetectAnomalies"}


@dataclass(frozen=True, slots=True)
class DetectRow:
    """One image's line of results: the verdict, or the error that image got.

    Parameters
    ----------
    path : str
        The image as found (relative when the argument was).
    is_anomalous, confidence : bool, float or None
        DetectAnomalies' verdict and the confidence in it; None when the image failed.
    anomalies : dict of str to float, or None
        Segmentation models: each anomaly label found -> its TotalPercentageArea (a fraction;
        ``background`` left out); None for classification models and failed images.
    mask, heatmap : str or None
        Files written for this image (``masks_dir``, ``heatmaps_dir``).
    error_code, error_message : str or None
        The API error code (or the Python exception's name for a file that could not be read).
    """

    path: str
    is_anomalous: bool | None = None
    confidence: float | None = None
    anomalies: dict[str, float] | None = None
    mask: str | None = None
    heatmap: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def failed(self) -> bool:
        return self.error_code is not None

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict, keys in :data:`COLUMNS` order."""
        return asdict(self)


#: the columns of a results file, in order
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(DetectRow))


# -- inputs ------------------------------------------------------------------------------------
def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in SUFFIX_TYPES and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def expand_images(args: Iterable[str]) -> list[Path]:
    """The image files named by ``args``: files, folders (recursive) and glob patterns, in order.

    Raises
    ------
    ValueError
        An argument names nothing, or a folder or pattern holds no images.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("b.png", "a.JPG", "sub/c.jpeg", ".hidden.png", "notes.txt"):
    ...     (d / name).parent.mkdir(exist_ok=True); _ = (d / name).write_bytes(b"")
    >>> [p.relative_to(d).as_posix() for p in expand_images([str(d), str(d / "*.png")])]
    ['a.JPG', 'b.png', 'sub/c.jpeg']
    """
    out: dict[Path, Path] = {}
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = _images_under(path)
        elif path.is_file():
            found = [path]
        elif glob.has_magic(arg):
            found = []
            for match in sorted(glob.glob(arg, recursive=True)):
                m = Path(match)
                found += _images_under(m) if m.is_dir() else [m] if m.suffix.lower() in SUFFIX_TYPES else []
        else:
            raise ValueError(f"{arg!r}: no such file or folder")
        if not found:
            what = "folder" if path.is_dir() else "pattern"
            raise ValueError(f"{arg!r}: the {what} holds no {', '.join(SUFFIX_TYPES)} images")
        for p in found:
            out.setdefault(p.resolve(), p)
    return list(out.values())


def content_type_for(path: Path, body: bytes) -> str:
    """``image/png`` or ``image/jpeg``: from the suffix, else from the bytes, else JPEG.

    >>> content_type_for(Path("x.PNG"), b""), content_type_for(Path("x.bin"), b"\\x89PNG\\r\\n\\x1a\\n")
    ('image/png', 'image/png')
    """
    from lvkit.images import sniff_content_type

    return SUFFIX_TYPES.get(path.suffix.lower()) or sniff_content_type(body) or "image/jpeg"


def output_names(paths: Sequence[Path], suffix: str) -> list[Path]:
    """Relative output file names for ``paths``: their folders under the deepest common one.

    >>> [p.as_posix() for p in output_names([Path("t/good/0.png"), Path("t/bad/0.png"), Path("t/bad/0.jpg")], ".png")]
    ['good/0.png', 'bad/0.png.png', 'bad/0.jpg.png']
    """
    if not paths:
        return []
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([p.parent for p in resolved]))
    names = [p.relative_to(root).with_suffix(suffix) for p in resolved]
    seen: dict[Path, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [n if seen[n] == 1 else r.relative_to(root).with_name(r.name + suffix)
            for n, r in zip(names, resolved)]


# -- the hosted version ----------------------------------------------------------------------
def _call(lv: Any, method: str, **kwargs: Any) -> dict[str, Any]:
    """``lv.<method>(**kwargs)`` with botocore's errors translated to lvkit's (boto3 clients)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return dict(getattr(lv, method)(**kwargs))
    except LookoutVisionError:
        raise
    except (ClientError, BotoCoreError) as exc:
        from lvkit.backends.service import translate_client_error

        raise translate_client_error(exc, _OPERATIONS[method]) from exc


def is_unsigned(lv: Any) -> bool:
    """Whether a boto3 client sends unsigned requests (``lvkit.boto3_client`` found no credentials)."""
    from botocore import UNSIGNED

    config = getattr(getattr(lv, "meta", None), "config", None)
    return getattr(config, "signature_version", None) is UNSIGNED


def _describe(lv: Any, project: str, version: str) -> dict[str, Any]:
    return dict(_call(lv, "describe_model", ProjectName=project, ModelVersion=version)["ModelDescription"])


def _wait_hosted(lv: Any, project: str, version: str, *, timeout: float, poll: float,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    deadline = clock() + timeout
    while True:
        d = _describe(lv, project, version)
        if d["Status"] != ModelStatus.STARTING_HOSTING or clock() > deadline:
            return d
        time.sleep(poll)


@contextlib.contextmanager
def hosted_version(lv: Any, project: str, version: str = "latest", *, start: bool = False,
                   timeout: float = 600.0, poll: float = 0.2) -> Iterator[str]:
    """Check that a version is HOSTED (or host it for the duration); yields its number.

    Parameters
    ----------
    lv
        A boto3-shaped ``lookoutvision`` client: ``lvkit.client()`` or a boto3 client.
    project, version : str
        ``version`` may be ``"latest"``; the number it names is yielded and used throughout.
    start : bool, default False
        Host a TRAINED or HOSTING_FAILED version (one inference unit) and stop it on exit,
        whatever happened meanwhile; wait for a STARTING_HOSTING one. Without it, any status
        but HOSTED raises.
    timeout, poll : float
        Seconds to wait for HOSTED, and between DescribeModel calls while waiting.

    Raises
    ------
    ConflictException
        The version is not HOSTED (and ``start`` is False, or hosting failed).
    ResourceNotFoundException, AccessDeniedException, ValidationException
        From DescribeModel.
    """
    d = _describe(lv, project, version)
    number, started = str(d["ModelVersion"]), False
    if d["Status"] != ModelStatus.HOSTED:
        startable = (ModelStatus.TRAINED, ModelStatus.HOSTING_FAILED, ModelStatus.STARTING_HOSTING)
        if not start or d["Status"] not in startable:
            raise ConflictException(f"model {project}/{number} is not hosted (status {d['Status']})",
                                    resource_id=d.get("ModelArn"), resource_type="MODEL")
        if d["Status"] != ModelStatus.STARTING_HOSTING:
            _call(lv, "start_model", ProjectName=project, ModelVersion=number, MinInferenceUnits=1)
            started = True
        d = _wait_hosted(lv, project, number, timeout=timeout, poll=poll)
        if d["Status"] != ModelStatus.HOSTED:
            raise ConflictException(f"model {project}/{number} could not be hosted: status {d['Status']} "
                                    f"({d.get('StatusMessage', '')})", resource_id=d.get("ModelArn"),
                                    resource_type="MODEL")
    try:
        yield number
    except BaseException:
        if started:
            try:
                _call(lv, "stop_model", ProjectName=project, ModelVersion=number)
            except LookoutVisionError as stop_error:  # the run's own error is the one to raise
                logger.warning("stopping %s/%s after a failed run failed too: %s: %s", project, number,
                               stop_error.code, stop_error.message)
        raise
    else:
        if started:
            _call(lv, "stop_model", ProjectName=project, ModelVersion=number)


def raw_backend(lv: Any, project: str, version: str) -> Any:
    """The loaded backend of an in-process client, if it gives raw anomaly maps (``raw``).

    Raises
    ------
    ValueError
        ``lv`` is not in process (a boto3 client: the wire answer has no map), or the version's
        backend has no raw maps (only the anomalib backend has them).
    """
    service = getattr(lv, "service", None)
    if service is None or not hasattr(service, "loaded_backend"):
        raise ValueError("heat maps are not available over an endpoint: the API's answer carries no anomaly "
                         "map; run in process (lvkit.client()) on the machine that has the model")
    from lvkit.eval.run import exposes_raw

    backend = service.loaded_backend(project, version)
    if not exposes_raw(backend):
        raise ValueError(f"heat maps are not available for {project}/{version}: its backend "
                         f"({type(backend).__name__}) has no raw anomaly maps; only the anomalib backend has them")
    return backend


# -- running ---------------------------------------------------------------------------------
def _error_row(path: str, exc: BaseException) -> DetectRow:
    if isinstance(exc, LookoutVisionError):
        return DetectRow(path, error_code=exc.code, error_message=exc.message)
    return DetectRow(path, error_code=type(exc).__name__, error_message=str(exc))


def _is_run_error(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as Unreachable

    return isinstance(exc, RUN_ERRORS) or isinstance(exc.__cause__, Unreachable)


def _detect_raw(backend: Any, body: bytes, content_type: str) -> tuple[DetectAnomalyResult, npt.NDArray[np.float32]]:
    """One model call that keeps the raw map (the anomalib backend's ``detect``, in its steps)."""
    import numpy as np

    from lvkit.eval.run import detect_raw

    try:
        result, _, raw_map = detect_raw(backend, body, content_type)
    except LookoutVisionError:
        raise
    except Exception as exc:  # the model failed on this image, as the service reports it
        message = f"the model failed on this image: {type(exc).__name__}: {exc}"
        raise InternalServerException(redact_paths(message)) from exc
    amap = np.asarray(raw_map, dtype=np.float32)
    if np.isnan(amap).all():
        raise ValueError(f"heat maps are not available: the model ({type(backend).__name__}) produces no anomaly "
                         "map (a classification-only anomalib model)")
    return result, amap


def detect_one(lv: Any, project: str, version: str, path: Path, *,
               content_type: str | None = None) -> DetectAnomalyResult:
    """DetectAnomalies on one file through ``lv``; any error is raised (as lvkit's class)."""
    body = path.read_bytes()
    r = _call(lv, "detect_anomalies", ProjectName=project, ModelVersion=version,
              ContentType=content_type or content_type_for(path, body), Body=body)
    return DetectAnomalyResult.from_wire(r["DetectAnomalyResult"])


def detect_files(lv: Any, project: str, version: str, paths: Sequence[Path], *, content_type: str | None = None,
                 masks_dir: Path | None = None, heatmaps_dir: Path | None = None, workers: int = 1,
                 raw: Any = None) -> Iterator[DetectRow]:
    """DetectAnomalies on each file through ``lv``; one :class:`DetectRow` per path, in order.

    Parameters
    ----------
    lv
        A boto3-shaped client (``lvkit.client()`` or a boto3 client of an lvkit server); the
        version must be HOSTED (:func:`hosted_version`).
    project, version : str
        A version number, not ``latest`` (so a version trained meanwhile changes nothing).
    paths : sequence of Path
        From :func:`expand_images`.
    content_type : str, optional
        Sent for every image; default :func:`content_type_for` each.
    masks_dir, heatmaps_dir : Path, optional
        Where AnomalyMask PNGs and raw ``.npy`` maps go (:func:`output_names`).
    workers : int, default 1
        Concurrent requests: more than 1 only for a remote endpoint (a thread pool).
    raw : backend, optional
        From :func:`raw_backend`: images go straight to it (needed for ``heatmaps_dir``).

    Raises
    ------
    LookoutVisionError
        An error that concerns the run (:data:`RUN_ERRORS`, an unreachable endpoint); errors of
        one image are rows instead.
    ValueError
        ``heatmaps_dir`` without ``raw``, or a model with no maps.
    """
    if heatmaps_dir is not None and raw is None:
        raise ValueError("heat maps need raw=raw_backend(lv, project, version)")
    masks = output_names(paths, ".png") if masks_dir is not None else [None] * len(paths)
    heats = output_names(paths, ".npy") if heatmaps_dir is not None else [None] * len(paths)

    def one(item: tuple[Path, Path | None, Path | None]) -> DetectRow:
        path, mask_name, heat_name = item
        amap = None
        try:
            if raw is not None:
                body = path.read_bytes()
                result, amap = _detect_raw(raw, body, content_type or content_type_for(path, body))
            else:
                result = detect_one(lv, project, version, path, content_type=content_type)
        except (LookoutVisionError, OSError) as exc:
            if _is_run_error(exc):
                raise
            return _error_row(str(path), exc)
        mask = heat = None
        if masks_dir is not None and mask_name is not None and result.anomaly_mask is not None:
            mask = _write(masks_dir / mask_name, result.anomaly_mask)
        if heatmaps_dir is not None and heat_name is not None and amap is not None:
            heat = _write(heatmaps_dir / heat_name, amap)
        anomalies = None if result.anomalies is None else {
            a.name: a.total_percentage_area for a in result.anomalies[1:]}
        return DetectRow(str(path), result.is_anomalous, result.confidence, anomalies, mask, heat)

    yield from _ordered(one, zip(paths, masks, heats), workers=workers)


def _write(target: Path, data: bytes | npt.NDArray[np.float32]) -> str:
    import numpy as np

    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        target.write_bytes(data)
    else:
        np.save(target, data)
    return str(target)


def _ordered(fn: Callable[[Any], DetectRow], items: Iterable[Any], *, workers: int) -> Iterator[DetectRow]:
    """``map(fn, items)`` with up to ``workers`` calls at once, in order, at most 2 x workers ahead."""
    if workers <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lvkit-detect")
    window: deque[Future[DetectRow]] = deque()
    try:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- results files ---------------------------------------------------------------------------
class ResultsWriter:
    """Writes :class:`DetectRow` s as CSV (``anomalies`` as a JSON object text) or JSON lines.

    Rows are flushed as they come, so an interrupted run keeps what it did.
    """

    def __init__(self, stream: IO[str], fmt: Literal["csv", "jsonl"]) -> None:
        self.stream, self.fmt, self.rows = stream, fmt, 0
        self._csv = csv.DictWriter(stream, fieldnames=COLUMNS) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writeheader()

    def write(self, row: DetectRow) -> None:
        record = row.to_record()
        if self._csv is not None:
            if record["anomalies"] is not None:
                record["anomalies"] = json.dumps(record["anomalies"])
            self._csv.writerow(record)
        else:
            self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()
        self.rows += 1


@contextlib.contextmanager
def open_results(path: str | os.PathLike[str]) -> Iterator[ResultsWriter]:
    """A :class:`ResultsWriter` on a new ``.csv`` or ``.jsonl`` file (by its suffix)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"expected a results file ending .csv or .jsonl, got {os.fspath(path)!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="" if suffix == ".csv" else None, encoding="utf-8") as f:
        yield ResultsWriter(f, "csv" if suffix == ".csv" else "jsonl")
