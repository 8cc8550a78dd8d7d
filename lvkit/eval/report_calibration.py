"""Calibration tables from a :func:`lvkit.eval.run` DataFrame: before and after recalibration.

Thin shells over the binned statistics of ``lvkit.eval.base`` (the bins of
:func:`~lvkit.eval.calibration_error`) and the recalibrators, with the report plumbing of
``lvkit.eval.base`` (intervals named ``<metric>_low``/``<metric>_high``, one warning for
undefined numbers). pandas is imported inside the functions. Rows with an ``error`` are left
out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.eval.base import (
    auroc_from_curve,
    bin_edges,
    binned_stats,
    calibration_from_bins,
    check_ci,
    curve_from_bins,
    curve_stats,
    ok_rows,
    run_arrays,
    warn_nan,
    warn_small_classes,
    with_ci,
)
from lvkit.eval.calibration import fit_calibrator
from lvkit.eval.checks import NAN, STRATEGIES, check_choice, check_in_range, check_positive_int
from lvkit.eval.ranking import precision_recall_f1
from lvkit.eval.scores import confidence_from_score

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["calibration_report", "recalibration_report", "split_for_calibration"]

_CALIBRATION = ("accuracy", "mean_confidence", "ece_uniform", "ece_quantile", "ece_p_anomaly", "mce", "brier", "nll")
_EPS = 1e-15  # log-loss clipping, as lvkit.eval.log_loss


def _calibration_stats(y: Any, pred: Any, conf: Any, p_anomaly: Any, *, n_bins: int,
                       strategy: str) -> dict[str, float]:
    correct = pred == y
    if y.size == 0:
        return dict.fromkeys(_CALIBRATION, NAN)
    out = {"accuracy": float(correct.mean()), "mean_confidence": float(conf.mean())}
    for s in ("uniform", "quantile"):
        out[f"ece_{s}"] = calibration_from_bins(*binned_stats(conf, correct, bin_edges(conf, n_bins, s), s), norm="l1")
    # binary calibration of P(anomaly): (anomaly score, label) pairs, uniform bins
    out["ece_p_anomaly"] = calibration_from_bins(
        *binned_stats(p_anomaly, y, bin_edges(p_anomaly, n_bins, "uniform"), "uniform"), norm="l1")
    out["mce"] = calibration_from_bins(*binned_stats(conf, correct, bin_edges(conf, n_bins, strategy), strategy),
                                       norm="max")
    out["brier"] = float(np.mean((p_anomaly - y) ** 2))
    out["nll"] = float(-np.mean(np.log(np.maximum(np.where(y, p_anomaly, 1.0 - p_anomaly), _EPS))))
    return out


def _check_calibration_options(n_bins: object, strategy: object) -> tuple[int, str]:
    return check_positive_int("n_bins", n_bins), check_choice("strategy", strategy, STRATEGIES)


def calibration_report(
    df: pd.DataFrame,
    *,
    n_bins: int = 10,
    strategy: str = "uniform",
    ci: bool = True,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    ci_method: str = "percentile",
) -> dict[str, Any]:
    """Calibration of the served ``Confidence`` and of P(anomaly): ECE, MCE, Brier, NLL, reliability data.

    ECE and MCE are :func:`~lvkit.eval.calibration_error` on ``(confidence, is_anomalous ==
    label)``, with equal-width (``ece_uniform``) and equal-mass (``ece_quantile``) bins: the
    top-label calibration of the verdict's confidence. ``ece_p_anomaly`` is the same
    equal-width ECE on ``(anomaly_score, label)``: the binary calibration of P(anomaly)
    (torchmetrics' ``binary_calibration_error``). The two differ: a P(anomaly) shifted up for
    every image raises the confidence of anomalous verdicts and lowers that of normal ones, so
    most of the shift cancels in the top-label ECE (P(anomaly) 0.1 too high on 20,000
    simulated images: ``ece_uniform`` 0.015, ``ece_p_anomaly`` 0.100).
    The Brier score and the negative log-likelihood score the anomaly score as P(anomaly)
    (:func:`~lvkit.eval.brier_score_loss`, :func:`~lvkit.eval.log_loss`).

    Parameters
    ----------
    df : DataFrame
        From :func:`lvkit.eval.run`.
    n_bins : int, default 10
        Bins of the ECEs, the MCE and the reliability data.
    strategy : {"uniform", "quantile"}, default "uniform"
        Bins of the MCE and of the reliability data.
    ci : bool, default True
        Add ``<name>_low``/``<name>_high`` bootstrap bounds.
    n_resamples, confidence_level, seed, ci_method
        As :func:`~lvkit.eval.image_metrics` (with its :class:`~lvkit.eval.CoverageWarning`).

    Returns
    -------
    dict
        Floats ``n, accuracy, mean_confidence, ece_uniform, ece_quantile, ece_p_anomaly, mce,
        brier, nll`` (and their bounds), and ``reliability``: a DataFrame with one row per non-empty bin and
        columns ``confidence`` (mean), ``accuracy`` and ``count``
        (:func:`~lvkit.eval.reliability_curve`), ready for
        :func:`lvkit.eval.plots.reliability_diagram`.

    Raises
    ------
    ValueError
        If an option is invalid.

    See Also
    --------
    recalibration_report : Before and after a fitted recalibrator.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"label": [0, 1, 1, 1, 0], "is_anomalous": [False, True, True, True, True],
    ...                    "confidence": [0.65, 0.95, 0.95, 0.95, 0.95], "error": [None] * 5})
    >>> df["anomaly_score"] = [0.35, 0.95, 0.95, 0.95, 0.95]

    Bins (0.6, 0.7] (one right verdict) and (0.9, 1] (three of four right): ECE = 1/5 * |1 - 0.65|
    + 4/5 * |0.75 - 0.95| = 0.07 + 0.16; Brier = (0.35^2 + 3 * 0.05^2 + 0.95^2) / 5:

    >>> r = calibration_report(df, ci=False)
    >>> round(r["ece_uniform"], 6), round(r["brier"], 6)
    (0.23, 0.2065)

    P(anomaly) 0.35 (normal) and 0.95 (three anomalous, one normal): ECE = 1/5 * |0 - 0.35| +
    4/5 * |0.75 - 0.95|:

    >>> round(r["ece_p_anomaly"], 6)
    0.23
    >>> r["reliability"]
       confidence  accuracy  count
    0        0.65      1.00      1
    1        0.95      0.75      4
    """
    import pandas as pd

    n_bins, strategy = _check_calibration_options(n_bins, strategy)
    method = check_ci(n_resamples, confidence_level, ci_method)
    y, pred, conf, score = run_arrays(df)

    def stats(yy: Any, pp: Any, cc: Any, ss: Any) -> dict[str, float]:
        return _calibration_stats(yy, pp, cc, ss, n_bins=n_bins, strategy=strategy)

    out: dict[str, Any] = {"n": float(y.size), **stats(y, pred, conf, score)}
    warn_nan("calibration_report", out, _CALIBRATION)
    warn_small_classes("calibration_report", y, ci=ci, confidence_level=confidence_level, method=method)
    out = with_ci(out, stats, [y, pred, conf, score], ci=ci, n_resamples=n_resamples,
                  confidence_level=confidence_level, seed=seed, method=method)
    if y.size:
        acc, mean_conf, counts = curve_from_bins(*binned_stats(conf, pred == y, bin_edges(conf, n_bins, strategy),
                                                               strategy))
    else:
        acc, mean_conf, counts = np.empty(0), np.empty(0), np.empty(0, np.int64)
    out["reliability"] = pd.DataFrame({"confidence": mean_conf, "accuracy": acc, "count": counts})
    return out


def split_for_calibration(df: pd.DataFrame, *, fraction: float = 0.5,
                          seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a run table into a calibration part and a disjoint test part, stratified by label.

    Within each label, a seeded random ``round(fraction * n)`` rows go to the calibration part,
    at least one and at most ``n - 1`` when the label has two rows or more, so both parts hold
    both classes whenever the table has two of each. Rows keep their order.

    Parameters
    ----------
    df : DataFrame
        From :func:`lvkit.eval.run`.
    fraction : float in (0, 1), default 0.5
        Share of each label that goes to the calibration part.
    seed : int, default 0
        Seed of the shuffle.

    Returns
    -------
    calibration, test : DataFrame
        Disjoint, together the whole of ``df``.

    Raises
    ------
    ValueError
        If ``fraction`` is outside (0, 1).

    See Also
    --------
    recalibration_report

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"path": list("abcdefgh"), "label": [0, 0, 0, 0, 0, 0, 1, 1]})
    >>> cal, test = split_for_calibration(df, fraction=0.5, seed=0)
    >>> cal["label"].tolist(), test["label"].tolist()
    ([0, 0, 0, 1], [0, 0, 0, 1])
    """
    frac = check_in_range("fraction", fraction, "(0, 1)")
    rng = np.random.default_rng(seed)
    labels = df["label"].to_numpy()
    take = np.zeros(len(df), bool)
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        k = int(round(frac * rows.size))
        if rows.size >= 2:
            k = min(max(k, 1), rows.size - 1)
        take[rng.permutation(rows)[:k]] = True
    return df[take], df[~take]


