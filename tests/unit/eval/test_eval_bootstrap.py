from __future__ import annotations

import numpy as np
import pytest

from lvkit.errors import UndefinedMetricWarning
from lvkit.eval.bootstrap import bootstrap_ci
from lvkit.eval.masks import mean_iou
from lvkit.eval.ranking import image_auroc


def test_reproducible_and_contains_the_estimate(scored) -> None:
    y, s = scored
    first = bootstrap_ci(image_auroc, y, s, n_resamples=150, seed=5)
    assert first == bootstrap_ci(image_auroc, y, s, n_resamples=150, seed=5)
    assert first != bootstrap_ci(image_auroc, y, s, n_resamples=150, seed=6)
    estimate, low, high = first
    assert estimate == image_auroc(y, s) and low < estimate < high
    assert all(type(v) is float for v in first)


def test_percentiles_of_joint_resamples() -> None:
    a = np.arange(20.0)
    b = 2 * a

    def paired(x: np.ndarray, y: np.ndarray) -> float:
        assert np.array_equal(y, 2 * x)  # rows stay paired across arrays
        return float(np.mean(x))

    estimate, low, high = bootstrap_ci(paired, a, b, n_resamples=500, confidence_level=0.9, seed=0)
    rng = np.random.default_rng(0)
    means = [np.mean(a[rng.integers(0, 20, size=20)]) for _ in range(500)]
    assert estimate == 9.5
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [5, 95])), abs=1e-12)


def test_undefined_resamples_are_dropped_and_silenced() -> None:
    # 1 anomalous image in 12: most resamples miss it and image_auroc warns + returns nan there;
    # filterwarnings=error would fail this test if a resample warning leaked.
    y = np.r_[np.zeros(11, bool), True]
    s = np.linspace(0, 1, 12)
    estimate, low, high = bootstrap_ci(image_auroc, y, s, n_resamples=200)
    assert estimate == 1.0 and low == high == 1.0


def test_all_resamples_undefined() -> None:
    def undefined(x: np.ndarray) -> float:
        return float("nan")

    with pytest.warns(UndefinedMetricWarning, match="nan on all 50 resamples"):
        estimate, low, high = bootstrap_ci(undefined, [1, 2, 3], n_resamples=50)
    assert np.isnan(estimate) and np.isnan(low) and np.isnan(high)


def test_resamples_lists_of_masks_of_mixed_sizes() -> None:
    a, b = np.eye(3, dtype=bool), np.ones((2, 5), bool)
    truth, pred = [a, b, a], [a, b, np.zeros((3, 3), bool)]
    estimate, low, high = bootstrap_ci(mean_iou, truth, pred, n_resamples=100)
    assert estimate == mean_iou(truth, pred) and 0 <= low <= estimate <= high <= 1


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="expected at least one array to resample, got none"):
        bootstrap_ci(np.mean)
    with pytest.raises(ValueError, match=r"expected arrays of the same length, got lengths \[2, 3\]"):
        bootstrap_ci(image_auroc, [0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="expected at least one row to resample, got 0"):
        bootstrap_ci(np.mean, [])
    with pytest.raises(ValueError, match=r"confidence_level: expected a number in \(0, 1\), got 95"):
        bootstrap_ci(np.mean, [1.0], confidence_level=95)
    with pytest.raises(ValueError, match="n_resamples: expected an integer >= 1, got 0"):
        bootstrap_ci(np.mean, [1.0], n_resamples=0)
