"""Headline tables from a :func:`lvkit.eval.run` DataFrame: image metrics and operating points.

Thin shells over the pure metric functions (``ranking``, ``bootstrap``); pandas is imported
inside the functions. Rows with an ``error`` are left out of every metric. The calibration
and mask tables live in ``lvkit.eval.report_calibration`` and ``lvkit.eval.report_masks``;
the plumbing all three share (run-table arrays, bootstrap bounds, warnings) is in
``lvkit.eval.base``.

Every headline number comes with a seeded bootstrap interval (``ci=True``): the rows of the
table are resampled ``n_resamples`` times with the draws of :func:`~lvkit.eval.bootstrap_ci`
(same ``seed``, same intervals), and all numbers of one report share those resamples. The
bounds are percentiles by default (``ci_method="percentile"``) or BCa (``"bca"``); with fewer
than 10 rows of a class the report warns a :class:`~lvkit.eval.CoverageWarning`, as such
intervals cover less than their level (numbers in :func:`~lvkit.eval.bootstrap_ci`). The dict
reports name the bounds ``<metric>_low`` and ``<metric>_high``; :func:`ci_frame` turns them
into an ``estimate, low, high`` table. A threshold or an operating point is chosen once on the
whole table; its interval covers the rates at that fixed threshold.

An estimate that is undefined for the table (one class only, nothing predicted) is ``nan``
and the report warns one :class:`~lvkit.errors.UndefinedMetricWarning` naming the undefined
numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.eval.base import (
    ap_from_curve,
    auroc_from_curve,
    check_ci,
    confusion_stats,
    curve_stats,
    run_arrays,
    warn_nan,
    warn_small_classes,
    with_ci,
)
from lvkit.eval.checks import NAN, check_real, warn_undefined
from lvkit.eval.ranking import best_f1_threshold, operating_point

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ci_frame", "image_metrics", "operating_points"]

_RATES = ("precision", "recall", "f1", "fpr", "accuracy")


# --- rates from counts ---------------------------------------------------------------------------


def _rates(counts: Mapping[str, int]) -> dict[str, float]:
    """Precision, recall, F1, FPR, accuracy from confusion counts; nan where 0/0, no warning."""
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]

    def ratio(num: int, den: int) -> float:
        return num / den if den else NAN

    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "fpr": ratio(fp, fp + tn), "accuracy": ratio(tp + tn, tp + fp + tn + fn)}


# --- image level ------------------------------------------------------------------------------------


def _image_stats(y: Any, pred: Any, score: Any, threshold: float | None) -> dict[str, float]:
    if y.size:
        _, tps, fps = curve_stats(y, score)
        out = {"auroc": auroc_from_curve(tps, fps), "average_precision": ap_from_curve(tps, fps)}
    else:
        out = {"auroc": NAN, "average_precision": NAN}
    out.update(_rates(confusion_stats(y, pred)))
    if threshold is not None:
        out.update({f"threshold_{k}": v for k, v in _rates(confusion_stats(y, score >= threshold)).items()})
    return out


def image_metrics(
    df: pd.DataFrame,
    *,
    threshold: float | None = None,
    ci: bool = True,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    ci_method: str = "percentile",
) -> dict[str, float]:
    """Image-level AUROC, AP and the verdict's precision/recall/F1, with bootstrap intervals.

    AUROC and average precision rank the rows by ``anomaly_score`` (as
    :func:`~lvkit.eval.image_auroc` and :func:`~lvkit.eval.average_precision`). Precision,
    recall, F1, false-positive rate and accuracy are those of the verdict the model served
    (``is_anomalous``) and, with ``threshold``, of ``anomaly_score >= threshold``.

    Parameters
    ----------
    df : DataFrame
        From :func:`lvkit.eval.run` (columns ``label``, ``is_anomalous``, ``anomaly_score``,
        ``error``).
    threshold : float, optional
        Also report the rates at this threshold on the anomaly score (keys ``threshold_*``).
    ci : bool, default True
        Add ``<name>_low``/``<name>_high`` bootstrap bounds for every rate and score.
    n_resamples : int, default 1000
        Bootstrap resamples.
    confidence_level : float in (0, 1), default 0.95
        Interval coverage.
    seed : int, default 0
        Bootstrap seed.
    ci_method : {"percentile", "bca"}, default "percentile"
        How the bounds are read from the resamples (:func:`~lvkit.eval.bootstrap_ci`'s
        ``method``); BCa covers better with few anomalous images.

    Returns
    -------
    dict of str to float
        ``n, n_anomalous, auroc, average_precision, precision, recall, f1, fpr, accuracy, tp,
        fp, tn, fn`` (plus ``threshold`` and ``threshold_<rate>``), and the bounds. Undefined
        numbers are ``nan`` with one :class:`~lvkit.errors.UndefinedMetricWarning`; bounds
        from fewer than 10 rows of a class come with a :class:`~lvkit.eval.CoverageWarning`.

    Raises
    ------
    ValueError
        If an option is invalid.

    See Also
    --------
    operating_points : Thresholds for an FPR budget, a recall target or the best F1.
    ci_frame : The result as an ``estimate, low, high`` table.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"label": [0, 0, 1, 1], "anomaly_score": [0.1, 0.6, 0.7, 0.9],
    ...                    "is_anomalous": [False, True, True, True], "error": [None] * 4})
    >>> m = image_metrics(df, ci=False)
    >>> m["auroc"], m["precision"], m["recall"]
    (1.0, 0.6666666666666666, 1.0)
    >>> image_metrics(df, threshold=0.65, ci=False)["threshold_precision"]
    1.0

    Bootstrap bounds; 20 rows of each class, so no :class:`~lvkit.eval.CoverageWarning`:

    >>> big = pd.concat([df] * 10, ignore_index=True)
    >>> m = image_metrics(big, n_resamples=200)
    >>> bool(m["precision_low"] <= m["precision"] <= m["precision_high"])
    True
    """
    method = check_ci(n_resamples, confidence_level, ci_method)
    t = None if threshold is None else check_real("threshold", threshold)
    y, pred, _, score = run_arrays(df)

    def stats(yy: Any, pp: Any, ss: Any) -> dict[str, float]:
        return _image_stats(yy, pp, ss, t)

    estimates = stats(y, pred, score)
    head: dict[str, float] = {"n": float(y.size), "n_anomalous": float(y.sum())}
    counts = {k: float(v) for k, v in confusion_stats(y, pred).items()}
    out = {**head, **estimates, **counts}
    if t is not None:
        out["threshold"] = t
    warn_nan("image_metrics", out, list(estimates))
    warn_small_classes("image_metrics", y, ci=ci, confidence_level=confidence_level, method=method)
    return with_ci(out, stats, [y, pred, score], ci=ci, n_resamples=n_resamples,
                   confidence_level=confidence_level, seed=seed, method=method)


def operating_points(
    df: pd.DataFrame,
    *,
    target_fpr: Sequence[float] = (0.01, 0.05, 0.1),
    target_recall: Sequence[float] = (0.9, 0.95, 0.99),
    thresholds: Sequence[float] = (),
    ci: bool = True,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    ci_method: str = "percentile",
) -> pd.DataFrame:
    """Thresholds on the anomaly score for FPR budgets, recall targets and the best F1.

    Rows: ``served`` (the model's own verdicts, no threshold), ``best_f1``
    (:func:`~lvkit.eval.best_f1_threshold`), ``fpr<=x`` and ``recall>=x``
    (:func:`~lvkit.eval.operating_point`) and ``score>=t`` for each given threshold. Each
    threshold is chosen on the whole table; the intervals are those of the rates at that
    fixed threshold.

    Parameters
    ----------
    df : DataFrame
        From :func:`lvkit.eval.run`.
    target_fpr : sequence of float in [0, 1], default (0.01, 0.05, 0.1)
        False-positive-rate budgets.
    target_recall : sequence of float in [0, 1], default (0.9, 0.95, 0.99)
        Recall targets.
    thresholds : sequence of float, default ()
        Fixed thresholds to report as well.
    ci : bool, default True
        Add ``_low``/``_high`` columns for precision, recall, F1 and FPR.
    n_resamples, confidence_level, seed, ci_method
        As :func:`image_metrics` (with its :class:`~lvkit.eval.CoverageWarning`).

    Returns
    -------
    DataFrame
        Index ``point``; columns ``threshold, precision, recall, f1, fpr, accuracy, tp, fp, tn,
        fn`` and the bounds.

    Raises
    ------
    ValueError
        If a target or option is invalid.

    See Also
    --------
    image_metrics

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"label": [0, 0, 0, 1, 1, 1], "anomaly_score": [0.1, 0.2, 0.6, 0.4, 0.7, 0.9],
    ...                    "is_anomalous": [False, False, True, False, True, True], "error": [None] * 6})
    >>> table = operating_points(df, target_fpr=[0.0], target_recall=[1.0], ci=False)
    >>> table[["threshold", "recall", "fpr"]].round(3)
                threshold  recall    fpr
    point
    served            NaN   0.667  0.333
    best_f1          0.30   1.000  0.333
    fpr<=0           0.65   0.667  0.000
    recall>=1        0.30   1.000  0.333
    """
    import warnings

    import pandas as pd

    from lvkit.errors import UndefinedMetricWarning

    method = check_ci(n_resamples, confidence_level, ci_method)
    y, pred, _, score = run_arrays(df)
    warn_small_classes("operating_points", y, ci=ci, confidence_level=confidence_level, method=method)
    points: list[tuple[str, float]] = []
    with warnings.catch_warnings():  # undefined points are reported once, below
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        points.append(("best_f1", best_f1_threshold(y, score)[0]))
        for x in target_fpr:
            points.append((f"fpr<={x:g}", operating_point(y, score, target_fpr=x)["threshold"]))
        for x in target_recall:
            points.append((f"recall>={x:g}", operating_point(y, score, target_recall=x)["threshold"]))
    points += [(f"score>={check_real('thresholds', t):g}", float(t)) for t in thresholds]

    def rates(yy: Any, pp: Any, ss: Any, t: float | None) -> dict[str, float]:
        if t is not None and np.isnan(t):
            return dict.fromkeys(_RATES, NAN)
        return _rates(confusion_stats(yy, pp if t is None else ss >= t))

    rows = []
    undefined = []
    for name, t in [("served", None), *points]:
        chosen = pred if t is None else (score >= t if not np.isnan(t) else np.zeros(y.size, bool))
        row: dict[str, Any] = {"point": name, "threshold": NAN if t is None else t,
                               **rates(y, pred, score, t), **confusion_stats(y, chosen)}
        undefined += [f"{k} at {name}" for k in ("precision", "recall", "f1", "fpr") if np.isnan(row[k])]
        row = with_ci(row, lambda yy, pp, ss, t=t: {k: v for k, v in rates(yy, pp, ss, t).items() if k != "accuracy"},
                      [y, pred, score], ci=ci, n_resamples=n_resamples, confidence_level=confidence_level,
                      seed=seed, method=method)
        rows.append(row)
    if undefined:
        warn_undefined(f"operating_points: {', '.join(undefined)} undefined; nan there", stacklevel=2)
    return pd.DataFrame(rows).set_index("point")


def ci_frame(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """A report dict as a table: one row per number, columns ``estimate, low, high``.

    Keys ending in ``_low``/``_high`` become the bounds of the key they extend; non-numeric
    values (e.g. the ``reliability`` table) are left out; numbers without bounds (counts) get
    ``nan`` bounds.

    Parameters
    ----------
    metrics : mapping
        From :func:`image_metrics` or :func:`calibration_report`.

    Returns
    -------
    DataFrame
        Index: metric name, in the mapping's order.

    See Also
    --------
    image_metrics

    Examples
    --------
    >>> ci_frame({"auroc": 0.9, "auroc_low": 0.8, "auroc_high": 0.97, "n": 40.0})
           estimate  low  high
    auroc       0.9  0.8  0.97
    n          40.0  NaN   NaN
    """
    import pandas as pd

    rows = {}
    for key, value in metrics.items():
        if key.endswith(("_low", "_high")) and (key.rsplit("_", 1)[0] in metrics):
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            continue
        rows[key] = {"estimate": float(value), "low": float(metrics.get(f"{key}_low", NAN)),
                     "high": float(metrics.get(f"{key}_high", NAN))}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "low", "high"])
