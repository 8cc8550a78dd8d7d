"""From raw anomaly scores to the API's verdict, confidence and mask: the choices lvkit makes.

anomalib's own post-processing labels anomalous only scores strictly above an F1-adaptive
threshold equal to one validation anomaly's score, so that anomaly is always missed. lvkit
owns the decision instead, fitted on validation images at training time and stored with the
model version:

* **Image threshold** ``t``: the one maximising F1 on the validation scores, placed midway
  between the lowest score called anomalous and the next lower score (so ``>`` and ``>=`` agree).
  Validation without anomalies: the highest normal score plus 10% of the normal scores' range.
* **Verdict**: ``IsAnomalous = score > t``.
* **Confidence** (top-label, in the verdict): ``p = sigmoid(a * (score - t))`` is a Platt-style
  probability of an anomaly with its 0.5 point at ``t``; the slope ``a > 0`` is fitted by
  logistic regression (no intercept) on the validation set, or set to ``4 / spread`` of the
  scores when validation holds one class only. ``Confidence = p if IsAnomalous else 1 - p``,
  so it lies in [0.5, 1). A recalibrator attached to the model version replaces ``p``.
* **Pixel threshold**: the anomaly map is binarised at the threshold maximising pooled IoU
  with the true masks of the validation images (normal images count with their false positives).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["Decision", "fit_decision", "fit_pixel_threshold"]


@dataclass(frozen=True)
class Decision:
    image_threshold: float
    slope: float
    pixel_threshold: float | None = None

    def probability(self, score: float) -> float:
        """Uncalibrated P(anomaly) of a raw score."""
        z = self.slope * (score - self.image_threshold)
        return 1.0 / (1.0 + math.exp(-max(min(z, 500.0), -500.0)))

    def verdict(self, score: float) -> tuple[bool, float]:
        """(IsAnomalous, Confidence) of a raw score."""
        is_anomalous = score > self.image_threshold
        p = self.probability(score)
        return is_anomalous, (p if is_anomalous else 1.0 - p)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        return cls(**d)


def _best_f1_threshold(labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> float:
    from lvkit.eval.ranking import best_f1_threshold

    return float(best_f1_threshold(labels, scores)[0])


def fit_decision(scores: npt.ArrayLike, labels: npt.ArrayLike) -> Decision:
    """Fit the image threshold and the confidence slope on validation scores (no pixel threshold)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.int64)
    normals = s[y == 0]
    if np.any(y == 1) and np.any(y == 0):
        t = _best_f1_threshold(y, s)
    elif normals.size:
        t = float(normals.max() + 0.1 * (np.ptp(normals) or abs(normals.max()) or 1.0))
    else:
        raise ValueError("validation needs at least one normal image")
    spread = float(np.ptp(s)) or 1.0
    slope = 4.0 / spread
    if np.any(y == 1) and np.any(y == 0):
        from sklearn.linear_model import LogisticRegression

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # separable validation sets: the slope is capped by C
            lr = LogisticRegression(fit_intercept=False, C=10.0).fit((s - t)[:, None] / spread, y)
        fitted = float(lr.coef_[0, 0]) / spread
        if fitted > 0:
            slope = fitted
    return Decision(image_threshold=t, slope=slope)


def fit_pixel_threshold(maps: npt.NDArray[np.floating], masks: npt.NDArray[np.bool_]) -> float:
    """The binarisation threshold maximising pooled IoU of ``maps > t`` with ``masks``.

    Exact over all candidate thresholds: pixels are sorted once by map value and the
    intersection/union counts of every cut are cumulative sums.
    """
    v = np.asarray(maps, np.float64).ravel()
    m = np.asarray(masks, bool).ravel()
    if not m.any():
        return float(v.max())
    order = np.argsort(-v, kind="stable")
    v, m = v[order], m[order]
    tp = np.cumsum(m)               # predicted positive = the top k pixels
    k = np.arange(1, v.size + 1)
    iou = tp / (m.sum() + k - tp)
    # only cut between distinct values
    valid = np.r_[v[1:] < v[:-1], True]
    best = int(np.argmax(np.where(valid, iou, -1.0)))
    lower = v[best + 1] if best + 1 < v.size else v[best] - 1.0
    return float((v[best] + lower) / 2.0)
