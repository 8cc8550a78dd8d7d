"""``run``: DetectAnomalies over a dataset into a table, whatever answers it.

The target is anything that answers DetectAnomalies: ``lvkit.client()``, a boto3
``lookoutvision`` client (against ``lvkit serve`` or the real service), or a backend object
(``detect(body, content_type)``). An error is a row (its ``error`` column), not a crash, but
never a silent one: a warning counts the failed images, and a run where every image failed
raises its first error (metrics over no answers would be NaN for no visible reason).

Raw anomaly maps (``raw=True``) come from a backend that exposes them: an object with
``raw(batch) -> (scores, maps)``, ``check_size(rgb)`` and ``result(rgb, score, map)`` (the
anomalib backend), either the target itself or, for ``lvkit.client()``, the backend its
service has loaded for the model version. pandas, tqdm and ``lvkit.images`` (to decode bodies
for ``raw``) are imported inside the functions.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lvkit.errors import FailedImagesWarning
from lvkit.eval.scores import anomaly_score
from lvkit.shapes import SUFFIX_TYPES, DetectAnomalyResult

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["detect_one", "heldout", "run"]



def detect_one(target: Any, body: bytes, content_type: str, *, project: str | None = None,
               version: str = "latest") -> DetectAnomalyResult:
    """One DetectAnomalies call on a client (boto3-shaped) or a backend.

    Parameters
    ----------
    target : client or backend
        An object with ``detect_anomalies(**kw)`` (boto3-shaped; called with ``ProjectName``,
        ``ModelVersion``, ``ContentType``, ``Body``) or ``detect(body, content_type)``.
    body : bytes
        The image.
    content_type : {"image/png", "image/jpeg"}
        Its type.
    project : str, optional
        The project (required for a client).
    version : str, default "latest"
        The model version (for a client).

    Returns
    -------
    DetectAnomalyResult

    Raises
    ------
    ValueError
        If the target is a client and ``project`` is not given.

    Examples
    --------
    >>> import numpy as np
    >>> from lvkit.backends.fake import FakeBackend, brightness_handler
    >>> from lvkit.images import encode_png
    >>> body = encode_png(np.full((64, 64, 3), 200, np.uint8))
    >>> detect_one(FakeBackend(brightness_handler(threshold=100.0)), body, "image/png").is_anomalous
    True
    """
    if hasattr(target, "detect_anomalies"):
        if project is None:
            raise ValueError("project: expected a project name for a client target, got None")
        r = target.detect_anomalies(ProjectName=project, ModelVersion=version, ContentType=content_type, Body=body)
        return DetectAnomalyResult.from_wire(r["DetectAnomalyResult"])
    return target.detect(body, content_type)  # type: ignore[no-any-return]  # Backend protocol


def heldout(client: Any, samples: Iterable[Any], *, project: str, version: str = "latest") -> list[Any]:
    """The samples a model version held out: neither fitted on nor used to choose its thresholds.

    Score a version on these, not on its whole test split: the validation images that chose
    its threshold and Confidence make any metric on them optimistic.

    Parameters
    ----------
    client : lvkit.client()
        An in-process client (the version's splits are recorded in its store).
    samples : Dataset or iterable of Sample
        The dataset the version was trained on.
    project, version : str
        The model version.

    Returns
    -------
    list of Sample
        The samples of ``samples`` in the version's ``evaluation`` split, in dataset order.

    Raises
    ------
    ValueError
        If ``client`` is not an in-process client, or none of ``samples`` is in the split.

    Examples
    --------
    >>> import lvkit
    >>> lv = lvkit.client()                                              # doctest: +SKIP
    >>> ds = lvkit.datasets.load("lvkit-demo/data/brick")                # doctest: +SKIP
    >>> test = heldout(lv, ds, project="demo-brick")                     # doctest: +SKIP
    >>> df = run(lv, test, project="demo-brick")  # scores what did not choose the thresholds  # doctest: +SKIP
    """
    service = getattr(client, "service", None)
    if service is None or not hasattr(service, "version_splits"):
        raise ValueError(
            f"client: expected lvkit.client() (it reads the version's splits), got {type(client).__name__}"
        )
    held = set(service.version_splits(project, version)["evaluation"])
    out = [s for s in getattr(samples, "samples", samples) if str(s.image_path) in held]
    if not out:
        raise ValueError(f"none of the samples is in {project}/{version}'s held-out split: is it the dataset "
                         "the version was trained on?")
    return out


def run(
    target: Any,
    samples: Iterable[Any],
    *,
    project: str | None = None,
    version: str = "latest",
    keep_masks: bool = True,
    raw: bool = False,
    progress: bool = True,
    on_error: Literal["warn", "raise", "ignore"] = "warn",
) -> pd.DataFrame:
    """Run DetectAnomalies on every sample; one row per image.

    Parameters
    ----------
    target : client or backend
        ``lvkit.client()``, a boto3 ``lookoutvision`` client, or an object with
        ``detect(body, content_type)``.
    samples : Dataset or iterable of Sample
        A :class:`lvkit.datasets.Dataset` (all its samples) or records with ``image_path``,
        ``label``, ``defect_type`` and ``split``.
    project, version : str
        Where a client sends the call (ignored for a backend).
    keep_masks : bool, default True
        Keep each AnomalyMask PNG in the ``anomaly_mask`` column for the mask metrics.
    raw : bool, default False
        Also keep the raw score and anomaly map of every image (columns ``raw_score`` and
        ``anomaly_map``, float32 (H, W)) for the pixel metrics of
        :func:`~lvkit.eval.mask_report`. A backend target runs decode, model and post-process
        itself (one model call; the latency covers them all); for ``lvkit.client()`` the call
        goes through the API as usual (timed) and the maps come from a second, untimed model
        call on the backend its service loaded.
    progress : bool, default True
        Show a progress bar.
    on_error : {"warn", "raise", "ignore"}, default "warn"
        What an image that gets an error does. ``"warn"``: it is a row with its ``error``, a
        :class:`~lvkit.errors.FailedImagesWarning` says how many failed and why (the first
        error), and when every image failed the first error is raised (a model that is not
        hosted, say). ``"raise"``: the first error is raised. ``"ignore"``: rows only.
        The count is in ``df.attrs["errors"]`` either way.

    Returns
    -------
    pandas.DataFrame
        Columns ``path, split, label, defect_type, is_anomalous, confidence, anomaly_score,
        anomalous_area, areas, anomalies, anomaly_mask, latency_s, error``. ``areas`` maps
        each anomaly label to its TotalPercentageArea; ``anomalous_area`` is 1 minus the
        background's (NaN for a classification model). With ``raw``, also ``raw_score`` and
        ``anomaly_map``.

    Raises
    ------
    ValueError
        If ``raw`` is set and the target exposes no raw maps, or a client target has no
        ``project``.

    Examples
    --------
    >>> import tempfile, lvkit
    >>> from lvkit.backends.fake import FakeBackend, brightness_handler
    >>> root = lvkit.datasets.generate(tempfile.mkdtemp(), categories=("brick",), n_train=2,
    ...                                n_test_good=2, n_test_defect_per_type=1, image_size=64)
    >>> test = lvkit.datasets.load(root / "brick").split("test")
    >>> df = run(FakeBackend(brightness_handler(threshold=100.0)), test, progress=False)
    >>> len(df), bool(df["error"].isna().all()), sorted(df["defect_type"].fillna("normal").unique())
    (5, True, ['hole', 'normal', 'scratch', 'stain'])
    """
    import pandas as pd
    from tqdm import tqdm

    if hasattr(target, "detect_anomalies") and project is None:
        raise ValueError("project: expected a project name for a client target, got None")
    source = _raw_source(target, project, version) if raw else None
    if on_error not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_error: expected 'warn', 'raise' or 'ignore', got {on_error!r}")
    items = list(getattr(samples, "samples", samples))
    rows = []
    first_error: Exception | None = None
    for s in tqdm(items, desc="detect", unit="img", disable=not progress):
        path = Path(s.image_path)
        row: dict[str, Any] = {"path": str(path), "split": s.split, "label": int(s.label),
                               "defect_type": s.defect_type}
        content_type = SUFFIX_TYPES.get(path.suffix.lower(), "image/png")
        body = path.read_bytes()
        t0 = time.perf_counter()
        try:
            if source is not None and source is target:  # one model call that keeps the map
                r, score, amap = detect_raw(source, body, content_type)
            else:
                r = detect_one(target, body, content_type, project=project, version=version)
            row["latency_s"] = time.perf_counter() - t0
            if source is not None and source is not target:  # untimed second call for the map
                score, amap = _raw_only(source, body, content_type)
        except Exception as exc:  # recorded in the row: an error is data here
            if on_error == "raise":
                raise
            row.setdefault("latency_s", time.perf_counter() - t0)
            row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            first_error = first_error or exc
            continue
        row.update(_result_columns(r, keep_masks=keep_masks))
        if source is not None:
            row.update(raw_score=score, anomaly_map=amap)
        rows.append(row)
    columns = ["path", "split", "label", "defect_type", "is_anomalous", "confidence", "anomaly_score",
               "anomalous_area", "areas", "anomalies", "anomaly_mask", "latency_s", "error"]
    if raw:
        columns[-2:-2] = ["raw_score", "anomaly_map"]
    df = pd.DataFrame(rows).reindex(columns=columns)
    failed = int(df["error"].notna().sum())
    df.attrs["errors"] = failed
    if failed and first_error is not None and on_error == "warn":
        if failed == len(df):
            if hasattr(first_error, "add_note"):  # Python 3.11+
                first_error.add_note(f"lvkit.eval.run: all {failed} images failed; this is the first error "
                                     "(on_error='ignore' returns the rows instead)")
            raise first_error
        warnings.warn(f"{failed} of {len(df)} images failed and are left out of the metrics; the first: "
                      f"{type(first_error).__name__}: {first_error}", FailedImagesWarning, stacklevel=2)
    return df


def exposes_raw(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`lvkit.backends.RawBackend` (answers in three steps, keeping
    the raw score and map)."""
    from lvkit.backends import RawBackend

    return isinstance(obj, RawBackend)


def _raw_source(target: Any, project: str | None, version: str) -> Any:
    """The backend that gives raw maps: the target itself, or the one ``lvkit.client()`` has loaded."""
    if exposes_raw(target):
        return target
    service = getattr(target, "service", None)
    if service is not None and hasattr(service, "loaded_backend"):
        backend = service.loaded_backend(project, version)
        if exposes_raw(backend):
            return backend
        target = backend
    raise ValueError(
        "raw=True: expected a target exposing raw anomaly maps (raw, check_size, result: the anomalib "
        f"backend, or lvkit.client() hosting one), got {type(target).__name__}"
    )


def _decode(backend: Any, body: bytes, content_type: str) -> Any:
    from lvkit.images import DEFAULT_MAX_BYTES, decode_image

    rgb = decode_image(body, content_type, max_bytes=getattr(backend, "max_bytes", DEFAULT_MAX_BYTES))
    backend.check_size(rgb)
    return rgb


def _raw_only(backend: Any, body: bytes, content_type: str) -> tuple[float, Any]:
    scores, maps = backend.raw(_decode(backend, body, content_type)[None])
    return float(scores[0]), maps[0]


def detect_raw(backend: Any, body: bytes, content_type: str) -> tuple[DetectAnomalyResult, float, Any]:
    """``backend.detect`` in its three steps, keeping the raw score and map."""
    rgb = _decode(backend, body, content_type)
    scores, maps = backend.raw(rgb[None])
    return backend.result(rgb, float(scores[0]), maps[0]), float(scores[0]), maps[0]


def _result_columns(r: DetectAnomalyResult, *, keep_masks: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "is_anomalous": r.is_anomalous,
        "confidence": r.confidence,
        "anomaly_score": anomaly_score(r.is_anomalous, r.confidence),
        "error": None,
    }
    if r.anomalies is not None:
        areas = {a.name: a.total_percentage_area for a in r.anomalies[1:]}
        out["areas"] = areas
        out["anomalous_area"] = 1.0 - r.anomalies[0].total_percentage_area
        out["anomalies"] = {a.name: a.color for a in r.anomalies[1:]}
        out["anomaly_mask"] = r.anomaly_mask if keep_masks else None
    return out
