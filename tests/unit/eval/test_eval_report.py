"""Image-level and calibration tables against sklearn / torchmetrics / bootstrap_ci."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve
from torchmetrics.classification import BinaryCalibrationError

from lvkit.errors import UndefinedMetricWarning
from lvkit.eval import (
    CoverageWarning,
    anomaly_score,
    bootstrap_ci,
    calibration_error,
    calibration_report,
    ci_frame,
    fit_calibrator,
    image_auroc,
    image_metrics,
    operating_point,
    operating_points,
    recalibration_report,
    split_for_calibration,
)
from lvkit.eval.scores import confidence_from_score


def table(y: np.ndarray, score: np.ndarray, pred: np.ndarray | None = None, *, errors: int = 0) -> pd.DataFrame:
    pred = score >= 0.5 if pred is None else pred
    df = pd.DataFrame({
        "path": [f"{i}.png" for i in range(y.size)], "label": y.astype(int), "is_anomalous": pred,
        "anomaly_score": score, "confidence": np.where(pred, score, 1 - score), "error": None,
    })
    if errors:  # error rows carry no result and must be left out
        bad = pd.DataFrame(
            {"path": [f"e{i}.png" for i in range(errors)], "label": 1, "error": "ValidationException: x"}
        )
        df = pd.concat([df, bad], ignore_index=True)
    return df


@pytest.fixture
def run_table(scored) -> pd.DataFrame:
    y, s = scored
    return table(y, s, errors=3)


def test_image_metrics_match_sklearn(run_table, scored) -> None:
    y, s = scored
    pred = s >= 0.5
    m = image_metrics(run_table, ci=False)
    assert m["n"] == 200 and m["n_anomalous"] == y.sum()
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred), abs=1e-12)
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred), abs=1e-12)
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["fpr"] == pytest.approx(fp / (fp + tn))
    assert not any(k.endswith("_low") for k in m)


def test_image_metrics_threshold_and_intervals(run_table, scored) -> None:
    y, s = scored
    m = image_metrics(run_table, threshold=0.6, n_resamples=100, seed=3)
    assert m["threshold"] == 0.6
    assert m["threshold_recall"] == pytest.approx(skm.recall_score(y, s >= 0.6))
    assert m["threshold_precision"] == pytest.approx(skm.precision_score(y, s >= 0.6))
    # the intervals are bootstrap_ci's with the same seed (same draws), for every headline number
    for name, fn in [("auroc", image_auroc), ("recall", lambda yy, ss: float(np.mean(ss[yy] >= 0.5)))]:
        _, low, high = bootstrap_ci(fn, y, s, n_resamples=100, seed=3)
        assert (m[f"{name}_low"], m[f"{name}_high"]) == pytest.approx((low, high), abs=1e-12)
    for name in ("auroc", "average_precision", "precision", "recall", "f1", "fpr", "accuracy", "threshold_f1"):
        assert m[f"{name}_low"] <= m[name] <= m[f"{name}_high"], name
    assert image_metrics(run_table, n_resamples=50, seed=1) == image_metrics(run_table, n_resamples=50, seed=1)


def test_image_metrics_undefined_warns_once() -> None:
    df = table(np.zeros(6, bool), np.linspace(0.1, 0.9, 6))
    with pytest.warns(UserWarning) as record:
        m = image_metrics(df)
    assert [w.category for w in record] == [UndefinedMetricWarning, CoverageWarning]  # 0 anomalous rows
    assert "auroc, average_precision" in str(record[0].message)
    assert np.isnan(m["auroc"]) and np.isnan(m["auroc_low"]) and np.isnan(m["recall"]) and m["fpr"] == 0.5
    with pytest.raises(ValueError, match="n_resamples"):
        image_metrics(df, n_resamples=0)


def test_operating_points_match_the_array_functions(run_table, scored) -> None:
    y, s = scored
    t = operating_points(run_table, target_fpr=[0.1], target_recall=[0.9], thresholds=[0.5], n_resamples=100)
    assert list(t.index) == ["served", "best_f1", "fpr<=0.1", "recall>=0.9", "score>=0.5"]
    for name, kw in [("fpr<=0.1", {"target_fpr": 0.1}), ("recall>=0.9", {"target_recall": 0.9})]:
        ref = operating_point(y, s, **kw)
        for key in ("threshold", "fpr", "recall", "precision"):
            assert t.loc[name, key] == pytest.approx(ref[key], abs=1e-12)
    assert t.loc["fpr<=0.1", "fpr"] <= 0.1 and t.loc["recall>=0.9", "recall"] >= 0.9
    # the served verdict here is score >= 0.5
    cols = ["precision", "recall", "tp", "fp"]
    assert t.loc["served", cols].tolist() == t.loc["score>=0.5", cols].tolist()
    assert (t["recall_low"] <= t["recall"]).all() and (t["recall"] <= t["recall_high"]).all()


def test_operating_points_warns_where_nothing_is_predicted() -> None:
    y = np.array([0, 0, 1, 1]).astype(bool)
    df = table(y, np.array([0.9, 0.1, 0.8, 0.2]))
    with pytest.warns(UndefinedMetricWarning, match="precision at fpr<=0"):
        t = operating_points(df, target_fpr=[0.0], target_recall=[], ci=False)
    assert np.isnan(t.loc["fpr<=0", "precision"]) and t.loc["fpr<=0", "recall"] == 0.0


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_calibration_report_matches_references(run_table, scored, strategy: str) -> None:
    y, s = scored
    pred = s >= 0.5
    conf = np.where(pred, s, 1 - s)
    correct = pred == y
    r = calibration_report(run_table, n_bins=8, strategy=strategy, n_resamples=100)
    metric = BinaryCalibrationError(n_bins=8, norm="l1")
    ref = float(metric(torch.tensor(conf, dtype=torch.float64), torch.tensor(correct, dtype=torch.long)))
    assert r["ece_uniform"] == pytest.approx(ref, abs=1e-6)
    assert r["ece_quantile"] == pytest.approx(
        calibration_error(conf, correct, n_bins=8, strategy="quantile"), abs=1e-12
    )
    assert r["mce"] == pytest.approx(
        calibration_error(conf, correct, n_bins=8, strategy=strategy, norm="max"), abs=1e-12
    )
    assert r["brier"] == pytest.approx(skm.brier_score_loss(y, s), abs=1e-12)
    assert r["nll"] == pytest.approx(skm.log_loss(y, s), abs=1e-9)
    assert r["accuracy"] == pytest.approx(correct.mean()) and r["mean_confidence"] == pytest.approx(conf.mean())
    if strategy == "quantile":
        ref_true, ref_pred = calibration_curve(correct, conf, n_bins=8, strategy=strategy)
    else:  # confidences rounded to 2 decimals sit on edges k/8, where sklearn closes bins on the right
        ids = np.minimum(np.floor(conf * 8).astype(int), 8)  # [k/8, (k+1)/8), confidence 1 alone
        ref_true = np.array([correct[ids == b].mean() for b in np.unique(ids)])
        ref_pred = np.array([conf[ids == b].mean() for b in np.unique(ids)])
    np.testing.assert_allclose(r["reliability"]["accuracy"], ref_true, atol=1e-9)
    np.testing.assert_allclose(r["reliability"]["confidence"], ref_pred, atol=1e-9)
    assert r["reliability"]["count"].sum() == 200
    _, low, high = bootstrap_ci(lambda yy, ss: skm.brier_score_loss(yy, ss), y, s, n_resamples=100, seed=0)
    assert (r["brier_low"], r["brier_high"]) == pytest.approx((low, high), abs=1e-12)
    frame = ci_frame(r)
    assert list(frame.columns) == ["estimate", "low", "high"] and "reliability" not in frame.index
    assert frame.loc["ece_uniform", "low"] == r["ece_uniform_low"]


def test_calibration_report_empty_table_warns() -> None:
    df = table(np.array([True]), np.array([0.7]))
    df["error"] = "InternalServerException: boom"
    with pytest.warns(UndefinedMetricWarning, match="calibration_report"):
        r = calibration_report(df)
    assert r["n"] == 0 and np.isnan(r["ece_uniform"]) and np.isnan(r["brier_high"]) and r["reliability"].empty


def test_split_for_calibration_is_stratified_disjoint_and_seeded(run_table) -> None:
    cal, test = split_for_calibration(run_table, fraction=0.3, seed=4)
    assert set(cal["path"]).isdisjoint(test["path"]) and len(cal) + len(test) == len(run_table)
    for label in (0, 1):
        n = int((run_table["label"] == label).sum())
        assert int((cal["label"] == label).sum()) == round(0.3 * n)
    again, _ = split_for_calibration(run_table, fraction=0.3, seed=4)
    assert again.index.equals(cal.index) and list(cal.index) == sorted(cal.index)
    tiny = pd.DataFrame({"path": ["a", "b", "c"], "label": [0, 0, 1]})
    small_cal, small_test = split_for_calibration(tiny, fraction=0.01)
    assert len(small_cal) == 1 and (small_test["label"] == 1).any()  # at least one, at most n - 1
    with pytest.raises(ValueError, match="fraction"):
        split_for_calibration(tiny, fraction=1.0)


def test_recalibration_report_fits_on_cal_and_scores_on_test(rng) -> None:
    z = rng.normal(0, 1.5, 2000)
    y = rng.random(2000) < 1 / (1 + np.exp(-z))  # P(anomaly) = sigmoid(z)
    s = 1 / (1 + np.exp(-3 * z))  # served: overconfident
    df = table(y, s)
    cal, test = split_for_calibration(df, seed=0)
    t = recalibration_report(cal, test, n_resamples=20)
    assert list(t.index) == ["uncalibrated", "platt", "isotonic", "temperature", "beta"]
    assert t.loc["uncalibrated", "calibration"] is None
    yt, st = test["label"].to_numpy(bool), test["anomaly_score"].to_numpy(float)
    pred = test["is_anomalous"].to_numpy(bool)
    assert t.loc["uncalibrated", "brier"] == pytest.approx(skm.brier_score_loss(yt, st), abs=1e-12)
    assert t.loc["uncalibrated", "recall"] == pytest.approx(skm.recall_score(yt, pred), abs=1e-12)
    for kind in ("platt", "isotonic", "temperature", "beta"):
        fitted = fit_calibrator(kind, cal["anomaly_score"], cal["label"])
        assert t.loc[kind, "calibration"] == fitted.to_dict()
        p = fitted.predict(st)
        assert t.loc[kind, "brier"] == pytest.approx(skm.brier_score_loss(yt, p), abs=1e-12)
        served = p > 0.5  # attached, the recalibrated P(anomaly) decides (issue 12, item 3)
        conf = confidence_from_score(served, p)
        assert (conf >= 0.5).all()
        assert t.loc[kind, "ece_uniform"] == pytest.approx(calibration_error(conf, served == yt), abs=1e-12)
        precision, recall, f1, _ = skm.precision_recall_fscore_support(yt, served, average="binary", zero_division=0)
        assert (t.loc[kind, "precision"], t.loc[kind, "recall"], t.loc[kind, "f1"]) == pytest.approx(
            (precision, recall, f1), abs=1e-12)
        if kind != "isotonic":  # the parametric maps contain the truth here
            for metric in ("brier", "nll", "ece_uniform"):
                assert t.loc[kind, metric] < t.loc["uncalibrated", metric], (kind, metric)
    # monotone maps keep the ranking (isotonic may only merge ties)
    assert t.loc["platt", "auroc"] == pytest.approx(t.loc["uncalibrated", "auroc"], abs=1e-12)
    assert t.loc["platt", "brier_low"] <= t.loc["platt", "brier"] <= t.loc["platt", "brier_high"]
    with pytest.raises(ValueError, match="disjoint"):
        recalibration_report(cal, df)
    with pytest.raises(ValueError, match="both classes"):
        recalibration_report(cal[cal["label"] == 0], test)


def test_anomaly_score_is_derived_when_missing() -> None:
    df = pd.DataFrame({"label": [0, 1], "is_anomalous": [False, True], "confidence": [0.8, 0.9], "error": None})
    m = image_metrics(df, ci=False)
    assert m["auroc"] == 1.0
    assert calibration_report(df, ci=False)["brier"] == pytest.approx(np.mean([0.2**2, 0.1**2]))
    assert anomaly_score(False, 0.8) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="'confidence' or 'anomaly_score'"):
        image_metrics(df.drop(columns=["confidence"]))


def test_calibration_report_shows_a_shifted_p_anomaly() -> None:
    # P(anomaly) served 0.1 too high for every image: the top-label ECE hides most of it
    rng = np.random.default_rng(0)
    q = rng.uniform(0.0, 0.9, 5000)
    y = rng.random(5000) < q
    s = q + 0.1
    r = calibration_report(table(y, s), ci=False)
    metric = BinaryCalibrationError(n_bins=10, norm="l1")
    ref = float(metric(torch.tensor(s, dtype=torch.float64), torch.tensor(y, dtype=torch.long)))
    assert r["ece_p_anomaly"] == pytest.approx(ref, abs=1e-12)
    assert r["ece_p_anomaly"] == pytest.approx(0.1, abs=0.01) and r["ece_uniform"] < 0.03
    keys = [k for k in r if k != "reliability"]
    assert keys[keys.index("ece_quantile") + 1] == "ece_p_anomaly"  # beside the top-label ECEs, old keys kept
    assert {"accuracy", "mean_confidence", "ece_uniform", "ece_quantile", "mce", "brier", "nll"} <= set(keys)
    cal, test = split_for_calibration(table(y, s), seed=0)
    assert "ece_p_anomaly_low" in recalibration_report(cal, test, kinds=["platt"], n_resamples=20).columns
