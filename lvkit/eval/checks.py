"""Argument checks and the warnings shared by the ``lvkit.eval`` modules.

Every check raises a plain ``ValueError`` whose message reads "expected X, got Y" and quotes
the offending value. Undefined metrics call :func:`warn_undefined` and return ``nan``.

Two warnings belong to the evaluation alone, so they are defined here (and re-exported by
``lvkit.eval``) rather than in :mod:`lvkit.errors`, which has no class for them:
:class:`CalibrationFitWarning` (a recalibrator's fit is degenerate) and
:class:`CoverageWarning` (a bootstrap interval is likely to cover less than its level).

Together with ``lvkit.eval.base`` this is the one home of what the ``lvkit.eval`` modules
share: a module imports its siblings' public names only, never their ``_private`` ones. This
module imports only numpy and :mod:`lvkit.errors`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from lvkit.errors import UndefinedMetricWarning

NAN = float("nan")
STRATEGIES = ("uniform", "quantile")  # calibration bins
NORMS = ("l1", "max")  # calibration error
EMPTY = ("nan", "one", "skip")  # mask policy when both masks are empty
AVERAGES = ("micro", "macro")  # mask aggregation
METHODS = ("percentile", "bca")  # bootstrap intervals


class CalibrationFitWarning(UserWarning):
    """A recalibrator's fit is degenerate, e.g. a temperature at its search bound.

    Examples
    --------
    >>> issubclass(CalibrationFitWarning, UserWarning)
    True
    """


class CoverageWarning(UserWarning):
    """A bootstrap interval is likely to cover the true value less often than its level says.

    Raised by the report functions when a class (anomalous or normal) has few rows; see
    :func:`lvkit.eval.bootstrap_ci` for the measured coverage and the BCa alternative.

    Examples
    --------
    >>> issubclass(CoverageWarning, UserWarning)
    True
    """


def warn_undefined(message: str, *, stacklevel: int = 3) -> None:
    """Warn :class:`~lvkit.errors.UndefinedMetricWarning` with ``message``."""
    warnings.warn(message, UndefinedMetricWarning, stacklevel=stacklevel)


def _preview(values: npt.NDArray[Any], limit: int = 5) -> str:
    flat = np.unique(values.ravel())
    shown = ", ".join(repr(v.item()) for v in flat[:limit])
    more = ", ..." if flat.size > limit else ""
    return f"[{shown}{more}]"


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)!r}, got {value!r}")
    return value


def as_1d(name: str, values: npt.ArrayLike) -> npt.NDArray[Any]:
    """Return ``values`` as a 1-D array, or raise ``ValueError``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape!r}")
    return arr


def as_binary(name: str, values: npt.ArrayLike, *, ndim: int | None = 1) -> npt.NDArray[np.bool_]:
    """Return ``values`` as a bool array; they must be bool or numbers equal to 0 or 1."""
    arr = np.asarray(values)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape!r}")
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected bool or 0/1 values, got dtype {arr.dtype.str!r}")
    ok = (arr == 0) | (arr == 1)
    if not bool(np.all(ok)):
        raise ValueError(f"{name}: expected bool or 0/1 values, got {_preview(arr[~ok])}")
    return arr.astype(np.bool_)


def as_finite(name: str, values: npt.ArrayLike, *, ndim: int | None = 1) -> npt.NDArray[np.float64]:
    """Return ``values`` as a finite float64 array, or raise ``ValueError``."""
    arr = np.asarray(values)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape!r}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype.str!r}")
    out = arr.astype(np.float64)
    bad = ~np.isfinite(out)
    if bool(np.any(bad)):
        raise ValueError(f"{name}: expected finite numbers, got {_preview(out[bad])}")
    return out


def as_probability(name: str, values: npt.ArrayLike, *, ndim: int | None = 1) -> npt.NDArray[np.float64]:
    """Return ``values`` as a float64 array in [0, 1], or raise ``ValueError``."""
    out = as_finite(name, values, ndim=ndim)
    bad = (out < 0.0) | (out > 1.0)
    if bool(np.any(bad)):
        raise ValueError(f"{name}: expected values in [0, 1], got {_preview(out[bad])}")
    return out


