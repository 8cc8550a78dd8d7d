"""One recalibration path for every backend: :class:`Recalibrated` wraps what the service loads.

A recalibrator (``lvkit.eval`` ``to_dict()``) maps the P(anomaly) a backend serves to a
calibrated ``p``. What a recalibrated answer means, since the public material is silent:

* **the verdict follows p**: ``IsAnomalous = p > 0.5`` (``p == 0.5`` is normal), so the model's
  operating point moves to where the recalibrator puts it;
* **Confidence is the confidence in that verdict**: ``max(p, 1 - p)``, never below 0.5, as the
  contract's top-label Confidence is;
* the mask and anomalies are the backend's: the pixel threshold does not move;
* **Performance** (DescribeModel) becomes the one at the new operating point, computed on the
  evaluation images the version was trained with when training recorded their P(anomaly)
  (:func:`operating_point`); otherwise it stays the trained one.

P(anomaly) as served is ``Confidence`` for an anomalous answer and ``1 - Confidence`` for a
normal one (``lvkit.eval.anomaly_score``), which is what the recalibrators are fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.backends import Backend

if TYPE_CHECKING:
    import numpy.typing as npt

    from lvkit.shapes import ContentType, DetectAnomalyResult

__all__ = ["Recalibrated", "operating_point", "performance_at", "recalibrate"]


def _calibrator(calibration: dict[str, Any]) -> Any:
    from lvkit.eval.calibration import calibrator_from_dict

    return calibrator_from_dict(calibration)


def recalibrate(result: DetectAnomalyResult, calibrator: Any) -> DetectAnomalyResult:
    """``result`` with its verdict and Confidence from the recalibrated P(anomaly).

    Examples
    --------
    >>> from lvkit.shapes import DetectAnomalyResult
    >>> class Halve:  # a recalibrator that halves P(anomaly)
    ...     def predict(self, p): return p / 2
    >>> r = recalibrate(DetectAnomalyResult(is_anomalous=True, confidence=0.9), Halve())
    >>> r.is_anomalous, round(r.confidence, 3)
    (False, 0.55)
    """
    served = result.confidence if result.is_anomalous else 1.0 - result.confidence
    p = float(np.clip(calibrator.predict(np.array([served], dtype=np.float64))[0], 0.0, 1.0))
    anomalous = p > 0.5
    return replace(result, is_anomalous=anomalous, confidence=p if anomalous else 1.0 - p)


def performance_at(labels: npt.ArrayLike, anomalous: npt.ArrayLike) -> dict[str, float]:
    """Precision, recall and F1 (the service's Performance) of verdicts against 0/1 labels; 0.0
    where a ratio is 0/0; empty when there is no anomalous label (nothing to measure).

    Examples
    --------
    >>> performance_at([0, 1, 1, 0], [False, True, False, True])
    {'f1_score': 0.5, 'precision': 0.5, 'recall': 0.5}
    """
    from lvkit.eval.ranking import precision_recall_f1

    y = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(anomalous, dtype=bool)
    if y.size == 0 or not np.any(y == 1):
        return {}
    m = precision_recall_f1(y, pred, zero_division=0.0)
    return {"f1_score": float(m["f1"]), "precision": float(m["precision"]), "recall": float(m["recall"])}


def operating_point(evaluation: dict[str, Any] | None, calibration: dict[str, Any]) -> dict[str, float] | None:
    """Performance with ``calibration`` attached, from the evaluation a version recorded at
    training (``{"labels": [...], "p_anomaly": [...]}`` in its ``lvkit.json``); None without one."""
    if not evaluation or not evaluation.get("labels"):
        return None
    p = np.clip(_calibrator(calibration).predict(np.asarray(evaluation["p_anomaly"], dtype=np.float64)), 0.0, 1.0)
    return performance_at(evaluation["labels"], p > 0.5)


class Recalibrated:
    """``backend`` answering through a recalibrator (see the module docstring).

    Batching and the raw-map protocol of ``lvkit.eval`` (``raw``, ``check_size``, ``result``)
    pass through when the wrapped backend has them; any other attribute is the wrapped one's.
    """

    def __init__(self, backend: Backend, calibration: dict[str, Any]) -> None:
        self.backend = backend
        self.calibration = calibration
        self.calibrator = _calibrator(calibration)

    def detect(self, body: bytes, content_type: ContentType) -> DetectAnomalyResult:
        return recalibrate(self.backend.detect(body, content_type), self.calibrator)

    def detect_many(self, items: Sequence[tuple[bytes, ContentType]]) -> list[DetectAnomalyResult | Exception]:
        many = getattr(self.backend, "detect_many", None)
        if many is None:
            out: list[DetectAnomalyResult | Exception] = []
            for body, content_type in items:
                try:
                    out.append(self.detect(body, content_type))
                except Exception as exc:  # noqa: BLE001 - in place, as BatchBackend does
                    out.append(exc)
            return out
        return [r if isinstance(r, Exception) else recalibrate(r, self.calibrator) for r in many(items)]

    def result(self, rgb: Any, score: float, amap: Any) -> DetectAnomalyResult:
        """The wrapped backend's ``result`` (raw-map protocol), recalibrated."""
        return recalibrate(self.backend.result(rgb, score, amap), self.calibrator)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        if name in ("backend", "calibrator", "calibration"):  # not set yet (during unpickling)
            raise AttributeError(name)
        return getattr(self.backend, name)
