r"""Convert between the API's top-label ``Confidence`` and an anomaly score.

DetectAnomalies returns ``IsAnomalous`` and ``Confidence``, the confidence *in that verdict*
(top-label), not the probability of an anomaly. Ranking metrics, Brier score and the
recalibrators need P(anomaly), the *anomaly score*:

.. math::

    s = c \text{ if anomalous else } 1 - c

The map is its own inverse, so :func:`confidence_from_score` turns a (recalibrated) anomaly
score back into the ``Confidence`` to serve with a verdict.

This module imports only numpy; it must not import torch, matplotlib or pandas.
"""

from __future__ import annotations

from typing import overload

import numpy as np
import numpy.typing as npt

from lvkit.eval.checks import as_binary, as_probability

__all__ = ["anomaly_score", "confidence_from_score"]


def _check_args(
    is_anomalous: npt.ArrayLike, value: npt.ArrayLike, value_name: str
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    flag = as_binary("is_anomalous", is_anomalous, ndim=None)
    prob = as_probability(value_name, value, ndim=None)
    if flag.shape != prob.shape:
        raise ValueError(
            f"expected is_anomalous and {value_name} of the same shape, got {flag.shape!r} and {prob.shape!r}"
        )
    return flag, prob


def _flip(flag: npt.NDArray[np.bool_], prob: npt.NDArray[np.float64]) -> float | npt.NDArray[np.float64]:
    out = np.where(flag, prob, 1.0 - prob).astype(np.float64)
    return float(out) if out.ndim == 0 else out


@overload
def anomaly_score(is_anomalous: bool, confidence: float) -> float: ...
@overload
def anomaly_score(is_anomalous: npt.ArrayLike, confidence: npt.ArrayLike) -> float | npt.NDArray[np.float64]: ...


def anomaly_score(is_anomalous: npt.ArrayLike, confidence: npt.ArrayLike) -> float | npt.NDArray[np.float64]:
    """Return P(anomaly) from a verdict and its top-label confidence.

    ``confidence if is_anomalous else 1 - confidence``, element-wise. This is the score that
    ranking metrics (:func:`~lvkit.eval.image_auroc`), proper scoring rules
    (:func:`~lvkit.eval.brier_score_loss`) and the recalibrators take.

    Parameters
    ----------
    is_anomalous : bool or array-like of bool
        The ``IsAnomalous`` verdicts (0/1 numbers are accepted).
    confidence : float or array-like of float, same shape
        The ``Confidence`` values, in [0, 1].

    Returns
    -------
    float or ndarray of float64
        A Python float for scalar input, else an array of the input's shape.

    Raises
    ------
    ValueError
        If ``confidence`` is outside [0, 1] or not finite, ``is_anomalous`` is not boolean,
        or the shapes differ.

    See Also
    --------
    confidence_from_score : The inverse map.

    Examples
    --------
    >>> anomaly_score(False, 0.75)
    0.25
    >>> anomaly_score([True, False], [0.75, 0.75]).tolist()
    [0.75, 0.25]
    """
    return _flip(*_check_args(is_anomalous, confidence, "confidence"))


@overload
def confidence_from_score(is_anomalous: bool, score: float) -> float: ...
@overload
def confidence_from_score(is_anomalous: npt.ArrayLike, score: npt.ArrayLike) -> float | npt.NDArray[np.float64]: ...


def confidence_from_score(is_anomalous: npt.ArrayLike, score: npt.ArrayLike) -> float | npt.NDArray[np.float64]:
    """Return the top-label ``Confidence`` in a verdict from the anomaly score P(anomaly).

    ``score if is_anomalous else 1 - score``: the inverse of :func:`anomaly_score`. Use it to
    serve a recalibrated probability (``calibrator.predict(score)``) as the API's ``Confidence``.

    Parameters
    ----------
    is_anomalous : bool or array-like of bool
        The verdicts.
    score : float or array-like of float, same shape
        P(anomaly), in [0, 1].

    Returns
    -------
    float or ndarray of float64
        A Python float for scalar input, else an array of the input's shape.

    Raises
    ------
    ValueError
        If ``score`` is outside [0, 1] or not finite, ``is_anomalous`` is not boolean, or the
        shapes differ.

    See Also
    --------
    anomaly_score : The forward map.

    Examples
    --------
    >>> confidence_from_score(False, 0.25)
    0.75
    >>> confidence_from_score(True, anomaly_score(True, 0.9))
    0.9
    """
    return _flip(*_check_args(is_anomalous, score, "score"))
