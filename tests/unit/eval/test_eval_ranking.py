from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from lvkit.errors import UndefinedMetricWarning
from lvkit.eval.ranking import (
    average_precision,
    best_f1_threshold,
    confusion_counts,
    image_auroc,
    operating_point,
    precision_recall_f1,
    threshold_metrics,
)

Data = tuple[np.ndarray, np.ndarray]


def test_auroc_and_ap_match_sklearn(scored: Data) -> None:
    y, s = scored
    assert image_auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-6)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-6)
    assert type(image_auroc(y, s)) is float and type(average_precision(y, s)) is float


@pytest.mark.parametrize("metric", [image_auroc, average_precision])
@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1], []])
def test_one_class_is_nan_with_warning(metric, labels) -> None:
    with pytest.warns(UndefinedMetricWarning, match="one class"):
        assert np.isnan(metric(labels, np.linspace(0, 1, len(labels))))


@pytest.mark.parametrize("metric", [image_auroc, average_precision, best_f1_threshold])
def test_argument_errors(metric) -> None:
    with pytest.raises(ValueError, match=r"y_true: expected bool or 0/1 values, got \[2\]"):
        metric([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"y_score: expected finite numbers, got \[nan\]"):
        metric([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="expected arrays of the same length"):
        metric([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"y_score: expected a 1-D array, got shape \(1, 2\)"):
        metric([0, 1], [[0.1, 0.2]])


def test_confusion_counts_match_sklearn(rng: np.random.Generator) -> None:
    y, p = rng.random(100) < 0.3, rng.random(100) < 0.5
    tn, fp, fn, tp = skm.confusion_matrix(y, p, labels=[0, 1]).ravel()
    assert confusion_counts(y, p) == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert all(type(v) is int for v in confusion_counts(y, p).values())


def test_precision_recall_f1_match_sklearn(rng: np.random.Generator) -> None:
    y, p = rng.random(100) < 0.3, rng.random(100) < 0.5
    prec, rec, f1, _ = skm.precision_recall_fscore_support(y, p, average="binary")
    assert precision_recall_f1(y, p) == pytest.approx({"precision": prec, "recall": rec, "f1": f1}, abs=1e-6)


def test_precision_undefined_when_nothing_predicted() -> None:
    with pytest.warns(UndefinedMetricWarning, match="precision undefined"):
        out = precision_recall_f1([1, 0, 0], [0, 0, 0])
    assert np.isnan(out["precision"]) and out["recall"] == 0.0 and out["f1"] == 0.0


def test_all_undefined_without_positives() -> None:
    with pytest.warns(UndefinedMetricWarning, match="precision, recall, f1 undefined"):
        out = precision_recall_f1([0, 0], [0, 0])
    assert all(np.isnan(v) for v in out.values())


def test_threshold_metrics_use_greater_equal(scored: Data) -> None:
    y, s = scored
    t = float(np.median(s))  # a value present in the scores: ties must count as positive
    out = threshold_metrics(y, s, threshold=t)
    assert {k: out[k] for k in ("tp", "fp", "tn", "fn")} == confusion_counts(y, s >= t)
    assert out["f1"] == pytest.approx(skm.f1_score(y, s >= t), abs=1e-6)
    with pytest.raises(ValueError, match="threshold: expected a finite number, got nan"):
        threshold_metrics(y, s, threshold=float("nan"))
    with pytest.raises(ValueError, match="threshold: expected a real number"):
        threshold_metrics(y, s, threshold="0.5")  # type: ignore[arg-type]


def _agrees_both_ways(y: np.ndarray, s: np.ndarray, t: float) -> None:
    np.testing.assert_array_equal(s >= t, s > t)


def test_best_f1_matches_brute_force_and_strict_rule(scored: Data) -> None:
    y, s = scored
    t, f1 = best_f1_threshold(y, s)
    reference = max(skm.f1_score(y, s >= u) for u in np.unique(s))
    assert f1 == pytest.approx(reference, abs=1e-6)
    _agrees_both_ways(y, s, t)  # anomalib's `score > t` gives the same predictions
    assert skm.f1_score(y, s > t) == pytest.approx(f1, abs=1e-6)
    lowest_positive = s[s >= t].min()
    next_lower = s[s < t].max()
    assert t == pytest.approx((lowest_positive + next_lower) / 2)


def test_best_f1_edges() -> None:
    t, f1 = best_f1_threshold([1, 1, 1], [0.2, 0.5, 0.9])  # best: everything positive
    assert f1 == 1.0 and t == pytest.approx(0.05)  # gap 0.3 above the minimum, mirrored
    t, f1 = best_f1_threshold([1, 1], [0.4, 0.4])  # a single distinct score
    assert (t, f1) == (pytest.approx(-0.1), 1.0)
    with pytest.warns(UndefinedMetricWarning, match="no anomalous sample"):
        t, f1 = best_f1_threshold([0, 0], [0.4, 0.5])
    assert np.isnan(t) and np.isnan(f1)


def _roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr


@pytest.mark.parametrize("target", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_operating_point_target_fpr(scored: Data, target: float) -> None:
    y, s = scored
    fpr, tpr = _roc_points(y, s)
    ok = fpr <= target
    best_recall = tpr[ok].max()
    best_fpr = fpr[ok & (tpr == best_recall)].min()
    out = operating_point(y, s, target_fpr=target)
    assert out["recall"] == pytest.approx(best_recall) and out["fpr"] == pytest.approx(best_fpr)
    _agrees_both_ways(y, s, out["threshold"])
    pred = s >= out["threshold"]
    assert out["fpr"] == pytest.approx(pred[~y].mean()) and out["recall"] == pytest.approx(pred[y].mean())
    if pred.any():
        assert out["precision"] == pytest.approx(skm.precision_score(y, pred))


@pytest.mark.parametrize("target", [0.0, 0.3, 0.9, 1.0])
def test_operating_point_target_recall(scored: Data, target: float) -> None:
    y, s = scored
    fpr, tpr = _roc_points(y, s)
    ok = tpr >= target
    best_fpr = fpr[ok].min()
    best_recall = tpr[ok & (fpr == best_fpr)].max()
    out = operating_point(y, s, target_recall=target)
    assert out["fpr"] == pytest.approx(best_fpr) and out["recall"] == pytest.approx(best_recall)
    _agrees_both_ways(y, s, out["threshold"])


def test_operating_point_predicting_nothing_warns_for_precision() -> None:
    with pytest.warns(UndefinedMetricWarning, match="precision"):
        out = operating_point([0, 1], [0.9, 0.1], target_fpr=0.0)
    assert out["recall"] == 0.0 and out["threshold"] > 0.9 and np.isnan(out["precision"])


def test_operating_point_errors_and_undefined() -> None:
    with pytest.raises(ValueError, match="expected exactly one of target_fpr and target_recall"):
        operating_point([0, 1], [0.1, 0.9])
    with pytest.raises(ValueError, match="expected exactly one"):
        operating_point([0, 1], [0.1, 0.9], target_fpr=0.1, target_recall=0.9)
    with pytest.raises(ValueError, match=r"target_fpr: expected a number in \[0, 1\], got 1.5"):
        operating_point([0, 1], [0.1, 0.9], target_fpr=1.5)
    with pytest.warns(UndefinedMetricWarning, match="one class"):
        out = operating_point([1, 1], [0.1, 0.9], target_recall=0.5)
    assert all(np.isnan(v) for v in out.values())


@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
@pytest.mark.parametrize(("y_true", "y_pred"), [
    ([1, 1, 0, 0], [0, 0, 0, 0]),  # nothing predicted: precision 0/0
    ([0, 0, 0, 0], [1, 0, 1, 0]),  # no anomalous image: recall 0/0
    ([0, 0, 0], [0, 0, 0]),  # precision, recall and F1 0/0
    ([1, 1, 0, 0], [1, 0, 1, 0]),  # everything defined
])
def test_zero_division_matches_sklearn(y_true, y_pred, zero_division: float) -> None:
    ref = skm.precision_recall_fscore_support(y_true, y_pred, average="binary", zero_division=zero_division)[:3]
    got = precision_recall_f1(y_true, y_pred, zero_division=zero_division)  # no warning: filterwarnings=error
    np.testing.assert_array_equal([got["precision"], got["recall"], got["f1"]], ref)
    scores = np.asarray(y_pred, dtype=float)
    t = threshold_metrics(y_true, scores, threshold=0.5, zero_division=zero_division)
    np.testing.assert_array_equal([t["precision"], t["recall"], t["f1"]], ref)


def test_zero_division_default_keeps_nan_with_warning() -> None:
    with pytest.warns(UndefinedMetricWarning, match="precision undefined"):
        assert np.isnan(precision_recall_f1([1, 0], [0, 0])["precision"])
    with pytest.warns(UndefinedMetricWarning, match="precision undefined"):
        assert np.isnan(precision_recall_f1([1, 0], [0, 0], zero_division="warn")["precision"])
    for bad in ("nan", -0.5, 2, None):
        with pytest.raises(ValueError, match="zero_division: expected"):
            precision_recall_f1([1, 0], [0, 0], zero_division=bad)


def test_confusion_accumulator_zero_division() -> None:
    from lvkit.eval import ConfusionAccumulator

    acc = ConfusionAccumulator()
    acc.update([1, 0], [0, 0])
    assert acc.compute(zero_division=0.0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
