r"""What two or more ``lvkit.eval`` modules compute alike: sufficient statistics and bootstrap draws.

The one home of the helpers that the metric functions, the streaming accumulators and the
report tables share, so each number is computed one way (argument checks and warnings live
in ``lvkit.eval.checks``):

- calibration bins: :func:`bin_edges`, :func:`bin_ids`, :func:`binned_stats`,
  :func:`curve_from_bins`, :func:`calibration_from_bins` (the formula and the bin convention
  are written in ``lvkit.eval.calibration``);
- ranking and verdicts: :func:`curve_stats`, :func:`auroc_from_curve`, :func:`ap_from_curve`,
  :func:`confusion_stats`, :func:`prf_from_stats`;
- masks: :func:`pair_stats`, :func:`mask_stats_rows`, :func:`overlap_from_stats` (policies in
  ``lvkit.eval.masks``);
- bootstrap: :func:`intervals`, percentile or BCa bounds of several metrics from one set of
  draws (the draws of :func:`~lvkit.eval.bootstrap_ci`);
- run tables: :func:`ok_rows`, :func:`run_arrays`, :func:`check_ci`, :func:`with_ci`,
  :func:`warn_nan`, :func:`warn_small_classes`.

The names are public to the package (siblings import them) and are not re-exported by
``lvkit.eval``. This module imports numpy and ``lvkit.eval.checks`` only; pandas tables are
passed in, never imported.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from lvkit.eval.checks import (
    METHODS,
    NAN,
    CoverageWarning,
    check_choice,
    check_in_range,
    check_positive_int,
    check_zero_division,
    warn_undefined,
)
from lvkit.eval.scores import anomaly_score, confidence_from_score

_Bool = npt.NDArray[np.bool_]
_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]

#: fewer rows than this in a class and the report functions warn :class:`CoverageWarning`
MIN_CLASS_ROWS = 10


# --- calibration bins ---------------------------------------------------------------------------


def bin_edges(confidence: _F64, n_bins: int, strategy: str) -> _F64:
    """Edges ``e_0 .. e_B``: ``b / B`` for ``"uniform"``, the confidences' quantiles for ``"quantile"``."""
    if strategy == "quantile":
        return np.percentile(confidence, np.linspace(0.0, 1.0, n_bins + 1) * 100).astype(np.float64)
    return np.arange(n_bins + 1, dtype=np.float64) / n_bins


def n_bin_slots(edges: _F64, strategy: str) -> int:
    """Number of bins for ``edges``: ``B + 1`` for uniform edges (confidence 1 has its own), else ``B``."""
    return int(edges.size) if strategy == "uniform" else int(edges.size) - 1


def bin_ids(confidence: _F64, edges: _F64, strategy: str) -> npt.NDArray[np.intp]:
    """The bin of each confidence, by the convention of ``lvkit.eval.calibration``.

    Uniform: bin ``b`` holds ``[e_b, e_{b+1})`` and a confidence equal to ``e_B = 1`` is bin
    ``B`` (torchmetrics). Quantile: bin ``b`` holds ``(e_b, e_{b+1}]``, the first bin also
    ``e_0`` (sklearn's ``calibration_curve``).
    """
    if strategy == "uniform":
        return np.searchsorted(edges, confidence, side="right") - 1
    return np.searchsorted(edges[1:-1], confidence, side="left")


def binned_stats(confidence: _F64, correct: _Bool, edges: _F64, strategy: str) -> tuple[_I64, _F64, _F64]:
    """Per-bin sample counts, confidence sums and correct counts (as float) for fixed ``edges``."""
    ids = bin_ids(confidence, edges, strategy)
    m = n_bin_slots(edges, strategy)
    counts = np.bincount(ids, minlength=m).astype(np.int64)
    conf_sums = np.bincount(ids, weights=confidence, minlength=m).astype(np.float64)
    correct_sums = np.bincount(ids, weights=correct.astype(np.float64), minlength=m).astype(np.float64)
    return counts, conf_sums, correct_sums


def curve_from_bins(counts: _I64, conf_sums: _F64, correct_sums: _F64) -> tuple[_F64, _F64, _I64]:
    """``(accuracy, mean confidence, count)`` of the non-empty bins."""
    nonzero = counts > 0
    n = counts[nonzero]
    return correct_sums[nonzero] / n, conf_sums[nonzero] / n, n


