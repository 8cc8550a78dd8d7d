"""From a label map to the segmentation members of DetectAnomalyResult.

``Anomalies`` starts with ``background`` (#FFFFFF), then one entry per anomaly label present
(in label order, however many regions it covers); each TotalPercentageArea is the label's
fraction of the image's pixels and the entries sum to 1. ``AnomalyMask`` is an RGB PNG of the
input's size: background black, each label its colour.

Imports ``lvkit.images`` and ``lvkit.shapes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lvkit.images import encode_mask_png
from lvkit.shapes import BACKGROUND, BACKGROUND_COLOR, Anomaly, DetectAnomalyResult

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["build_result"]


def build_result(
    is_anomalous: bool,
    confidence: float,
    label_map: npt.NDArray[np.integer] | None,
    labels: Sequence[str],
    colors: Sequence[str],
) -> DetectAnomalyResult:
    """Assemble a DetectAnomalyResult; ``label_map`` None means a classification model.

    Parameters
    ----------
    is_anomalous, confidence
        The classification verdict and the confidence in it (computed separately from the mask).
    label_map : ndarray of shape (H, W), integer, or None
        0 background, ``k`` the anomaly ``labels[k - 1]``.
    labels, colors : sequence of str
        Anomaly names and their ``#RRGGBB`` colours.

    Examples
    --------
    >>> lm = np.zeros((64, 64), np.int64); lm[:16, :16] = 2
    >>> r = build_result(True, 0.9, lm, ["scratch", "hole"], ["#00FF00", "#0000FF"])
    >>> [(a.name, a.total_percentage_area) for a in r.anomalies]
    [('background', 0.9375), ('hole', 0.0625)]
    """
    if label_map is None:
        return DetectAnomalyResult(is_anomalous=bool(is_anomalous), confidence=float(confidence))
    total = label_map.size
    counts = np.bincount(label_map.ravel().astype(np.int64), minlength=len(labels) + 1)
    if len(counts) > len(labels) + 1:
        raise ValueError(f"label map holds label {len(counts) - 1} but only {len(labels)} labels are named")
    present = [k for k in range(1, len(labels) + 1) if counts[k] > 0]
    anomalies = [Anomaly(BACKGROUND, float(counts[0]) / total, BACKGROUND_COLOR)]
    anomalies += [Anomaly(labels[k - 1], float(counts[k]) / total, colors[k - 1].upper()) for k in present]
    return DetectAnomalyResult(
        is_anomalous=bool(is_anomalous),
        confidence=float(confidence),
        anomalies=tuple(anomalies),
        anomaly_mask=encode_mask_png(label_map, list(colors)),
    )
