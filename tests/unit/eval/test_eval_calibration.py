from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from torchmetrics.classification import BinaryCalibrationError

from lvkit.errors import UndefinedMetricWarning
from lvkit.eval.calibration import brier_score_loss, calibration_error, log_loss, reliability_curve
from lvkit.eval.scores import anomaly_score


@pytest.fixture
def verdicts(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidences in [0.5, 1) from an overconfident model, and whether each verdict was right."""
    conf = 0.5 + 0.5 * rng.random(500) ** 0.5
    correct = rng.random(500) < conf - 0.1
    return conf, correct


@pytest.mark.parametrize("n_bins", [5, 10, 15])
@pytest.mark.parametrize("norm", ["l1", "max"])
def test_calibration_error_matches_torchmetrics(verdicts, n_bins: int, norm: str) -> None:
    conf, correct = verdicts
    # torchmetrics' binary case bins preds as the confidence and target as the accuracy,
    # so (confidence, correct) in is top-label ECE/MCE on both sides.
    metric = BinaryCalibrationError(n_bins=n_bins, norm=norm)
    reference = float(metric(torch.tensor(conf, dtype=torch.float64), torch.tensor(correct, dtype=torch.long)))
    assert calibration_error(conf, correct, n_bins=n_bins, norm=norm) == pytest.approx(reference, abs=1e-6)


def test_calibration_error_hand_computed_five() -> None:
    # bins (0.6, 0.7]: [0.65] acc 0; (0.9, 1]: [0.95] * 4 acc 3/4
    conf, correct = [0.65, 0.95, 0.95, 0.95, 0.95], [False, True, True, True, False]
    assert calibration_error(conf, correct) == pytest.approx(0.2 * 0.65 + 0.8 * 0.2, abs=1e-12)
    assert calibration_error(conf, correct, norm="max") == pytest.approx(0.65, abs=1e-12)
    # quantile bins with 2 bins: edges [0.65, 0.95, 0.95] -> everything in bin 0
    assert calibration_error(conf, correct, n_bins=2, strategy="quantile") == pytest.approx(
        abs(3 / 5 - np.mean(conf)), abs=1e-12
    )


def torchmetrics_ece(conf, correct, n_bins: int, norm: str = "l1") -> float:
    metric = BinaryCalibrationError(n_bins=n_bins, norm=norm)
    return float(metric(torch.tensor(np.asarray(conf), dtype=torch.float64),
                        torch.tensor(np.asarray(correct), dtype=torch.long)))


@pytest.mark.parametrize("n_bins", [2, 5, 10, 15])
@pytest.mark.parametrize("norm", ["l1", "max"])
def test_confidences_on_bin_edges_match_torchmetrics(rng: np.random.Generator, n_bins: int, norm: str) -> None:
    # 0.0, 0.1, 0.5 and 1.0 exactly, and every edge b / n_bins that torch's float64 linspace
    # also computes exactly (it rounds a few, e.g. 0.30000000000000004 for 10 bins)
    exact = [b / n_bins for b in range(n_bins + 1)
             if torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)[b].item() == b / n_bins]
    conf = np.r_[np.repeat([0.0, 0.1, 0.5, 1.0], 3), np.repeat(exact, 2), rng.random(40)]
    correct = rng.random(conf.size) < 0.6
    assert calibration_error(conf, correct, n_bins=n_bins, norm=norm) == pytest.approx(
        torchmetrics_ece(conf, correct, n_bins, norm), abs=1e-12)


def test_edge_convention_is_closed_on_the_left_with_one_on_its_own() -> None:
    # [0.1, 0.2) holds 0.1; [0.5, 0.6) holds 0.5; 1.0 has its own bin, apart from 0.95
    acc, conf, counts = reliability_curve([0.1, 0.15, 0.5, 0.95, 1.0, 1.0], [1, 0, 1, 0, 1, 1])
    assert counts.tolist() == [2, 1, 1, 2] and conf.tolist() == pytest.approx([0.125, 0.5, 0.95, 1.0])
    assert acc.tolist() == [0.5, 1.0, 0.0, 1.0]
    # sklearn closes uniform bins on the right: 0.1 and 0.5 go one bin lower, 1.0 joins 0.95
    ref_true, _ = calibration_curve([1, 0, 1, 0, 1, 1], [0.1, 0.15, 0.5, 0.95, 1.0, 1.0], n_bins=10)
    assert ref_true.size == 4 and ref_true.tolist() != acc.tolist()


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [3, 10])
def test_reliability_curve_matches_sklearn(verdicts, strategy: str, n_bins: int) -> None:
    conf, correct = verdicts
    if strategy == "quantile":  # quantile bins follow sklearn on edges too
        conf = np.r_[conf, 0.5, 0.6, 0.7, 1.0]
        correct = np.r_[correct, True, False, True, True]
    ref_true, ref_pred = calibration_curve(correct, conf, n_bins=n_bins, strategy=strategy)
    prob_true, prob_pred, counts = reliability_curve(conf, correct, n_bins=n_bins, strategy=strategy)
    np.testing.assert_allclose(prob_true, ref_true, atol=1e-6)
    np.testing.assert_allclose(prob_pred, ref_pred, atol=1e-6)
    assert counts.dtype == np.int64 and prob_true.dtype == np.float64 and counts.sum() == conf.size
    # the ECE is the count-weighted gap of the same curve
    ece = calibration_error(conf, correct, n_bins=n_bins, strategy=strategy)
    assert ece == pytest.approx(np.sum(counts * np.abs(prob_true - prob_pred)) / conf.size, abs=1e-12)


def test_reliability_curve_counts_naive_loop(verdicts) -> None:
    conf, correct = verdicts
    conf = np.r_[conf, 0.5, 0.6, 0.7, 1.0, 1.0]
    correct = np.r_[correct, True, False, True, True, False]
    _, _, counts = reliability_curve(conf, correct, n_bins=10)
    edges = [b / 10 for b in range(11)]
    naive = [np.sum((conf >= lo) & (conf < hi)) for lo, hi in zip(edges[:-1], edges[1:])] + [np.sum(conf == 1.0)]
    np.testing.assert_array_equal(counts, [c for c in naive if c > 0])


def test_empty_bins_are_dropped() -> None:
    acc, conf, counts = reliability_curve([0.55, 0.56, 0.99], [True, False, True], n_bins=10)
    assert counts.tolist() == [2, 1] and acc.tolist() == [0.5, 1.0]


def test_no_samples_is_nan_with_warning() -> None:
    with pytest.warns(UndefinedMetricWarning, match="no samples"):
        assert np.isnan(calibration_error([], []))
    with pytest.warns(UndefinedMetricWarning, match="empty"):
        assert all(a.size == 0 for a in reliability_curve([], [], strategy="quantile"))
    for fn in (brier_score_loss, log_loss):
        with pytest.warns(UndefinedMetricWarning, match="no samples"):
            assert np.isnan(fn([], []))


def test_calibration_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"strategy: expected one of \['uniform', 'quantile'\], got 'kmeans'"):
        calibration_error([0.6], [True], strategy="kmeans")
    with pytest.raises(ValueError, match=r"norm: expected one of \['l1', 'max'\], got 'l2'"):
        calibration_error([0.6], [True], norm="l2")
    with pytest.raises(ValueError, match="n_bins: expected an integer >= 1, got 0"):
        reliability_curve([0.6], [True], n_bins=0)
    with pytest.raises(ValueError, match=r"confidence: expected values in \[0, 1\], got \[1.2\]"):
        calibration_error([1.2], [True])
    with pytest.raises(ValueError, match="expected arrays of the same length"):
        calibration_error([0.6, 0.7], [True])


def test_brier_and_log_loss_match_sklearn(rng: np.random.Generator) -> None:
    y = rng.random(300) < 0.3
    p = anomaly_score(rng.random(300) < 0.5, 0.5 + 0.49 * rng.random(300))
    assert brier_score_loss(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-6)
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p, labels=[0, 1]), abs=1e-6)
    assert type(brier_score_loss(y, p)) is float and type(log_loss(y, p)) is float


def test_log_loss_clips_and_validates() -> None:
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-np.log(1e-15))
    assert log_loss([1], [0.0], eps=1e-3) == pytest.approx(-np.log(1e-3))
    with pytest.raises(ValueError, match=r"eps: expected a number in \(0, 0.5\), got 0"):
        log_loss([1], [0.5], eps=0)
    with pytest.raises(ValueError, match=r"p_anomaly: expected values in \[0, 1\]"):
        brier_score_loss([1], [1.5])
