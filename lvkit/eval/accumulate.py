"""Streaming accumulators: metrics over results that arrive one at a time (or in chunks).

Each accumulator holds only the sufficient statistics of a metric and calls the same helpers
of ``lvkit.eval.base`` as the batch function, so the two agree by construction:

- :class:`CalibrationAccumulator`: per-bin counts, confidence sums and correct sums of
  :func:`~lvkit.eval.calibration_error` (formula in ``lvkit.eval.calibration``). The bin
  edges must be fixed before the data is seen, so only equal-width (``"uniform"``) bins stream;
  equal-mass bins need every confidence.
- :class:`MaskIoUAccumulator`: the per-image ``(intersection, union, true, predicted)`` pixel
  counts of :func:`~lvkit.eval.mean_iou` / :func:`~lvkit.eval.mean_dice` (policies in
  ``lvkit.eval.masks``); four integers an image, so ``macro`` streams too.
- :class:`ConfusionAccumulator`: true/false positive/negative counts of verdicts
  (:func:`~lvkit.eval.confusion_counts`, :func:`~lvkit.eval.precision_recall_f1`).

Accumulators ``merge`` (e.g. from worker processes) and ``reset``. This module imports numpy
and the metric modules only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from lvkit.eval.base import (
    bin_edges,
    binned_stats,
    calibration_from_bins,
    confusion_stats,
    curve_from_bins,
    mask_stats_rows,
    n_bin_slots,
    overlap_from_stats,
    prf_from_stats,
)
from lvkit.eval.checks import (
    NAN,
    NORMS,
    as_binary,
    check_choice,
    check_confidence,
    check_mask_options,
    check_mask_pair,
    check_positive_int,
    check_verdicts,
    same_length,
    warn_undefined,
)

__all__ = ["CalibrationAccumulator", "ConfusionAccumulator", "MaskIoUAccumulator"]


def _result_fields(results: Sequence[Any]) -> tuple[list[bool], list[float]]:
    return [bool(r.is_anomalous) for r in results], [float(r.confidence) for r in results]


class CalibrationAccumulator:
    """Streaming top-label ECE / MCE and reliability curve with equal-width bins.

    Parameters
    ----------
    n_bins : int, default 10
        Equal-width bins on [0, 1] (plus the bin of confidence 1, as
        :func:`~lvkit.eval.calibration_error`).

    See Also
    --------
    lvkit.eval.calibration_error : The batch function (and the formula).

    Examples
    --------
    >>> acc = CalibrationAccumulator()
    >>> acc.update([0.65, 0.95], [False, True])
    >>> acc.update([0.95, 0.95, 0.95], [True, True, False])
    >>> round(acc.compute(), 6), round(acc.compute(norm="max"), 6)
    (0.29, 0.65)
    """

    def __init__(self, *, n_bins: int = 10) -> None:
        self.n_bins = check_positive_int("n_bins", n_bins)
        self.edges = bin_edges(np.empty(0), self.n_bins, "uniform")
        self.reset()

    def reset(self) -> None:
        """Forget every sample."""
        slots = n_bin_slots(self.edges, "uniform")
        self.counts = np.zeros(slots, np.int64)
        self.conf_sums = np.zeros(slots, np.float64)
        self.correct_sums = np.zeros(slots, np.float64)

    def update(self, confidence: npt.ArrayLike, correct: npt.ArrayLike) -> None:
        """Add verdict confidences in [0, 1] and whether each verdict was right."""
        conf, corr, _, _ = check_confidence(confidence, correct, self.n_bins, "uniform")
        counts, conf_sums, correct_sums = binned_stats(conf, corr, self.edges, "uniform")
        self.counts += counts
        self.conf_sums += conf_sums
        self.correct_sums += correct_sums

    def update_results(self, results: Sequence[Any], y_true: npt.ArrayLike) -> None:
        """Add ``DetectAnomalyResult``s and their true labels (1 = anomalous)."""
        flags, conf = _result_fields(results)
        y = as_binary("y_true", y_true)
        same_length(results=np.asarray(flags), y_true=y)
        self.update(conf, np.asarray(flags, bool) == y)

    def merge(self, other: CalibrationAccumulator) -> None:
        """Add the statistics of another accumulator with the same bins."""
        if other.n_bins != self.n_bins:
            raise ValueError(f"expected an accumulator with n_bins={self.n_bins}, got n_bins={other.n_bins}")
        self.counts += other.counts
        self.conf_sums += other.conf_sums
        self.correct_sums += other.correct_sums

    def compute(self, *, norm: str = "l1") -> float:
        """ECE (``"l1"``) or MCE (``"max"``); ``nan`` with a warning before any sample."""
        norm = check_choice("norm", norm, NORMS)
        if int(self.counts.sum()) == 0:
            warn_undefined("calibration error is undefined with no samples; returning nan")
            return NAN
        return calibration_from_bins(self.counts, self.conf_sums, self.correct_sums, norm=norm)

    def curve(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """``(prob_true, prob_pred, counts)`` of the non-empty bins, as :func:`~lvkit.eval.reliability_curve`."""
        return curve_from_bins(self.counts, self.conf_sums, self.correct_sums)


class MaskIoUAccumulator:
    """Streaming mask IoU or Dice over images, micro or macro, with an empty-mask policy.

    Parameters
    ----------
    metric : {"iou", "dice"}, default "iou"
    average : {"micro", "macro"}, default "micro"
    empty : {"nan", "one", "skip"}, default "nan"
        As :func:`~lvkit.eval.mean_iou`.

    See Also
    --------
    lvkit.eval.mean_iou, lvkit.eval.mean_dice : The batch functions.

    Examples
    --------
    >>> acc = MaskIoUAccumulator(average="macro", empty="one")
    >>> acc.update([[1, 1], [0, 0]], [[1, 0], [0, 0]])
    >>> acc.update([[0, 0], [0, 0]], [[0, 0], [0, 0]])
    >>> acc.compute()
    0.75
    """

    def __init__(self, *, metric: str = "iou", average: str = "micro", empty: str = "nan") -> None:
        self.metric = check_choice("metric", metric, ("iou", "dice"))
        self.average, self.empty = check_mask_options(average, empty)
        self.reset()

    def reset(self) -> None:
        """Forget every image."""
        self._rows: list[npt.NDArray[np.int64]] = []

    @property
    def stats(self) -> npt.NDArray[np.int64]:
        """Rows ``(intersection, union, true_count, pred_count)``, one per image, int64 (n, 4)."""
        return np.concatenate(self._rows) if self._rows else np.zeros((0, 4), np.int64)

    def update(self, mask_true: npt.ArrayLike, mask_pred: npt.ArrayLike) -> None:
        """Add one image's true and predicted (H, W) masks."""
        self._rows.append(mask_stats_rows([check_mask_pair(mask_true, mask_pred)]))

    def merge(self, other: MaskIoUAccumulator) -> None:
        """Add the images of another accumulator."""
        self._rows.append(other.stats)

    def compute(self) -> float:
        """The metric over every image so far; ``nan`` with a warning when undefined."""
        return overlap_from_stats(self.stats, metric=self.metric, average=self.average, empty=self.empty,
                                  stacklevel=3)