def recalibration_report(
    df_cal: pd.DataFrame,
    df_test: pd.DataFrame,
    *,
    kinds: Sequence[str] = ("platt", "isotonic", "temperature", "beta"),
    n_bins: int = 10,
    strategy: str = "uniform",
    ci: bool = True,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    ci_method: str = "percentile",
) -> pd.DataFrame:
    """Fit recalibrators on one split and score them on a disjoint one, before and after.

    Each recalibrator (:func:`~lvkit.eval.fit_calibrator`) maps the anomaly score to a
    calibrated P(anomaly) ``p`` and is scored as a model version serves it once attached
    (``lvkit.backends.recalibrated``): the verdict is ``p > 0.5`` and the confidence
    ``max(p, 1 - p)``, so the operating point moves; ``precision``, ``recall`` and ``f1`` give
    it (0 where a ratio is 0/0, as DescribeModel's Performance). All rows share the bootstrap
    resamples of the test split, so they compare pairwise.

    Parameters
    ----------
    df_cal : DataFrame
        The calibration split (both labels needed), e.g. from :func:`split_for_calibration`.
    df_test : DataFrame
        The test split; no ``path`` may appear in both.
    kinds : sequence of str, default ("platt", "isotonic", "temperature", "beta")
        Recalibrators to fit (keys of :data:`~lvkit.eval.CALIBRATORS`).
    n_bins, strategy : int, str
        As :func:`calibration_report`.
    ci, n_resamples, confidence_level, seed, ci_method
        As :func:`calibration_report` (the class counts of the test split decide the
        :class:`~lvkit.eval.CoverageWarning`).

    Returns
    -------
    DataFrame
        Index ``uncalibrated`` then each kind; the float columns of :func:`calibration_report`
        (and bounds), ``auroc`` on the recalibrated scores, ``precision``, ``recall`` and ``f1``
        at the row's verdicts, and ``calibration``: the fitted
        recalibrator's ``to_dict()`` (None for ``uncalibrated``), which
        ``LookoutVisionService.attach_calibration`` takes.

    Raises
    ------
    ValueError
        If the splits share a path, the calibration split has one class only, or an option is
        invalid.

    See Also
    --------
    calibration_report, split_for_calibration

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random(200) < 0.5
    >>> score = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.2, 200), 0, 1)
    >>> pred = score > 0.5
    >>> df = pd.DataFrame({"path": [f"{i}.png" for i in range(200)], "label": y.astype(int),
    ...                    "is_anomalous": pred, "anomaly_score": score,
    ...                    "confidence": np.where(pred, score, 1 - score), "error": None})
    >>> cal, test = split_for_calibration(df, seed=0)
    >>> table = recalibration_report(cal, test, kinds=["platt"], ci=False)
    >>> list(table.index), table.loc["platt", "calibration"]["kind"]
    (['uncalibrated', 'platt'], 'platt')
    >>> bool(table.loc["platt", "brier"] < table.loc["uncalibrated", "brier"])
    True
    """
    import pandas as pd

    n_bins, strategy = _check_calibration_options(n_bins, strategy)
    method = check_ci(n_resamples, confidence_level, ci_method)
    if "path" in df_cal.columns and "path" in df_test.columns:
        shared = set(ok_rows(df_cal)["path"]) & set(ok_rows(df_test)["path"])
        if shared:
            raise ValueError(f"expected disjoint calibration and test splits, got {len(shared)} shared path(s), "
                             f"e.g. {sorted(shared)[0]!r}")
    y_cal, _, _, s_cal = run_arrays(df_cal)
    y, pred, conf, score = run_arrays(df_test)
    warn_small_classes("recalibration_report", y, ci=ci, confidence_level=confidence_level, method=method)

    def stats(yy: Any, pp: Any, cc: Any, ss: Any) -> dict[str, float]:
        out = _calibration_stats(yy, pp, cc, ss, n_bins=n_bins, strategy=strategy)
        if yy.size:
            _, tps, fps = curve_stats(yy, ss)
            out["auroc"] = auroc_from_curve(tps, fps)
        else:
            out["auroc"] = NAN
        out.update(precision_recall_f1(yy, pp, zero_division=0.0) if yy.size else
                   {"precision": NAN, "recall": NAN, "f1": NAN})
        return out

    rows = []
    for kind in ["uncalibrated", *kinds]:
        if kind == "uncalibrated":
            p, v, c, params = score, pred, conf, None
        else:
            cal = fit_calibrator(kind, s_cal, y_cal)
            p = cal.predict(score)
            v = p > 0.5  # the verdict as served once attached
            c = np.asarray(confidence_from_score(v, p), dtype=np.float64)
            params = cal.to_dict()
        row: dict[str, Any] = {"calibrator": kind, **stats(y, v, c, p)}
        warn_nan(f"recalibration_report ({kind})", row, [*_CALIBRATION, "auroc"])
        row = with_ci(row, stats, [y, v, c, p], ci=ci, n_resamples=n_resamples,
                      confidence_level=confidence_level, seed=seed, method=method)
        rows.append({**row, "calibration": params})
    return pd.DataFrame(rows).set_index("calibrator")