def calibration_from_bins(counts: _I64, conf_sums: _F64, correct_sums: _F64, *, norm: str,
                          stacklevel: int = 4) -> float:
    """ECE (``norm="l1"``) or MCE (``"max"``) from per-bin statistics; ``nan`` if no samples."""
    total = int(counts.sum())
    if total == 0:
        warn_undefined("calibration error is undefined with no samples; returning nan", stacklevel=stacklevel)
        return NAN
    acc, conf, n = curve_from_bins(counts, conf_sums, correct_sums)
    gaps = np.abs(acc - conf)
    if norm == "max":
        return float(gaps.max())
    return float(np.sum(gaps * n) / total)


# --- ranking and verdicts -----------------------------------------------------------------------


def curve_stats(yt: _Bool, ys: _F64) -> tuple[_F64, _I64, _I64]:
    """Distinct scores in decreasing order with the tp and fp counts of ``score >= u``.

    The same statistics as sklearn's ``_binary_clf_curve``; index ``k`` predicts every sample
    whose score is at least ``distinct[k]``.
    """
    order = np.argsort(-ys, kind="mergesort")
    s, y = ys[order], yt[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each tie group
    tps = np.cumsum(y, dtype=np.int64)[last]
    fps = (last + 1 - tps).astype(np.int64)
    return s[last], tps, fps


def auroc_from_curve(tps: _I64, fps: _I64) -> float:
    """Trapezoidal area under ROC from :func:`curve_stats` counts (sklearn's ``roc_auc_score``)."""
    if tps.size == 0 or tps[-1] == 0 or fps[-1] == 0:  # one class: nan, as image_auroc
        return NAN
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def ap_from_curve(tps: _I64, fps: _I64) -> float:
    """Step-wise average precision from :func:`curve_stats` counts (sklearn's ``average_precision_score``)."""
    if tps.size == 0 or tps[-1] == 0 or fps[-1] == 0:  # one class: nan, as average_precision
        return NAN
    precision = tps / (tps + fps)
    recall = np.r_[0.0, tps / tps[-1]]
    return float(np.sum(np.diff(recall) * precision))


def confusion_stats(yt: _Bool, yp: _Bool) -> dict[str, int]:
    """``{"tp", "fp", "tn", "fn"}`` counts of verdicts ``yp`` against labels ``yt``."""
    tp = int(np.count_nonzero(yt & yp))
    fp = int(np.count_nonzero(~yt & yp))
    fn = int(np.count_nonzero(yt & ~yp))
    return {"tp": tp, "fp": fp, "tn": int(yt.size) - tp - fp - fn, "fn": fn}


def prf_from_stats(counts: Mapping[str, int], *, zero_division: float | str = "warn",
                   stacklevel: int = 4) -> dict[str, float]:
    """Precision, recall and F1 from confusion counts; a 0/0 ratio is ``zero_division``.

    ``"warn"`` makes it ``nan`` and warns :class:`~lvkit.errors.UndefinedMetricWarning` once;
    a number (0.0, 1.0 or nan) is used as it is, without a warning.
    """
    zd = check_zero_division(zero_division)
    fill = NAN if zd == "warn" else float(zd)
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]

    def ratio(num: int, den: int) -> float:
        return num / den if den else fill

    out = {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn)}
    undefined = [name for name, den in (("precision", tp + fp), ("recall", tp + fn), ("f1", 2 * tp + fp + fn))
                 if den == 0]
    if undefined and zd == "warn":
        warn_undefined(
            f"{', '.join(undefined)} undefined (0/0) for tp={tp}, fp={fp}, fn={fn}; returning nan",
            stacklevel=stacklevel,
        )
    return out


# --- masks --------------------------------------------------------------------------------------


def pair_stats(t: _Bool, p: _Bool) -> tuple[int, int, int, int]:
    """``(intersection, union, true_count, pred_count)`` of one pair of masks."""
    inter = int(np.count_nonzero(t & p))
    n_true, n_pred = int(np.count_nonzero(t)), int(np.count_nonzero(p))
    return inter, n_true + n_pred - inter, n_true, n_pred


def mask_stats_rows(pairs: Sequence[tuple[_Bool, _Bool]]) -> _I64:
    """Rows ``(intersection, union, true_count, pred_count)``, one per image, int64 (n, 4)."""
    return np.array([pair_stats(t, p) for t, p in pairs], dtype=np.int64).reshape(-1, 4)


def _ratios(stats: _I64, metric: str) -> tuple[_F64, _F64]:
    if metric == "iou":
        return stats[:, 0].astype(np.float64), stats[:, 1].astype(np.float64)
    return (2.0 * stats[:, 0]).astype(np.float64), (stats[:, 2] + stats[:, 3]).astype(np.float64)


