"""Recalibrators: maps from an anomaly score s in [0, 1] to a calibrated P(anomaly).

Fit on a calibration split (scores = :func:`~lvkit.eval.anomaly_score` of the model's results,
labels = ground truth), store ``to_dict()`` with the model version, rebuild with
:func:`calibrator_from_dict` in the server and serve
``confidence_from_score(is_anomalous, calibrator.predict(score))``.

With ``z = logit(clip(s, eps, 1 - eps))`` and ``sigma`` the logistic function:

- ``PlattCalibrator``: ``sigma(slope * z + intercept)`` (Platt 1999).
- ``TemperatureCalibrator``: ``sigma(z / temperature)`` (Guo et al. 2017); keeps s = 0.5 fixed.
- ``BetaCalibrator``: ``sigma(a ln s - b ln(1 - s) + c)`` with ``a, b >= 0`` (Kull et al. 2017).
- ``IsotonicCalibrator``: a non-decreasing piecewise-linear map fitted by
  :class:`sklearn.isotonic.IsotonicRegression`, clipped outside the fitted range.

Platt and beta are fitted by maximum likelihood against Platt's smoothed targets
``(n_pos + 1) / (n_pos + 2)`` and ``1 / (n_neg + 2)`` (as sklearn's sigmoid calibration does),
which keeps the parameters finite on separable data; the temperature by plain maximum
likelihood over ``temperature`` in [0.01, 100]. On separable data that likelihood keeps
growing as the temperature falls, so the fit stops at 0.01 and the calibrated P(anomaly) is
0 or 1 for scores away from 0.5 (a served Confidence of 1.0, an ECE of 0 on a split like the
calibration one); at 100 every output is about 0.5. Either end warns a
:class:`~lvkit.eval.CalibrationFitWarning`. ``predict`` needs numpy only; scipy and sklearn
are imported inside ``fit``. This module must not import torch, matplotlib or pandas.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from lvkit.eval.checks import CalibrationFitWarning, as_binary, as_probability, check_in_range, check_real, same_length

__all__ = [
    "CALIBRATORS",
    "BetaCalibrator",
    "Calibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "TemperatureCalibrator",
    "calibrator_from_dict",
    "fit_calibrator",
]

_F64 = npt.NDArray[np.float64]
EPS = 1e-6
_TEMPERATURE_BOUNDS = (0.01, 100.0)


@runtime_checkable
class Calibrator(Protocol):
    """What every recalibrator provides: ``fit``, ``predict``, ``to_dict`` and a ``kind`` key."""

    kind: ClassVar[str]

    def fit(self, scores: npt.ArrayLike, y_true: npt.ArrayLike) -> Calibrator:
        """Fit on anomaly scores and true labels; return ``self``."""
        ...

    def predict(self, scores: npt.ArrayLike) -> _F64:
        """Map anomaly scores to calibrated P(anomaly), float64 in [0, 1]."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters, including ``"kind"``."""
        ...


# --- helpers ----------------------------------------------------------------------------------


def _check_fit(scores: npt.ArrayLike, y_true: npt.ArrayLike) -> tuple[_F64, npt.NDArray[np.bool_]]:
    s = as_probability("scores", scores)
    y = as_binary("y_true", y_true)
    same_length(scores=s, y_true=y)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(
            f"y_true: expected both classes to fit a calibrator, got {n_pos} anomalous of {y.size}"
        )
    return s, y


def _logit(s: _F64, eps: float) -> _F64:
    c = np.clip(s, eps, 1.0 - eps)
    return np.log(c) - np.log1p(-c)


def _sigmoid(z: _F64) -> _F64:
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _platt_targets(y: npt.NDArray[np.bool_]) -> _F64:
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    return np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def _fit_logistic(x: _F64, target: _F64, *, start: _F64, bounds: list[tuple[float | None, float | None]]) -> _F64:
    """Weights ``w`` (last = intercept) minimising the mean cross-entropy of ``sigma(x @ w[:-1] + w[-1])``."""
    from scipy.optimize import minimize

    design = np.column_stack([x, np.ones(x.shape[0])])
    n = design.shape[0]

    def loss(w: _F64) -> tuple[float, _F64]:
        z = design @ w
        value = float(np.sum(np.logaddexp(0.0, z) - target * z)) / n
        return value, design.T @ (_sigmoid(z) - target) / n

    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"gtol": 1e-10, "ftol": 1e-14, "maxiter": 2000})
    return np.asarray(result.x, dtype=np.float64)


def _check_params(cls: type, d: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"expected a dict, got {type(d).__name__}")
    expected = {"kind", *keys}
    if set(d) != expected:
        raise ValueError(f"{cls.__name__}: expected keys {sorted(expected)}, got {sorted(d)}")
    if d["kind"] != getattr(cls, "kind"):
        raise ValueError(f"{cls.__name__}: expected kind {getattr(cls, 'kind')!r}, got {d['kind']!r}")
    return {key: d[key] for key in keys}


