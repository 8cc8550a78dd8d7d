r"""Calibration of anomaly verdicts: top-label calibration error, reliability curve, scoring rules.

DetectAnomalies' ``Confidence`` is the confidence in the ``IsAnomalous`` verdict, so calibration
is measured *top-label*: on pairs ``(confidence, correct)`` with
``correct = (is_anomalous == y_true)``. Samples are put into bins of confidence; with
:math:`n_b` samples, mean confidence :math:`c_b` and accuracy :math:`a_b` in bin :math:`b` and
:math:`N = \sum_b n_b`:

.. math::

    \mathrm{ECE} = \sum_{b:\,n_b>0} \frac{n_b}{N}\,|a_b - c_b| \quad (\texttt{norm="l1"}),
    \qquad
    \mathrm{MCE} = \max_{b:\,n_b>0} |a_b - c_b| \quad (\texttt{norm="max"}).

Bins (which bin a confidence on an edge joins):

- ``strategy="uniform"``: edges :math:`e_b = b / B` for ``n_bins`` :math:`= B`; bin :math:`b`
  holds :math:`[e_b, e_{b+1})`, and a confidence of exactly 1 (a verdict served as certain)
  is a bin of its own. This is torchmetrics' convention (``torch.bucketize(c, edges,
  right=True) - 1``), so :func:`calibration_error` equals torchmetrics'
  ``binary_calibration_error`` on the same pairs, confidences 0, 0.1, 0.5 and 1 included.
  torch's float64 ``linspace`` rounds a few edges (0.30000000000000004 for ``B = 10``), so a
  confidence of exactly 0.3 lands one bin lower there; lvkit's edges are ``b / B`` as Python
  divides. sklearn's ``calibration_curve`` closes uniform bins on the right instead; the two
  differ only for confidences on an edge.
- ``strategy="quantile"``: edges are the confidences' quantiles, which are themselves
  confidences (the smallest and the largest always), so bins are closed on the right:
  :math:`(e_b, e_{b+1}]`, the first bin also :math:`e_0`, as sklearn's
  ``calibration_curve(strategy="quantile")``; the largest confidence never sits alone.

This is the formula; streaming accumulators point here. Their sufficient statistics are the
per-bin counts, confidence sums and correct sums (``lvkit.eval.base.binned_stats``), combined
by ``lvkit.eval.base.calibration_from_bins``. Quantile edges depend on all the data, so a
streaming version must fix its edges first.

The same function scores the *binary* calibration of P(anomaly) when given
``(anomaly_score, y_true)`` instead of ``(confidence, correct)``: torchmetrics' binary case.
A P(anomaly) shifted by the same amount for every image moves the top-label confidence up for
one verdict and down for the other, so much of the shift cancels in the top-label ECE; that is
why :func:`~lvkit.eval.calibration_report` shows both.

The proper scoring rules (:func:`brier_score_loss`, :func:`log_loss`) take P(anomaly), i.e. the
:func:`~lvkit.eval.anomaly_score`. The recalibrators (:class:`PlattCalibrator`, ...) live in
``lvkit.eval._calibrators`` and are re-exported here.

This module imports numpy only (the recalibrators import scipy/sklearn inside ``fit``); it must
not import torch, matplotlib or pandas.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lvkit.eval._calibrators import (
    CALIBRATORS,
    BetaCalibrator,
    Calibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
    calibrator_from_dict,
    fit_calibrator,
)
from lvkit.eval.base import bin_edges, binned_stats, calibration_from_bins, curve_from_bins
from lvkit.eval.checks import (
    NAN,
    NORMS,
    as_binary,
    as_probability,
    check_choice,
    check_confidence,
    check_in_range,
    same_length,
    warn_undefined,
)

__all__ = [
    "CALIBRATORS",
    "BetaCalibrator",
    "Calibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "TemperatureCalibrator",
    "brier_score_loss",
    "calibration_error",
    "calibrator_from_dict",
    "fit_calibrator",
    "log_loss",
    "reliability_curve",
]

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]


def calibration_error(
    confidence: npt.ArrayLike,
    correct: npt.ArrayLike,
    *,
    n_bins: int = 10,
    strategy: str = "uniform",
    norm: str = "l1",
) -> float:
    """Top-label calibration error (ECE or MCE) of verdict confidences.

    The formula and the bin convention are in the module docstring: ``norm="l1"`` weights each
    non-empty bin's ``|accuracy - mean confidence|`` by its share of samples (ECE),
    ``norm="max"`` takes the largest gap (MCE). Uniform bins are closed on the left, ``[b / B,
    (b + 1) / B)``, with a bin of its own for a confidence of exactly 1 (torchmetrics'
    convention); quantile bins are closed on the right (sklearn's).

    Given ``(anomaly_score, y_true)`` instead, it is the binary calibration error of
    P(anomaly) (torchmetrics' ``binary_calibration_error``).

    Parameters
    ----------
    confidence : array-like of shape (n,), dtype float
        Top-label confidences (the API's ``Confidence``), in [0, 1].
    correct : array-like of shape (n,), dtype bool
        Whether each verdict was right: ``is_anomalous == y_true``.
    n_bins : int, default 10
        Number of bins.
    strategy : {"uniform", "quantile"}, default "uniform"
        Equal-width bins on [0, 1], or equal-mass bins from the confidences' quantiles.
    norm : {"l1", "max"}, default "l1"
        ECE or MCE.

    Returns
    -------
    float
        The calibration error in [0, 1]; ``nan`` with an
        :class:`~lvkit.errors.UndefinedMetricWarning` if there are no samples.

    Raises
    ------
    ValueError
        If an option is invalid, a confidence is outside [0, 1], ``correct`` is not boolean, or
        the lengths differ.

    See Also
    --------
    reliability_curve : The per-bin accuracies and confidences behind this number.

    Examples
    --------
    Five verdicts; bins (0.6, 0.7] holds 0.65 (wrong) and (0.9, 1.0] holds 0.95, 0.95, 0.95,
    0.95 (three right). ECE = 1/5 * |0 - 0.65| + 4/5 * |0.75 - 0.95| = 0.13 + 0.16:

    >>> round(calibration_error([0.65, 0.95, 0.95, 0.95, 0.95], [0, 1, 1, 1, 0]), 6)
    0.29
    >>> round(calibration_error([0.65, 0.95, 0.95, 0.95, 0.95], [0, 1, 1, 1, 0], norm="max"), 6)
    0.65

    On the edges: 0.5 opens the bin [0.5, 0.6) and 1.0 has a bin of its own, so each of these
    four sits alone: ECE = (|0 - 0.45| + |1 - 0.5| + |0 - 0.95| + |1 - 1|) / 4 (bins closed on
    the right would pair 0.45 with 0.5 and 0.95 with 1.0, and give 0.25):

    >>> round(calibration_error([0.45, 0.5, 0.95, 1.0], [0, 1, 0, 1]), 6)
    0.475
    """
    conf, corr, n_bins, strategy = check_confidence(confidence, correct, n_bins, strategy)
    norm = check_choice("norm", norm, NORMS)
    if conf.size == 0:
        warn_undefined("calibration error is undefined with no samples; returning nan")
        return NAN
    return calibration_from_bins(*binned_stats(conf, corr, bin_edges(conf, n_bins, strategy), strategy), norm=norm)


def reliability_curve(
    confidence: npt.ArrayLike,
    correct: npt.ArrayLike,
    *,
    n_bins: int = 10,
    strategy: str = "uniform",
) -> tuple[_F64, _F64, _I64]:
    """Per-bin accuracy, mean confidence and sample count of verdict confidences.

    The same bins as :func:`calibration_error`, so a confidence of exactly 1 has a point of its
    own with uniform bins. :func:`sklearn.calibration.calibration_curve` (``y_true=correct,
    y_prob=confidence``) gives the same curve, except that its uniform bins are closed on the
    right (a confidence on an edge joins the lower bin there). Empty bins are dropped.

    Parameters
    ----------
    confidence : array-like of shape (n,), dtype float
        Top-label confidences, in [0, 1].
    correct : array-like of shape (n,), dtype bool
        Whether each verdict was right.
    n_bins : int, default 10
        Number of bins.
    strategy : {"uniform", "quantile"}, default "uniform"
        Equal-width or equal-mass bins.

    Returns
    -------
    prob_true : ndarray of shape (m,), float64
        Fraction of correct verdicts in each non-empty bin.
    prob_pred : ndarray of shape (m,), float64
        Mean confidence in each non-empty bin.
    counts : ndarray of shape (m,), int64
        Samples in each non-empty bin.

    Raises
    ------
    ValueError
        As :func:`calibration_error`.

    See Also
    --------
    calibration_error : The weighted gap between ``prob_true`` and ``prob_pred``.

    Examples
    --------
    >>> acc, conf, n = reliability_curve([0.65, 0.95, 0.95, 0.95, 0.95], [0, 1, 1, 1, 0])
    >>> acc.tolist(), conf.round(2).tolist(), n.tolist()
    ([0.0, 0.75], [0.65, 0.95], [1, 4])
    """
    conf, corr, n_bins, strategy = check_confidence(confidence, correct, n_bins, strategy)
    if conf.size == 0:
        warn_undefined("the reliability curve is empty with no samples")
        return np.empty(0, np.float64), np.empty(0, np.float64), np.empty(0, np.int64)
    return curve_from_bins(*binned_stats(conf, corr, bin_edges(conf, n_bins, strategy), strategy))


# --- proper scoring rules on P(anomaly) -----------------------------------------------------------


def _check_prob_args(y_true: npt.ArrayLike, p_anomaly: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], _F64]:
    yt = as_binary("y_true", y_true)
    p = as_probability("p_anomaly", p_anomaly)
    same_length(y_true=yt, p_anomaly=p)
    return yt, p


def brier_score_loss(y_true: npt.ArrayLike, p_anomaly: npt.ArrayLike) -> float:
    """Mean squared difference between P(anomaly) and the true label.

    ``mean((p_anomaly - y_true) ** 2)``, as :func:`sklearn.metrics.brier_score_loss`. Lower is
    better.

    Parameters
    ----------
    y_true : array-like of shape (n,), dtype bool
        True labels, 1 / True = anomalous.
    p_anomaly : array-like of shape (n,), dtype float
        P(anomaly) in [0, 1], e.g. :func:`~lvkit.eval.anomaly_score` of API results.

    Returns
    -------
    float
        The Brier score in [0, 1]; ``nan`` with an
        :class:`~lvkit.errors.UndefinedMetricWarning` if there are no samples.

    Raises
    ------
    ValueError
        If ``y_true`` is not binary, ``p_anomaly`` is outside [0, 1], or the lengths differ.

    See Also
    --------
    log_loss : The logarithmic scoring rule.

    Examples
    --------
    >>> round(brier_score_loss([0, 1, 1], [0.1, 0.9, 0.4]), 6)
    0.126667
    """
    yt, p = _check_prob_args(y_true, p_anomaly)
    if p.size == 0:
        warn_undefined("Brier score is undefined with no samples; returning nan")
        return NAN
    return float(np.mean((p - yt) ** 2))


def log_loss(y_true: npt.ArrayLike, p_anomaly: npt.ArrayLike, *, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the true labels under P(anomaly).

    ``-mean(y log p + (1 - y) log(1 - p))``, with the probability given to the true label
    clipped below at ``eps`` (as sklearn clips ``p`` to ``[eps, 1 - eps]``), so a confidently
    wrong verdict costs ``-log(eps)`` instead of infinity. Lower is better.

    Parameters
    ----------
    y_true : array-like of shape (n,), dtype bool
        True labels, 1 / True = anomalous.
    p_anomaly : array-like of shape (n,), dtype float
        P(anomaly) in [0, 1].
    eps : float, default 1e-15
        Clipping bound, in (0, 0.5).

    Returns
    -------
    float
        The log loss (nats); ``nan`` with an :class:`~lvkit.errors.UndefinedMetricWarning` if
        there are no samples.

    Raises
    ------
    ValueError
        If ``eps`` is outside (0, 0.5) or the inputs are invalid.

    See Also
    --------
    brier_score_loss : The quadratic scoring rule.

    Examples
    --------
    >>> round(log_loss([0, 1], [0.5, 0.5]), 6)
    0.693147
    """
    eps = check_in_range("eps", eps, "(0, 0.5)")
    yt, p = _check_prob_args(y_true, p_anomaly)
    if p.size == 0:
        warn_undefined("log loss is undefined with no samples; returning nan")
        return NAN
    p_true = np.maximum(np.where(yt, p, 1.0 - p), eps)  # probability given to the true label
    return float(-np.mean(np.log(p_true)))