def same_length(**arrays: npt.NDArray[Any]) -> int:
    """Return the common length of ``arrays``, or raise ``ValueError`` naming the lengths."""
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"expected arrays of the same length, got lengths {lengths!r}")
    return next(iter(lengths.values()))


def check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_maps(
    masks_true: Sequence[npt.ArrayLike], anomaly_maps: Sequence[npt.ArrayLike]
) -> list[tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]]:
    """Check pairs of (H, W) true masks and anomaly maps; return them as (bool, float64) arrays."""
    if len(masks_true) != len(anomaly_maps):
        raise ValueError(f"expected as many anomaly maps as true masks, got {len(anomaly_maps)} and {len(masks_true)}")
    out = []
    for i, (t, m) in enumerate(zip(masks_true, anomaly_maps)):
        tb = as_binary(f"masks_true[{i}]", t, ndim=2)
        mf = as_finite(f"anomaly_maps[{i}]", m, ndim=2)
        if tb.shape != mf.shape:
            raise ValueError(
                f"expected masks_true[{i}] and anomaly_maps[{i}] of the same shape, got {tb.shape} and {mf.shape}"
            )
        out.append((tb, mf))
    return out


def pooled_pixels(
    pairs: Sequence[tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Concatenate the pixels of (mask, map) pairs into two flat arrays."""
    if not pairs:
        return np.empty(0, np.bool_), np.empty(0, np.float64)
    return np.concatenate([t.ravel() for t, _ in pairs]), np.concatenate([m.ravel() for _, m in pairs])


def check_real(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite real number (not a bool), else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a real number, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def check_in_range(name: str, value: object, interval: str) -> float:
    """Return ``value`` as a float if it lies in ``interval`` ("(0, 1]", "[0, 1]", "(0, 0.5)", ...)."""
    number = check_real(name, value)
    lo, hi = (float(x) for x in interval[1:-1].split(","))
    ok_lo = number >= lo if interval[0] == "[" else number > lo
    ok_hi = number <= hi if interval[-1] == "]" else number < hi
    if not (ok_lo and ok_hi):
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")
    return number


def check_zero_division(value: object) -> float | str:
    """Return ``value`` if it is ``"warn"``, ``nan`` or a number in [0, 1], else raise ``ValueError``."""
    if isinstance(value, str):
        if value != "warn":
            raise ValueError(f"zero_division: expected 'warn', nan or a number in [0, 1], got {value!r}")
        return value
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return float(value)
    return check_in_range("zero_division", value, "[0, 1]")


def check_confidence(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, n_bins: object, strategy: object
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], int, str]:
    """Check the arguments of a top-label calibration metric."""
    conf = as_probability("confidence", confidence)
    corr = as_binary("correct", correct)
    same_length(confidence=conf, correct=corr)
    return conf, corr, check_positive_int("n_bins", n_bins), check_choice("strategy", strategy, STRATEGIES)


def check_verdicts(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Check binary labels and binary verdicts of the same length."""
    yt = as_binary("y_true", y_true)
    yp = as_binary("y_pred", y_pred)
    same_length(y_true=yt, y_pred=yp)
    return yt, yp


def check_mask_pair(
    mask_true: npt.ArrayLike, mask_pred: npt.ArrayLike, where: str = ""
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Check a true and a predicted (H, W) mask of the same shape; return them as bool arrays."""
    t = as_binary(f"mask_true{where}", mask_true, ndim=2)
    p = as_binary(f"mask_pred{where}", mask_pred, ndim=2)
    if t.shape != p.shape:
        raise ValueError(
            f"expected mask_true{where} and mask_pred{where} of the same shape, got {t.shape} and {p.shape}"
        )
    return t, p


def check_mask_options(average: object, empty: object) -> tuple[str, str]:
    """Check the ``average`` and ``empty`` options of a mask metric."""
    return check_choice("average", average, AVERAGES), check_choice("empty", empty, EMPTY)
