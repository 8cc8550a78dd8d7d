"""``parity``: how closely two runs of the same images agree (an exported runtime against torch, say).

Both tables come from :func:`lvkit.eval.run` with ``raw=True`` over the same images (matched by
``path``); rows with an error in either run are left out. The raw score differences are relative
to the range of the first table's raw scores (raw scores are unbounded and model-specific, so an
absolute tolerance means nothing across models):

.. math::

    e_i = \\frac{|s^b_i - s^a_i|}{\\max_j s^a_j - \\min_j s^a_j}.

The masks compared are the served AnomalyMasks, reduced to "anomalous pixel" (any label): the
pooled IoU over all images, and the worst single image. Both masks empty everywhere is
agreement (IoU 1.0), unlike :func:`lvkit.eval.mean_iou`'s ``empty`` policies against ground truth.

This module imports numpy only (pandas and Pillow inside the function) and no other
``lvkit.eval`` module.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.errors import UndefinedMetricWarning

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

__all__ = ["parity"]


def _anomalous_pixels(png: Any) -> npt.NDArray[np.bool_] | None:
    """The non-background pixels of an AnomalyMask PNG (None for no mask)."""
    if png is None or (isinstance(png, float) and np.isnan(png)):
        return None
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(np.asarray(image.convert("RGB")).any(axis=-1), dtype=bool)


def _mask_ious(masks_a: list[Any], masks_b: list[Any]) -> tuple[float, float]:
    """(pooled IoU, worst image's IoU) of anomalous pixels; nan when no image has a mask."""
    inter = union = 0
    worst = 1.0
    seen = False
    for png_a, png_b in zip(masks_a, masks_b, strict=True):
        a, b = _anomalous_pixels(png_a), _anomalous_pixels(png_b)
        if a is None and b is None:
            continue
        seen = True
        a = np.zeros_like(b) if a is None else a
        b = np.zeros_like(a) if b is None else b
        if a.shape != b.shape:
            raise ValueError(f"expected masks of one size per image, got {a.shape} and {b.shape}")
        i, u = int((a & b).sum()), int((a | b).sum())
        inter, union = inter + i, union + u
        if u:
            worst = min(worst, i / u)
    if not seen:
        return float("nan"), float("nan")
    return (inter / union if union else 1.0), worst


def _max_map_error(maps_a: list[Any], maps_b: list[Any]) -> float:
    """max |Δ map| relative to the value range of the first run's maps; nan without maps."""
    pairs = [(np.asarray(a, np.float64), np.asarray(b, np.float64)) for a, b in zip(maps_a, maps_b, strict=True)
             if a is not None and b is not None]
    pairs = [(a, b) for a, b in pairs if a.shape == b.shape and np.isfinite(a).all() and np.isfinite(b).all()]
    if not pairs:
        return float("nan")
    span = max(float(a.max()) for a, _ in pairs) - min(float(a.min()) for a, _ in pairs)
    diff = max(float(np.abs(b - a).max()) for a, b in pairs)
    return diff / span if span > 0 else (0.0 if diff == 0 else float("inf"))


def parity(df_a: pd.DataFrame, df_b: pd.DataFrame, *, score_range: float | None = None) -> dict[str, float]:
    """Agreement of two ``run(..., raw=True)`` tables of the same images: scores, verdicts, confidences, masks.

    Parameters
    ----------
    df_a : pandas.DataFrame
        The reference run (e.g. the torch model), from :func:`lvkit.eval.run` with ``raw=True``.
    df_b : pandas.DataFrame
        The run compared with it (e.g. its OpenVINO or ONNX export), over the same paths.
    score_range : float, optional
        The scale of the relative score errors; default the range (max - min) of ``df_a``'s raw
        scores over the compared images.

    Returns
    -------
    dict
        ``n_images`` (compared: in both tables, no error in either), ``max_score_error`` and
        ``p99_score_error`` (relative |Δ raw score|, module docstring), ``verdict_agreement``
        (share of equal IsAnomalous), ``max_confidence_error`` (max |Δ Confidence|),
        ``max_map_error`` (max |Δ anomaly map| over the value range of ``df_a``'s maps; nan
        without maps), ``mask_iou`` (pooled IoU of the two runs' anomalous pixels) and
        ``min_mask_iou`` (the worst image's); the mask values are nan for a classification model.

    Raises
    ------
    ValueError
        A table lacks the raw columns (not run with ``raw=True``), the tables share no image, or
        ``score_range`` is not positive.

    Warns
    -----
    UndefinedMetricWarning
        The reference scores have no range (one image, or all equal): the score errors are nan.

    Examples
    --------
    Three images: the second changes its verdict, 4 and 2 anomalous pixels overlap in 2 on it,
    and the third has the same 3 pixels in both runs.

    >>> import pandas as pd, numpy as np
    >>> from lvkit.images import encode_png
    >>> def mask(cols):
    ...     rgb = np.zeros((4, 4, 3), np.uint8); rgb[0, cols] = 255; return encode_png(rgb)
    >>> a = pd.DataFrame({"path": ["x", "y", "z"], "raw_score": [1.0, 3.0, 5.0],
    ...                   "is_anomalous": [False, True, True], "confidence": [0.875, 0.75, 0.75],
    ...                   "anomaly_mask": [mask([]), mask([0, 1, 2, 3]), mask([0, 1, 2])]})
    >>> b = a.assign(raw_score=[1.0, 2.75, 5.25], is_anomalous=[False, False, True],
    ...              confidence=[0.875, 0.5, 0.75],
    ...              anomaly_mask=[mask([]), mask([0, 1]), mask([0, 1, 2])])
    >>> r = parity(a, b)
    >>> r["n_images"], r["max_score_error"], r["verdict_agreement"], r["max_confidence_error"]
    (3, 0.0625, 0.6666666666666666, 0.25)
    >>> round(r["mask_iou"], 4), r["min_mask_iou"]  # (2 + 3) / (4 + 3), and 2 / 4
    (0.7143, 0.5)
    """

    for name, df in (("df_a", df_a), ("df_b", df_b)):
        missing = {"path", "raw_score", "is_anomalous", "confidence"} - set(df.columns)
        if missing:
            raise ValueError(f"{name}: expected a run(..., raw=True) table, got no column(s) {sorted(missing)}")
    if score_range is not None and not (np.isfinite(score_range) and score_range > 0):
        raise ValueError(f"score_range: expected a positive number, got {score_range!r}")

    def ok(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["error"].isna()] if "error" in df.columns else df

    joined = ok(df_a).merge(ok(df_b), on="path", suffixes=("_a", "_b"), validate="one_to_one")
    if joined.empty:
        raise ValueError("df_a and df_b share no image without an error (tables are matched on 'path')")
    sa = joined["raw_score_a"].to_numpy(np.float64)
    sb = joined["raw_score_b"].to_numpy(np.float64)
    span = float(score_range) if score_range is not None else float(np.ptp(sa))
    if span > 0:
        err = np.abs(sb - sa) / span
        max_err, p99_err = float(err.max()), float(np.quantile(err, 0.99))
    else:
        warnings.warn("parity: the reference raw scores have no range; pass score_range= for relative errors",
                      UndefinedMetricWarning, stacklevel=2)
        max_err = p99_err = float("nan")
    agree = float(np.mean(joined["is_anomalous_a"].to_numpy(bool) == joined["is_anomalous_b"].to_numpy(bool)))
    conf = np.abs(joined["confidence_a"].to_numpy(np.float64) - joined["confidence_b"].to_numpy(np.float64))
    has_masks = "anomaly_mask_a" in joined.columns and "anomaly_mask_b" in joined.columns
    mask_iou, min_iou = (_mask_ious(list(joined["anomaly_mask_a"]), list(joined["anomaly_mask_b"])) if has_masks
                         else (float("nan"), float("nan")))
    has_maps = "anomaly_map_a" in joined.columns and "anomaly_map_b" in joined.columns
    map_err = _max_map_error(list(joined["anomaly_map_a"]), list(joined["anomaly_map_b"])) if has_maps else float("nan")
    return {
        "n_images": int(len(joined)),
        "max_score_error": max_err,
        "p99_score_error": p99_err,
        "verdict_agreement": agree,
        "max_confidence_error": float(conf.max()),
        "max_map_error": map_err,
        "mask_iou": float(mask_iou),
        "min_mask_iou": float(min_iou),
    }
