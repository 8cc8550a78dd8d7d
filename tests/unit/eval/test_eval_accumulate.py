"""Streaming accumulators agree with the batch functions, chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blob_masks

from lvkit.errors import UndefinedMetricWarning
from lvkit.eval import (
    CalibrationAccumulator,
    ConfusionAccumulator,
    MaskIoUAccumulator,
    calibration_error,
    confusion_counts,
    mean_dice,
    mean_iou,
    precision_recall_f1,
    reliability_curve,
)
from lvkit.shapes import DetectAnomalyResult


@pytest.mark.parametrize("n_bins", [5, 10])
def test_calibration_accumulator_matches_batch(rng, n_bins: int) -> None:
    conf = 0.5 + 0.5 * rng.random(300)
    conf[:4] = [0.5, 0.6, 0.7, 1.0]  # on bin edges
    correct = rng.random(300) < conf - 0.1
    acc, other = CalibrationAccumulator(n_bins=n_bins), CalibrationAccumulator(n_bins=n_bins)
    for chunk in np.array_split(np.arange(200), 7):
        acc.update(conf[chunk], correct[chunk])
    other.update(conf[200:], correct[200:])
    acc.merge(other)
    for norm in ("l1", "max"):
        expected = calibration_error(conf, correct, n_bins=n_bins, norm=norm)
        assert acc.compute(norm=norm) == pytest.approx(expected, abs=1e-12)
    for got, ref in zip(acc.curve(), reliability_curve(conf, correct, n_bins=n_bins)):
        np.testing.assert_allclose(got, ref, atol=1e-12)
    acc.reset()
    with pytest.warns(UndefinedMetricWarning, match="no samples"):
        assert np.isnan(acc.compute())
    with pytest.raises(ValueError, match="n_bins=5"):
        CalibrationAccumulator(n_bins=5).merge(CalibrationAccumulator(n_bins=6))


def test_calibration_accumulator_from_results() -> None:
    results = [DetectAnomalyResult(is_anomalous=a, confidence=c) for a, c in [(True, 0.9), (False, 0.8), (True, 0.6)]]
    acc = CalibrationAccumulator()
    acc.update_results(results, [1, 1, 0])
    assert acc.compute() == pytest.approx(calibration_error([0.9, 0.8, 0.6], [True, False, False]))
    with pytest.raises(ValueError, match="same length"):
        acc.update_results(results, [1, 1])


@pytest.mark.parametrize("average", ["micro", "macro"])
@pytest.mark.parametrize("empty", ["nan", "one", "skip"])
@pytest.mark.parametrize("metric", ["iou", "dice"])
def test_mask_accumulator_matches_batch(rng, average: str, empty: str, metric: str) -> None:
    masks, maps = blob_masks(rng, n=8)
    preds = [m > 0.8 for m in maps]
    preds[0] = np.zeros_like(preds[0])  # mask 0 has no region: a both-empty pair
    acc, other = MaskIoUAccumulator(metric=metric, average=average, empty=empty), MaskIoUAccumulator(
        metric=metric, average=average, empty=empty)
    for t, p in zip(masks[:5], preds[:5]):
        acc.update(t, p)
    for t, p in zip(masks[5:], preds[5:]):
        other.update(t, p)
    acc.merge(other)
    batch = (mean_iou if metric == "iou" else mean_dice)(masks, preds, average=average, empty=empty)
    assert acc.compute() == pytest.approx(batch, abs=1e-12)
    assert acc.stats.shape == (8, 4)


def test_mask_accumulator_undefined() -> None:
    acc = MaskIoUAccumulator(average="macro", empty="skip")
    acc.update(np.zeros((4, 4), bool), np.zeros((4, 4), bool))
    with pytest.warns(UndefinedMetricWarning, match="no image has a non-empty mask"):
        assert np.isnan(acc.compute())
    with pytest.raises(ValueError, match="metric"):
        MaskIoUAccumulator(metric="f1")


def test_confusion_accumulator_matches_batch(scored) -> None:
    y, s = scored
    pred = s >= 0.5
    acc, other = ConfusionAccumulator(), ConfusionAccumulator()
    acc.update(y[:120], pred[:120])
    other.update(y[120:], pred[120:])
    acc.merge(other)
    assert acc.counts == confusion_counts(y, pred)
    assert acc.compute() == precision_recall_f1(y, pred)
    acc.reset()
    acc.update_results([DetectAnomalyResult(is_anomalous=False, confidence=0.9)], [0])
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(acc.compute()["precision"])