class ConfusionAccumulator:
    """Streaming confusion counts and precision / recall / F1 of verdicts.

    See Also
    --------
    lvkit.eval.confusion_counts, lvkit.eval.precision_recall_f1 : The batch functions.

    Examples
    --------
    >>> acc = ConfusionAccumulator()
    >>> acc.update([1, 1, 0], [1, 0, 1])
    >>> acc.update([0], [0])
    >>> acc.counts, acc.compute()
    ({'tp': 1, 'fp': 1, 'tn': 1, 'fn': 1}, {'precision': 0.5, 'recall': 0.5, 'f1': 0.5})
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every verdict."""
        self.counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}

    def update(self, y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> None:
        """Add true labels and verdicts (1 / True = anomalous)."""
        for key, value in confusion_stats(*check_verdicts(y_true, y_pred)).items():
            self.counts[key] += value

    def update_results(self, results: Sequence[Any], y_true: npt.ArrayLike) -> None:
        """Add ``DetectAnomalyResult``s and their true labels."""
        self.update(y_true, _result_fields(results)[0])

    def merge(self, other: ConfusionAccumulator) -> None:
        """Add the counts of another accumulator."""
        for key, value in other.counts.items():
            self.counts[key] += value

    def compute(self, *, zero_division: float | str = "warn") -> dict[str, float]:
        """Precision, recall and F1; a 0/0 ratio is ``zero_division`` (as :func:`~lvkit.eval.precision_recall_f1`)."""
        return prf_from_stats(self.counts, zero_division=zero_division, stacklevel=3)
