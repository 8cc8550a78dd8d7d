"""``run``: DetectAnomalies over a dataset into a table, whatever answers it.

The target is anything that answers DetectAnomalies: ``lvkit.client()``, a boto3
``lookoutvision`` client (against ``lvkit serve`` or the real service), or a backend object
(``detect(body, content_type)``). An error is a row (its ``error`` column), not a crash.
pandas is imported inside the functions.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvkit.eval.scores import anomaly_score
from lvkit.shapes import DetectAnomalyResult

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["detect_one", "run"]

_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def detect_one(target: Any, body: bytes, content_type: str, *, project: str | None = None,
               version: str = "latest") -> DetectAnomalyResult:
    """One DetectAnomalies call on a client (boto3-shaped) or a backend.

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
        r = target.detect_anomalies(ProjectName=project, ModelVersion=version, ContentType=content_type, Body=body)
        return DetectAnomalyResult.from_wire(r["DetectAnomalyResult"])
    return target.detect(body, content_type)  # type: ignore[no-any-return]  # Backend protocol


def run(
    target: Any,
    samples: Iterable[Any],
    *,
    project: str | None = None,
    version: str = "latest",
    keep_masks: bool = True,
    progress: bool = True,
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
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        Columns ``path, split, label, defect_type, is_anomalous, confidence, anomaly_score,
        anomalous_area, areas, anomalies, anomaly_mask, latency_s, error``. ``areas`` maps
        each anomaly label to its TotalPercentageArea; ``anomalous_area`` is 1 minus the
        background's (NaN for a classification model).

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
    from tqdm.auto import tqdm

    items = list(getattr(samples, "samples", samples))
    rows = []
    for s in tqdm(items, desc="detect", unit="img", disable=not progress):
        path = Path(s.image_path)
        row: dict[str, Any] = {"path": str(path), "split": s.split, "label": int(s.label),
                               "defect_type": s.defect_type}
        content_type = _TYPES.get(path.suffix.lower(), "image/png")
        body = path.read_bytes()
        t0 = time.perf_counter()
        try:
            r = detect_one(target, body, content_type, project=project, version=version)
        except Exception as exc:  # recorded in the row: an error is data here
            row.update(latency_s=time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            continue
        row["latency_s"] = time.perf_counter() - t0
        row.update(_result_columns(r, keep_masks=keep_masks))
        rows.append(row)
    columns = ["path", "split", "label", "defect_type", "is_anomalous", "confidence", "anomaly_score",
               "anomalous_area", "areas", "anomalies", "anomaly_mask", "latency_s", "error"]
    return pd.DataFrame(rows).reindex(columns=columns)


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
