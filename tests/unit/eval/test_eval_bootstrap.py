from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats

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
    with pytest.raises(ValueError, match=r"method: expected one of \['percentile', 'bca'\], got 'BCa'"):
        bootstrap_ci(np.mean, [1.0], method="BCa")


def test_bca_matches_scipy() -> None:
    # a skewed mean: BCa moves both bounds up from the percentile ones, as scipy's BCa does
    x = np.random.default_rng(3).exponential(1.0, 40)
    ref = stats.bootstrap((x,), np.mean, method="BCa", n_resamples=5000, random_state=0).confidence_interval
    _, low, high = bootstrap_ci(np.mean, x, n_resamples=5000, method="bca")
    _, p_low, p_high = bootstrap_ci(np.mean, x, n_resamples=5000)
    assert (low, high) == pytest.approx((ref.low, ref.high), abs=0.012)  # Monte Carlo noise of 5000 draws
    assert abs(low - ref.low) < abs(p_low - ref.low) and abs(high - ref.high) < abs(p_high - ref.high)


def test_bca_of_a_constant_metric_and_nan_estimate() -> None:
    assert bootstrap_ci(lambda v: 1.0, [1, 2, 3], n_resamples=20, method="bca") == (1.0, 1.0, 1.0)
    calls = iter(range(10**6))

    def nan_on_the_data(v: np.ndarray) -> float:
        return float("nan") if next(calls) == 0 else float(np.mean(v))

    with pytest.warns(UndefinedMetricWarning, match="for BCa, on the data"):
        estimate, low, high = bootstrap_ci(nan_on_the_data, [1.0, 2.0, 3.0], n_resamples=20, method="bca")
    assert np.isnan(estimate) and np.isnan(low) and np.isnan(high)


def _fast_auroc(y: np.ndarray, s: np.ndarray) -> float:
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = np.argsort(np.argsort(s)) + 1  # continuous scores: no ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_coverage_with_six_anomalous_images() -> None:
    """Measured coverage of nominal 95% AUROC intervals, 6 anomalous and 30 normal images.

    Scores N(0, 1) for normal and N(1.5, 1) for anomalous images: true AUROC Phi(1.5 / sqrt 2).
    100 simulated data sets (a few seconds). The percentile interval under-covers (0.90 here,
    0.88 over 300 sets), BCa is near the nominal level (0.96 here, 0.94 over 300 sets).
    """
    truth = NormalDist().cdf(1.5 / np.sqrt(2.0))
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(6, bool), np.zeros(30, bool)]
    hits = {"percentile": 0, "bca": 0}
    for k in range(100):
        s = rng.normal(0.0, 1.0, y.size) + 1.5 * y
        for method in hits:
            _, low, high = bootstrap_ci(_fast_auroc, y, s, n_resamples=300, seed=k, method=method)
            hits[method] += low <= truth <= high
    assert hits["percentile"] <= 91 and hits["bca"] >= 93 and hits["bca"] - hits["percentile"] >= 4


def test_reports_warn_when_a_class_has_few_rows(rng: np.random.Generator) -> None:
    import pandas as pd

    from lvkit.eval import CoverageWarning, calibration_report, image_metrics, operating_points

    def table(n_pos: int, n_neg: int) -> pd.DataFrame:
        y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
        s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
        return pd.DataFrame({"label": y.astype(int), "is_anomalous": s >= 0.5, "anomaly_score": s, "error": None})

    few, enough = table(6, 30), table(10, 30)
    for report in (image_metrics, calibration_report, operating_points):
        with pytest.warns(CoverageWarning, match="6 anomalous and 30 normal rows"):
            report(few, n_resamples=20)
        with pytest.warns(CoverageWarning, match="BCa helps"):
            report(few, n_resamples=20, ci_method="bca")
        report(few, ci=False)  # no interval, no warning (filterwarnings=error)
        report(enough, n_resamples=20)
    with pytest.raises(ValueError, match=r"ci_method: expected one of \['percentile', 'bca'\], got 'basic'"):
        image_metrics(few, ci_method="basic")


def test_report_bca_bounds_are_bootstrap_ci_bca(scored) -> None:
    import pandas as pd

    from lvkit.eval import image_metrics

    y, s = scored
    df = pd.DataFrame({"label": y.astype(int), "is_anomalous": s >= 0.5, "anomaly_score": s, "error": None})
    m = image_metrics(df, n_resamples=200, ci_method="bca", seed=4)
    _, low, high = bootstrap_ci(image_auroc, y, s, n_resamples=200, seed=4, method="bca")
    assert (m["auroc_low"], m["auroc_high"]) == pytest.approx((low, high), abs=1e-12)
