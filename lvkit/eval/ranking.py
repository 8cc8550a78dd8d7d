"""Image-level ranking and thresholded classification metrics.

Inputs are ground-truth labels ``y_true`` (bool or 0/1, 1 = anomalous) and either an anomaly
score ``y_score`` (higher = more anomalous, e.g. :func:`~lvkit.eval.anomaly_score` of API
results, or a raw model score) or hard predictions ``y_pred``. AUROC and average precision are
thin wrappers over :mod:`sklearn.metrics`; the threshold helpers work on the same sorted-score
statistics as sklearn's ``_binary_clf_curve``.

Thresholds returned by :func:`best_f1_threshold` and :func:`operating_point` are placed
*midway* between the lowest score predicted positive and the next lower score, so the rules
``score >= t`` and ``score > t`` (anomalib thresholds strictly) give the same predictions.

Internal pipeline per metric: a check -> sufficient statistics -> the number; the statistics
helpers (``curve_stats``, ``confusion_stats``, ``prf_from_stats``, ...) live in
``lvkit.eval.base``, shared with the accumulators and the reports. sklearn is imported inside
the functions that need it; this module must not import torch, matplotlib or pandas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from lvkit.eval.base import confusion_stats, curve_stats, prf_from_stats
from lvkit.eval.checks import (
    NAN,
    as_binary,
    as_finite,
    check_in_range,
    check_real,
    check_verdicts,
    same_length,
    warn_undefined,
)

__all__ = [
    "average_precision",
    "best_f1_threshold",
    "confusion_counts",
    "image_auroc",
    "operating_point",
    "precision_recall_f1",
    "threshold_metrics",
]

_Bool = npt.NDArray[np.bool_]
_F64 = npt.NDArray[np.float64]


# --- checks -------------------------------------------------------------------------------


def _check_scores(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> tuple[_Bool, _F64]:
    yt = as_binary("y_true", y_true)
    ys = as_finite("y_score", y_score)
    same_length(y_true=yt, y_score=ys)
    return yt, ys


def _both_classes(yt: _Bool, metric: str) -> bool:
    n_pos = int(yt.sum())
    if n_pos == 0 or n_pos == yt.size:
        warn_undefined(
            f"{metric} is undefined when y_true holds one class only "
            f"({n_pos} anomalous of {yt.size}); returning nan",
            stacklevel=4,
        )
        return False
    return True


# --- AUROC / AP -----------------------------------------------------------------------------


def image_auroc(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> float:
    """Area under the ROC curve of image-level anomaly scores.

    A thin wrapper over :func:`sklearn.metrics.roc_auc_score` that returns ``nan`` with an
    :class:`~lvkit.errors.UndefinedMetricWarning` instead of raising when only one class is
    present.

    Parameters
    ----------
    y_true : array-like of shape (n,), dtype bool
        True labels, 1 / True = anomalous.
    y_score : array-like of shape (n,), dtype float
        Anomaly scores, higher = more anomalous.

    Returns
    -------
    float
        AUROC in [0, 1], or ``nan`` if ``y_true`` has a single class.

    Raises
    ------
    ValueError
        If the labels are not binary, the scores not finite, or the lengths differ.

    See Also
    --------
    average_precision : Area under the precision-recall curve.
    lvkit.eval.anomaly_score : Turns API results into scores.

    Examples
    --------
    >>> image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    yt, ys = _check_scores(y_true, y_score)
    if not _both_classes(yt, "AUROC"):
        return NAN
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(yt.astype(np.int64), ys))