def _check_eps(eps: object) -> float:
    return check_in_range("eps", eps, "(0, 0.5)")


def _unfitted(obj: object) -> ValueError:
    return ValueError(f"expected a fitted {type(obj).__name__}, got one without parameters; call fit() first")


# --- calibrators ------------------------------------------------------------------------------


class PlattCalibrator:
    """Platt scaling: ``sigma(slope * logit(s) + intercept)``.

    Parameters
    ----------
    slope, intercept : float, optional
        Fitted parameters; leave out and call :meth:`fit`.
    eps : float, default 1e-6
        Scores are clipped to ``[eps, 1 - eps]`` before the logit.

    Examples
    --------
    >>> cal = PlattCalibrator().fit([0.2, 0.4, 0.6, 0.8, 0.9, 0.3], [0, 0, 1, 1, 1, 1])
    >>> p = cal.predict([0.1, 0.5, 0.95])
    >>> bool(p[0] < p[1] < p[2]), cal.to_dict()["kind"]
    (True, 'platt')
    """

    kind: ClassVar[str] = "platt"

    def __init__(self, *, slope: float | None = None, intercept: float | None = None, eps: float = EPS) -> None:
        if (slope is None) != (intercept is None):
            raise ValueError(
                f"expected both slope and intercept or neither, got slope={slope!r}, intercept={intercept!r}"
            )
        self.slope = None if slope is None else check_real("slope", slope)
        self.intercept = None if intercept is None else check_real("intercept", intercept)
        self.eps = _check_eps(eps)

    def fit(self, scores: npt.ArrayLike, y_true: npt.ArrayLike) -> PlattCalibrator:
        """Fit the slope and intercept on anomaly scores and true labels; return ``self``."""
        s, y = _check_fit(scores, y_true)
        w = _fit_logistic(_logit(s, self.eps)[:, None], _platt_targets(y),
                          start=np.array([1.0, 0.0]), bounds=[(None, None), (None, None)])
        self.slope, self.intercept = float(w[0]), float(w[1])
        return self

    def predict(self, scores: npt.ArrayLike) -> _F64:
        """Calibrated P(anomaly) for anomaly scores in [0, 1], float64 of the input's shape."""
        if self.slope is None or self.intercept is None:
            raise _unfitted(self)
        s = as_probability("scores", scores, ndim=None)
        return _sigmoid(self.slope * _logit(s, self.eps) + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "platt", "slope": ..., "intercept": ..., "eps": ...}``."""
        if self.slope is None:
            raise _unfitted(self)
        return {"kind": self.kind, "slope": self.slope, "intercept": self.intercept, "eps": self.eps}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlattCalibrator:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**_check_params(cls, d, ("slope", "intercept", "eps")))


class TemperatureCalibrator:
    """Temperature scaling: ``sigma(logit(s) / temperature)``; s = 0.5 stays 0.5.

    Parameters
    ----------
    temperature : float, optional
        Fitted temperature (> 0); leave out and call :meth:`fit`.
    eps : float, default 1e-6
        Scores are clipped to ``[eps, 1 - eps]`` before the logit.

    Examples
    --------
    >>> cal = TemperatureCalibrator(temperature=2.0)
    >>> cal.predict([0.5]).tolist()
    [0.5]
    """

    kind: ClassVar[str] = "temperature"

    def __init__(self, *, temperature: float | None = None, eps: float = EPS) -> None:
        if temperature is not None and not check_real("temperature", temperature) > 0:
            raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
        self.temperature = None if temperature is None else float(temperature)
        self.eps = _check_eps(eps)

    def fit(self, scores: npt.ArrayLike, y_true: npt.ArrayLike) -> TemperatureCalibrator:
        """Fit the temperature by minimising the log loss; return ``self``."""
        from scipy.optimize import minimize_scalar

        s, y = _check_fit(scores, y_true)
        z, t = _logit(s, self.eps), y.astype(np.float64)

        def nll(log_temperature: float) -> float:
            u = z / np.exp(log_temperature)
            return float(np.mean(np.logaddexp(0.0, u) - t * u))

        lo, hi = np.log(_TEMPERATURE_BOUNDS)
        result = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
        self.temperature = float(np.exp(result.x))
        at = next((b for b, edge in zip(_TEMPERATURE_BOUNDS, (lo, hi)) if abs(float(result.x) - edge) < 1e-4), None)
        if at is not None:
            outcome = ("outputs are hard 0/1 (Confidence 1.0) for scores away from 0.5: the scores separate the "
                       "classes" if at == _TEMPERATURE_BOUNDS[0] else "outputs are all about 0.5")
            warnings.warn(
                f"temperature scaling stopped at its search bound, temperature={at:g}: {outcome}; "
                "use Platt or beta calibration, or a larger calibration split",
                CalibrationFitWarning,
                stacklevel=2,
            )
        return self

    def predict(self, scores: npt.ArrayLike) -> _F64:
        """Calibrated P(anomaly) for anomaly scores in [0, 1], float64 of the input's shape."""
        if self.temperature is None:
            raise _unfitted(self)
        s = as_probability("scores", scores, ndim=None)
        return _sigmoid(_logit(s, self.eps) / self.temperature)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "temperature", "temperature": ..., "eps": ...}``."""
        if self.temperature is None:
            raise _unfitted(self)
        return {"kind": self.kind, "temperature": self.temperature, "eps": self.eps}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TemperatureCalibrator:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**_check_params(cls, d, ("temperature", "eps")))


class BetaCalibrator:
    """Beta calibration: ``sigma(a ln s - b ln(1 - s) + c)`` with ``a, b >= 0``.

    The three-parameter family of Kull, Silva Filho and Flach (2017): logistic regression on
    the features ``[ln s, -ln(1 - s)]``. ``a = b`` gives Platt scaling; ``a = b = 1, c = 0`` is
    the identity. The bounds keep the map non-decreasing (the paper refits without a feature
    whose weight comes out negative; a bound-constrained fit reaches the same optimum).

    Parameters
    ----------
    a, b, c : float, optional
        Fitted parameters; leave out and call :meth:`fit`.
    eps : float, default 1e-6
        Scores are clipped to ``[eps, 1 - eps]`` before the logarithms.

    Examples
    --------
    >>> BetaCalibrator(a=1.0, b=1.0, c=0.0).predict([0.2, 0.7]).round(6).tolist()
    [0.2, 0.7]
    """

    kind: ClassVar[str] = "beta"

    def __init__(self, *, a: float | None = None, b: float | None = None, c: float | None = None,
                 eps: float = EPS) -> None:
        given = [v is None for v in (a, b, c)]
        if any(given) and not all(given):
            raise ValueError(f"expected all of a, b, c or none, got a={a!r}, b={b!r}, c={c!r}")
        for name, value in (("a", a), ("b", b)):
            if value is not None and check_real(name, value) < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
        self.a = None if a is None else float(a)
        self.b = None if b is None else float(b)
        self.c = None if c is None else check_real("c", c)
        self.eps = _check_eps(eps)

    def _features(self, s: _F64) -> _F64:
        clipped = np.clip(s, self.eps, 1.0 - self.eps)
        return np.stack([np.log(clipped), -np.log1p(-clipped)], axis=-1)

    def fit(self, scores: npt.ArrayLike, y_true: npt.ArrayLike) -> BetaCalibrator:
        """Fit ``a``, ``b``, ``c`` on anomaly scores and true labels; return ``self``."""
        s, y = _check_fit(scores, y_true)
        w = _fit_logistic(self._features(s), _platt_targets(y),
                          start=np.array([1.0, 1.0, 0.0]), bounds=[(0.0, None), (0.0, None), (None, None)])
        self.a, self.b, self.c = float(w[0]), float(w[1]), float(w[2])
        return self

    def predict(self, scores: npt.ArrayLike) -> _F64:
        """Calibrated P(anomaly) for anomaly scores in [0, 1], float64 of the input's shape."""
        if self.a is None or self.b is None or self.c is None:
            raise _unfitted(self)
        s = as_probability("scores", scores, ndim=None)
        x = self._features(s)
        return _sigmoid(self.a * x[..., 0] + self.b * x[..., 1] + self.c)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "beta", "a": ..., "b": ..., "c": ..., "eps": ...}``."""
        if self.a is None:
            raise _unfitted(self)
        return {"kind": self.kind, "a": self.a, "b": self.b, "c": self.c, "eps": self.eps}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BetaCalibrator:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**_check_params(cls, d, ("a", "b", "c", "eps")))


class IsotonicCalibrator:
    """Isotonic regression: a non-decreasing piecewise-linear map, clipped outside the fit range.

    Fitted with :class:`sklearn.isotonic.IsotonicRegression` (``increasing=True``,
    ``out_of_bounds="clip"``, outputs in [0, 1]); predictions interpolate its knots with
    :func:`numpy.interp`, so a rebuilt calibrator needs no sklearn and predicts identically.

    Parameters
    ----------
    x, y : sequence of float, optional
        Knots (increasing scores and their calibrated probabilities); leave out and call
        :meth:`fit`.

    Examples
    --------
    >>> IsotonicCalibrator(x=[0.2, 0.8], y=[0.0, 1.0]).predict([0.1, 0.5, 0.9]).round(6).tolist()
    [0.0, 0.5, 1.0]
    """

    kind: ClassVar[str] = "isotonic"

    def __init__(self, *, x: npt.ArrayLike | None = None, y: npt.ArrayLike | None = None) -> None:
        if (x is None) != (y is None):
            raise ValueError(f"expected both x and y or neither, got x={x!r}, y={y!r}")
        self.x: _F64 | None = None
        self.y: _F64 | None = None
        if x is not None and y is not None:
            kx = as_probability("x", x)
            ky = as_probability("y", y)
            same_length(x=kx, y=ky)
            if kx.size == 0 or bool(np.any(np.diff(kx) < 0)) or bool(np.any(np.diff(ky) < 0)):
                raise ValueError(f"expected non-empty non-decreasing knots, got x={kx.tolist()!r}, y={ky.tolist()!r}")
            self.x, self.y = kx, ky

    def fit(self, scores: npt.ArrayLike, y_true: npt.ArrayLike) -> IsotonicCalibrator:
        """Fit the knots on anomaly scores and true labels; return ``self``."""
        from sklearn.isotonic import IsotonicRegression

        s, y = _check_fit(scores, y_true)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(s, y.astype(np.float64))
        self.x = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y = np.asarray(iso.y_thresholds_, dtype=np.float64)
        return self

    def predict(self, scores: npt.ArrayLike) -> _F64:
        """Calibrated P(anomaly) for anomaly scores in [0, 1], float64 of the input's shape."""
        if self.x is None or self.y is None:
            raise _unfitted(self)
        s = as_probability("scores", scores, ndim=None)
        return np.asarray(np.interp(s, self.x, self.y), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "isotonic", "x": [...], "y": [...]}``."""
        if self.x is None or self.y is None:
            raise _unfitted(self)
        return {"kind": self.kind, "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IsotonicCalibrator:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**_check_params(cls, d, ("x", "y")))


#: every recalibrator by its ``kind`` key
CALIBRATORS: dict[str, type[PlattCalibrator | TemperatureCalibrator | BetaCalibrator | IsotonicCalibrator]] = {
    "beta": BetaCalibrator,
    "isotonic": IsotonicCalibrator,
    "platt": PlattCalibrator,
    "temperature": TemperatureCalibrator,
}


def _lookup(kind: object) -> type[PlattCalibrator | TemperatureCalibrator | BetaCalibrator | IsotonicCalibrator]:
    if not isinstance(kind, str) or kind not in CALIBRATORS:
        raise ValueError(f"kind: expected one of {sorted(CALIBRATORS)!r}, got {kind!r}")
    return CALIBRATORS[kind]


def fit_calibrator(kind: str, scores: npt.ArrayLike, y_true: npt.ArrayLike) -> Calibrator:
    """Fit the recalibrator named ``kind`` on anomaly scores and true labels.

    Parameters
    ----------
    kind : {"beta", "isotonic", "platt", "temperature"}
        Which recalibrator (see :data:`CALIBRATORS`).
    scores : array-like of shape (n,), dtype float
        Anomaly scores P(anomaly) in [0, 1] on the calibration split.
    y_true : array-like of shape (n,), dtype bool
        True labels; both classes must be present.

    Returns
    -------
    Calibrator
        The fitted recalibrator.

    Raises
    ------
    ValueError
        If ``kind`` is unknown (the message lists the valid kinds), a score is outside [0, 1],
        the lengths differ, or ``y_true`` has one class only.

    See Also
    --------
    calibrator_from_dict : Rebuild a fitted recalibrator from its ``to_dict()``.

    Examples
    --------
    >>> cal = fit_calibrator("isotonic", [0.1, 0.4, 0.6, 0.9], [0, 1, 0, 1])
    >>> cal.predict([0.1, 0.9]).tolist()
    [0.0, 1.0]
    """
    return _lookup(kind)().fit(scores, y_true)


def calibrator_from_dict(d: Mapping[str, Any]) -> Calibrator:
    """Rebuild a fitted recalibrator from its ``to_dict()`` output.

    Parameters
    ----------
    d : mapping
        A dict with a ``"kind"`` key and that recalibrator's parameters, e.g. loaded from JSON
        stored with a model version.

    Returns
    -------
    Calibrator
        A recalibrator whose ``predict`` is identical to the one that was serialised.

    Raises
    ------
    ValueError
        If ``d`` is not a mapping, the kind is unknown, or keys or values are invalid.

    See Also
    --------
    fit_calibrator

    Examples
    --------
    >>> cal = calibrator_from_dict({"kind": "temperature", "temperature": 2.0, "eps": 1e-6})
    >>> round(float(cal.predict([0.8])[0]), 4)
    0.6667
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"expected a dict, got {type(d).__name__}")
    return _lookup(d.get("kind")).from_dict(d)