def overlap_from_stats(stats: _I64, *, metric: str, average: str, empty: str, stacklevel: int = 4) -> float:
    """IoU or Dice of an ``(n, 4)`` statistics array under an ``average`` and ``empty`` policy."""
    num, den = _ratios(stats, metric)
    name = "IoU" if metric == "iou" else "Dice"
    if average == "micro":
        if den.sum() > 0:
            return float(num.sum() / den.sum())
        if empty == "one" and stats.shape[0] > 0:
            return 1.0
        warn_undefined(f"micro {name} is undefined: every mask is empty; returning nan", stacklevel=stacklevel)
        return NAN
    is_empty = den == 0
    values = np.divide(num, den, out=np.full(num.shape, NAN), where=~is_empty)
    if empty == "one":
        values[is_empty] = 1.0
    elif empty == "skip":
        values = values[~is_empty]
    if values.size == 0 or bool(np.all(np.isnan(values))):
        warn_undefined(
            f"macro {name} is undefined: no image has a non-empty mask; returning nan", stacklevel=stacklevel
        )
        return NAN
    return float(np.nanmean(values))


# --- bootstrap ----------------------------------------------------------------------------------


def take(array: Any, rows: npt.NDArray[np.intp]) -> Any:
    """Rows of ``array``: fancy indexing for ndarrays, a list for other sequences (e.g. masks)."""
    if isinstance(array, np.ndarray):
        return array[rows]
    return [array[i] for i in rows]


def _bca_levels(values: _F64, estimate: float, jackknife: _F64, confidence_level: float) -> tuple[float, float]:
    """BCa percentile levels (in [0, 1]) for a bootstrap distribution (Efron 1987, as scipy's BCa)."""
    normal = NormalDist()
    b = values.size
    below = (np.count_nonzero(values < estimate) + np.count_nonzero(values <= estimate)) / (2.0 * b)
    z0 = normal.inv_cdf(min(max(below, 0.5 / b), 1.0 - 0.5 / b))  # clipped: all draws on one side
    jk = jackknife[~np.isnan(jackknife)]
    d = jk.mean() - jk if jk.size else np.zeros(0)
    den = 6.0 * float(np.sum(d**2)) ** 1.5
    accel = float(np.sum(d**3)) / den if den > 0 else 0.0
    alpha = (1.0 - confidence_level) / 2.0
    out = []
    for z_alpha in (normal.inv_cdf(alpha), normal.inv_cdf(1.0 - alpha)):
        shifted = z0 + z_alpha
        out.append(normal.cdf(z0 + shifted / (1.0 - accel * shifted)))
    return out[0], out[1]


def intervals(
    metrics: Callable[..., Mapping[str, float]],
    *arrays: Any,
    n_resamples: int,
    confidence_level: float,
    seed: int,
    method: str = "percentile",
    estimates: Mapping[str, float] | None = None,
) -> dict[str, tuple[float, float]]:
    """Bootstrap bounds of several metrics from one set of resamples.

    ``metrics(*arrays)`` returns a dict of floats. Resample ``k`` draws ``n`` rows with
    ``numpy.random.default_rng(seed).integers(0, n, size=n)`` (the draws of
    :func:`~lvkit.eval.bootstrap_ci`, so each interval equals ``bootstrap_ci`` of that one
    metric); drawing them once keeps the metrics of a report paired. Resamples where a metric
    is ``nan`` are dropped for it; warnings on resamples are silenced. ``method="percentile"``
    takes the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles; ``"bca"`` shifts those
    levels by the bias and the jackknife acceleration (``n`` more evaluations) around ``estimates`` (by
    default ``metrics(*arrays)``). A metric that is ``nan`` on every resample (or, for BCa, on
    the data) gets ``(nan, nan)`` without a warning.
    """
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    jackknife: dict[str, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n_resamples):
            rows = rng.integers(0, n, size=n)
            for name, value in metrics(*(take(a, rows) for a in arrays)).items():
                values.setdefault(name, []).append(float(value))
        if method == "bca":
            estimates = {**metrics(*arrays), **(estimates or {})}
            everything = np.arange(n)
            for i in range(n):
                for name, value in metrics(*(take(a, np.delete(everything, i)) for a in arrays)).items():
                    jackknife.setdefault(name, []).append(float(value))
    alpha = (1.0 - float(confidence_level)) / 2.0
    out: dict[str, tuple[float, float]] = {}
    for name, vals in values.items():
        v = np.asarray(vals, dtype=np.float64)
        v = v[~np.isnan(v)]
        levels = (alpha, 1.0 - alpha)
        if method == "bca" and estimates is not None:
            estimate = float(estimates[name])
            if np.isnan(estimate):
                v = v[:0]
            elif v.size:
                levels = _bca_levels(v, estimate, np.asarray(jackknife[name], dtype=np.float64), confidence_level)
        if v.size == 0:
            out[name] = (NAN, NAN)
            continue
        low, high = np.percentile(v, [100.0 * levels[0], 100.0 * levels[1]])
        out[name] = (float(low), float(high))
    return out


