"""Seeded percentile-bootstrap confidence intervals for any metric function.

This module imports numpy only; it must not import torch, matplotlib or pandas.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from lvkit.eval._checks import NAN, check_in_range, check_positive_int, warn_undefined

__all__ = ["bootstrap_ci"]


def _check_args(arrays: tuple[Any, ...], confidence_level: object) -> int:
    if not arrays:
        raise ValueError("expected at least one array to resample, got none")
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) > 1:
        raise ValueError(f"expected arrays of the same length, got lengths {lengths!r}")
    if lengths[0] == 0:
        raise ValueError("expected at least one row to resample, got 0")
    check_in_range("confidence_level", confidence_level, "(0, 1)")
    return lengths[0]


def _take(array: Any, rows: npt.NDArray[np.intp]) -> Any:
    """Rows of ``array``: fancy indexing for ndarrays, a list for other sequences (e.g. masks)."""
    if isinstance(array, np.ndarray):
        return array[rows]
    return [array[i] for i in rows]


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: npt.ArrayLike | Sequence[Any],
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Metric estimate with a percentile bootstrap confidence interval.

    ``metric(*arrays)`` is the estimate. Each of ``n_resamples`` resamples draws ``n`` row
    indices with replacement (``numpy.random.default_rng(seed)``) and applies the same rows to
    every array (pairs stay together). Resamples where the metric is ``nan`` (e.g. one class
    drawn) are dropped; warnings the metric raises on resamples are silenced, while the
    estimate's own warnings reach the caller. The interval is the ``(1 - confidence_level) / 2``
    and ``(1 + confidence_level) / 2`` percentiles of the remaining values.

    Parameters
    ----------
    metric : callable
        ``metric(*arrays) -> float``, e.g. :func:`~lvkit.eval.image_auroc`.
    *arrays : array-like or sequence
        Inputs of equal length ``n`` (a list of masks is resampled as a list).
    n_resamples : int, default 1000
        Number of bootstrap resamples.
    confidence_level : float in (0, 1), default 0.95
        Coverage of the interval.
    seed : int, default 0
        Seed of the resampling generator; the same seed gives the same interval.

    Returns
    -------
    estimate : float
        ``metric(*arrays)``.
    low, high : float
        Interval bounds; ``nan`` with an :class:`~lvkit.errors.UndefinedMetricWarning` if the
        metric is ``nan`` on every resample.

    Raises
    ------
    ValueError
        If no arrays are given, they are empty or differ in length, or an option is invalid.

    See Also
    --------
    lvkit.eval.image_auroc, lvkit.eval.mean_iou

    Examples
    --------
    >>> from lvkit.eval.ranking import image_auroc
    >>> est, low, high = bootstrap_ci(image_auroc, [0, 0, 1, 1, 0, 1], [0.1, 0.3, 0.7, 0.8, 0.6, 0.4],
    ...                               n_resamples=200, seed=1)
    >>> round(est, 4), low <= est <= high
    (0.8889, True)
    """
    n = _check_args(arrays, confidence_level)
    n_resamples = check_positive_int("n_resamples", n_resamples)
    prepared = [a if isinstance(a, np.ndarray) or not _is_array_like(a) else np.asarray(a) for a in arrays]
    estimate = float(metric(*prepared))
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(n_resamples):
            rows = rng.integers(0, n, size=n)
            values[k] = float(metric(*(_take(a, rows) for a in prepared)))
    values = values[~np.isnan(values)]
    if values.size == 0:
        warn_undefined(f"the metric is nan on all {n_resamples} resamples; the interval is nan")
        return estimate, NAN, NAN
    alpha = (1.0 - float(confidence_level)) / 2.0
    low, high = np.percentile(values, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return estimate, float(low), float(high)


def _intervals(
    metrics: Callable[..., Mapping[str, float]],
    *arrays: Any,
    n_resamples: int,
    confidence_level: float,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of several metrics from one set of resamples.

    ``metrics(*arrays)`` returns a dict of floats. The resamples are those of
    :func:`bootstrap_ci` with the same ``seed`` (same draws, same percentiles), so each interval
    equals ``bootstrap_ci`` of that one metric; drawing them once keeps the metrics of a report
    paired and costs one pass. Resample warnings are silenced; a metric that is ``nan`` on every
    resample gets ``(nan, nan)`` without a warning (the report shows the nan).
    """
    n = _check_args(arrays, confidence_level)
    n_resamples = check_positive_int("n_resamples", n_resamples)
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n_resamples):
            rows = rng.integers(0, n, size=n)
            for name, value in metrics(*(_take(a, rows) for a in arrays)).items():
                values.setdefault(name, []).append(float(value))
    alpha = (1.0 - float(confidence_level)) / 2.0
    out: dict[str, tuple[float, float]] = {}
    for name, vals in values.items():
        v = np.asarray(vals, dtype=np.float64)
        v = v[~np.isnan(v)]
        if v.size == 0:
            out[name] = (NAN, NAN)
            continue
        low, high = np.percentile(v, [100.0 * alpha, 100.0 * (1.0 - alpha)])
        out[name] = (float(low), float(high))
    return out


def _is_array_like(a: Any) -> bool:
    """True if ``a`` converts to a regular (non-object) ndarray, e.g. not a list of masks of mixed sizes."""
    if isinstance(a, (list, tuple)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                arr = np.asarray(a)
        except (ValueError, Warning):
            return False
        return arr.dtype != object
    return True