def average_precision(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> float:
    """Average precision (area under the step precision-recall curve) of anomaly scores.

    A thin wrapper over :func:`sklearn.metrics.average_precision_score` with the anomalous
    class as positive. A single-class ``y_true`` gives ``nan`` with an
    :class:`~lvkit.errors.UndefinedMetricWarning` (sklearn would return 0 or 1, which tells
    nothing about the ranking).

    Parameters
    ----------
    y_true : array-like of shape (n,), dtype bool
        True labels, 1 / True = anomalous.
    y_score : array-like of shape (n,), dtype float
        Anomaly scores, higher = more anomalous.

    Returns
    -------
    float
        Average precision in [0, 1], or ``nan``.

    Raises
    ------
    ValueError
        If the labels are not binary, the scores not finite, or the lengths differ.

    See Also
    --------
    image_auroc : Area under the ROC curve.

    Examples
    --------
    >>> round(average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    yt, ys = _check_scores(y_true, y_score)
    if not _both_classes(yt, "average precision"):
        return NAN
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(yt.astype(np.int64), ys))


# --- confusion counts and precision / recall / F1 ---------------------------------------------


def confusion_counts(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, int]:
    """Count true/false positives and negatives of anomaly verdicts.

    Parameters
    ----------
    y_true : array-like of shape (n,), dtype bool
        True labels, 1 / True = anomalous.
    y_pred : array-like of shape (n,), dtype bool
        Predicted labels (e.g. ``IsAnomalous``).

    Returns
    -------
    dict of str to int
        Keys ``"tp"``, ``"fp"``, ``"tn"``, ``"fn"``.

    Raises
    ------
    ValueError
        If either input is not binary or the lengths differ.

    See Also
    --------
    precision_recall_f1 : Rates from the same counts.

    Examples
    --------
    >>> confusion_counts([1, 1, 0, 0, 0], [1, 0, 1, 0, 0])
    {'tp': 1, 'fp': 1, 'tn': 2, 'fn': 1}
    """
    return confusion_stats(*check_verdicts(y_true, y_pred))


def precision_recall_f1(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, *, zero_division: float | str = "warn"
) -> dict[str, float]:
    """Precision, recall and F1 of anomaly verdicts, the anomalous class being positive.

    ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)`` and
    ``f1 = 2 tp / (2 tp + fp + fn)`` (the same as the harmonic mean where both are defined,
    and as sklearn >= 1.3). A 0/0 ratio is ``zero_division``: by default ``nan`` with one
    :class:`~lvkit.errors.UndefinedMetricWarning` per call.

    Parameters
    ----------
    y_true : array-like of shape (n,), dtype bool
        True labels, 1 / True = anomalous.
    y_pred : array-like of shape (n,), dtype bool
        Predicted labels.
    zero_division : "warn", float in [0, 1] or nan, default "warn"
        The value of a 0/0 ratio. ``"warn"`` gives ``nan`` and warns (sklearn's ``"warn"``
        gives 0.0); a number (e.g. 0.0, as training scores its validation split) is returned
        as it is, without a warning, as sklearn's
        ``precision_recall_fscore_support(..., zero_division=x)``.

    Returns
    -------
    dict of str to float
        Keys ``"precision"``, ``"recall"``, ``"f1"``.

    Raises
    ------
    ValueError
        If either input is not binary or the lengths differ.

    See Also
    --------
    confusion_counts : The counts behind these rates.
    threshold_metrics : The same from scores and a threshold.

    Examples
    --------
    >>> precision_recall_f1([1, 1, 0, 0], [1, 0, 1, 0])
    {'precision': 0.5, 'recall': 0.5, 'f1': 0.5}
    >>> precision_recall_f1([1, 0], [0, 0], zero_division=0.0)
    {'precision': 0.0, 'recall': 0.0, 'f1': 0.0}
    """
    return prf_from_stats(confusion_stats(*check_verdicts(y_true, y_pred)), zero_division=zero_division)


def threshold_metrics(y_true: npt.ArrayLike, y_score: npt.ArrayLike, *, threshold: float,
                      zero_division: float | str = "warn") -> dict[str, Any]:
    """Precision, recall, F1 and confusion counts when ``score >= threshold`` is anomalous.

    Parameters
    ----------
    y_true : array-like of shape (n,), dtype bool
        True labels, 1 / True = anomalous.
    y_score : array-like of shape (n,), dtype float
        Anomaly scores.
    threshold : float
        Scores at or above it are predicted anomalous.
    zero_division : "warn", float in [0, 1] or nan, default "warn"
        As :func:`precision_recall_f1`.

    Returns
    -------
    dict
        ``"precision"``, ``"recall"``, ``"f1"`` (float, ``zero_division`` where 0/0) and
        ``"tp"``, ``"fp"``, ``"tn"``, ``"fn"`` (int).

    Raises
    ------
    ValueError
        If ``threshold`` is not a finite number, or the inputs are invalid.

    See Also
    --------
    precision_recall_f1, best_f1_threshold

    Examples
    --------
    >>> m = threshold_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], threshold=0.3)
    >>> m["recall"], m["fp"]
    (1.0, 1)
    """
    t = check_real("threshold", threshold)
    yt, ys = _check_scores(y_true, y_score)
    counts = confusion_stats(yt, ys >= t)
    return {**prf_from_stats(counts, zero_division=zero_division), **counts}


# --- curve statistics and threshold placement -------------------------------------------------


def _midway(distinct: _F64, k: int) -> float:
    """Threshold predicting ``score >= distinct[k]`` positive under both ``>=`` and ``>``.

    ``k = -1`` means "predict nothing". Between two distinct scores the midpoint is used; past
    either end the nearest gap is mirrored (or 0.5 when there is a single distinct score).
    """
    n = distinct.size
    if k == -1:
        gap = distinct[0] - distinct[1] if n > 1 else 1.0
        return float(distinct[0] + gap / 2)
    if k < n - 1:
        return float(distinct[k] + (distinct[k + 1] - distinct[k]) / 2)
    gap = distinct[k - 1] - distinct[k] if n > 1 else 1.0
    return float(distinct[k] - gap / 2)


def best_f1_threshold(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> tuple[float, float]:
    """The threshold on anomaly scores that maximises F1, and that F1.

    Every distinct score is tried as the lowest score predicted anomalous. The returned
    threshold lies midway between that score and the next lower one (past the minimum, the
    gap above it is mirrored), so ``score >= t`` and anomalib's strict ``score > t`` agree.
    Ties in F1 go to the highest threshold.

    Parameters
    ----------
    y_true : array-like of shape (n,), dtype bool
        True labels, 1 / True = anomalous.
    y_score : array-like of shape (n,), dtype float
        Anomaly scores.

    Returns
    -------
    threshold : float
        Midway threshold (``nan`` if there is no anomalous sample).
    f1 : float
        The F1 at that threshold (``nan`` if there is no anomalous sample, with an
        :class:`~lvkit.errors.UndefinedMetricWarning`).

    Raises
    ------
    ValueError
        If the inputs are invalid.

    See Also
    --------
    operating_point : Thresholds for a target FPR or recall.

    Examples
    --------
    >>> threshold, f1 = best_f1_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> round(threshold, 6), round(f1, 6)
    (0.225, 0.8)
    """
    yt, ys = _check_scores(y_true, y_score)
    n_pos = int(yt.sum())
    if n_pos == 0:
        warn_undefined("F1 is undefined when y_true has no anomalous sample; returning nan", stacklevel=3)
        return NAN, NAN
    distinct, tps, fps = curve_stats(yt, ys)
    f1 = 2 * tps / (tps + fps + n_pos)
    k = int(np.argmax(f1))
    return _midway(distinct, k), float(f1[k])


def operating_point(
    y_true: npt.ArrayLike,
    y_score: npt.ArrayLike,
    *,
    target_fpr: float | None = None,
    target_recall: float | None = None,
) -> dict[str, float]:
    """Pick a threshold for a false-positive-rate budget or a recall target.

    Exactly one target is given. With ``target_fpr`` the threshold with ``fpr <= target_fpr``
    and the highest recall is chosen (then the lowest FPR); with ``target_recall`` the one with
    ``recall >= target_recall`` and the lowest FPR (then the highest recall). "Predict nothing"
    and "predict everything" are candidates, so a point always exists. Thresholds are placed
    midway between scores as in :func:`best_f1_threshold`.

    Parameters
    ----------
    y_true : array-like of shape (n,), dtype bool
        True labels, 1 / True = anomalous.
    y_score : array-like of shape (n,), dtype float
        Anomaly scores.
    target_fpr : float in [0, 1], optional
        Largest acceptable false-positive rate.
    target_recall : float in [0, 1], optional
        Smallest acceptable recall.

    Returns
    -------
    dict of str to float
        ``"threshold"``, ``"fpr"``, ``"recall"``, ``"precision"`` at ``score >= threshold``.
        All ``nan`` with an :class:`~lvkit.errors.UndefinedMetricWarning` if ``y_true`` has
        one class; ``precision`` is ``nan`` (with the warning) if nothing is predicted.

    Raises
    ------
    ValueError
        If not exactly one target is given, a target is outside [0, 1], or the inputs are
        invalid.

    See Also
    --------
    best_f1_threshold, threshold_metrics

    Examples
    --------
    >>> point = operating_point([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], target_fpr=0.0)
    >>> round(point["threshold"], 6), point["recall"], point["precision"]
    (0.6, 0.5, 1.0)
    >>> operating_point([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], target_recall=1.0)["fpr"]
    0.5
    """
    if (target_fpr is None) == (target_recall is None):
        raise ValueError(
            f"expected exactly one of target_fpr and target_recall, got "
            f"target_fpr={target_fpr!r}, target_recall={target_recall!r}"
        )
    name, target = ("target_fpr", target_fpr) if target_recall is None else ("target_recall", target_recall)
    t = check_in_range(name, target, "[0, 1]")
    yt, ys = _check_scores(y_true, y_score)
    if not _both_classes(yt, "operating point"):
        return {"threshold": NAN, "fpr": NAN, "recall": NAN, "precision": NAN}
    n_pos, n_neg = int(yt.sum()), int((~yt).sum())
    distinct, tps, fps = curve_stats(yt, ys)
    tps, fps = np.r_[0, tps], np.r_[0, fps]  # index 0 = predict nothing
    recall, fpr = tps / n_pos, fps / n_neg
    if target_fpr is not None:
        ok = np.flatnonzero(fpr <= t)
        key = np.lexsort((fpr[ok], -recall[ok]))  # max recall, then min fpr
    else:
        ok = np.flatnonzero(recall >= t)
        key = np.lexsort((-recall[ok], fpr[ok]))  # min fpr, then max recall
    i = int(ok[key[0]])
    precision = float(tps[i] / (tps[i] + fps[i])) if tps[i] + fps[i] else NAN
    if np.isnan(precision):
        warn_undefined("precision is undefined (0/0) at a threshold that predicts nothing; returning nan")
    return {
        "threshold": _midway(distinct, i - 1),
        "fpr": float(fpr[i]),
        "recall": float(recall[i]),
        "precision": precision,
    }