# --- run tables (pandas passed in) ----------------------------------------------------------------


def ok_rows(df: Any) -> Any:
    """The rows of a :func:`lvkit.eval.run` table without an ``error``."""
    return df[df["error"].isna()] if "error" in df.columns else df


def run_arrays(df: Any) -> tuple[_Bool, _Bool, _F64, _F64]:
    """Labels, verdicts, top-label confidences and anomaly scores of the successful rows.

    A table with only one of ``confidence`` and ``anomaly_score`` gets the other from
    :func:`~lvkit.eval.anomaly_score` / :func:`~lvkit.eval.confidence_from_score`.
    """
    ok = ok_rows(df)
    y, pred = ok["label"].to_numpy(bool), ok["is_anomalous"].to_numpy(bool)
    conf = ok["confidence"].to_numpy(float) if "confidence" in ok.columns else None
    score = ok["anomaly_score"].to_numpy(float) if "anomaly_score" in ok.columns else None
    if conf is None:
        if score is None:
            raise ValueError(f"expected a 'confidence' or 'anomaly_score' column, got {list(df.columns)!r}")
        conf = np.asarray(confidence_from_score(pred, score), dtype=np.float64).reshape(-1)
    if score is None:
        score = np.asarray(anomaly_score(pred, conf), dtype=np.float64).reshape(-1)
    return y, pred, conf, score


def check_ci(n_resamples: object, confidence_level: object, ci_method: object = "percentile") -> str:
    """Check the bootstrap options of a report; return ``ci_method``."""
    check_positive_int("n_resamples", n_resamples)
    check_in_range("confidence_level", confidence_level, "(0, 1)")
    return check_choice("ci_method", ci_method, METHODS)


def with_ci(estimates: dict[str, float], fn: Any, arrays: Sequence[Any], *, ci: bool, n_resamples: int,
            confidence_level: float, seed: int, method: str = "percentile") -> dict[str, float]:
    """``estimates`` plus ``<name>_low``/``<name>_high`` for each name ``fn`` returns."""
    out = dict(estimates)
    if not ci:
        return out
    if len(arrays[0]) == 0:  # nothing to resample: every bound is nan
        bounds = dict.fromkeys(fn(*arrays), (NAN, NAN))
    else:
        bounds = intervals(fn, *arrays, n_resamples=n_resamples, confidence_level=confidence_level, seed=seed,
                           method=method, estimates=estimates)
    for name, (low, high) in bounds.items():
        out[f"{name}_low"], out[f"{name}_high"] = low, high
    return out


def warn_nan(report: str, values: Mapping[str, Any], names: Sequence[str]) -> None:
    """One :class:`~lvkit.errors.UndefinedMetricWarning` naming the ``names`` that are nan."""
    bad = [k for k in names if k in values and isinstance(values[k], float) and np.isnan(values[k])]
    if bad:
        warn_undefined(f"{report}: {', '.join(bad)} undefined for this table; nan there", stacklevel=4)


def warn_small_classes(report: str, y: _Bool, *, ci: bool, confidence_level: float, method: str) -> None:
    """Warn :class:`~lvkit.eval.CoverageWarning` when bootstrap bounds rest on a class of few rows."""
    n_pos = int(np.count_nonzero(y))
    n_neg = int(y.size) - n_pos
    if not ci or y.size == 0 or min(n_pos, n_neg) >= MIN_CLASS_ROWS:
        return
    advice = ("ci_method='bca' covers better for scores such as AUROC" if method == "percentile"
              else "BCa helps scores such as AUROC")
    warnings.warn(
        f"{report}: the bootstrap intervals rest on {n_pos} anomalous and {n_neg} normal rows (fewer than "
        f"{MIN_CLASS_ROWS} of a class) and are likely to cover less than {confidence_level:.0%} "
        f"(see lvkit.eval.bootstrap_ci); {advice}, rates such as recall stay below it",
        CoverageWarning,
        stacklevel=3,
    )
