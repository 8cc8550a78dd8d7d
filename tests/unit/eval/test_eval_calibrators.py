from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.calibration import _sigmoid_calibration
from sklearn.isotonic import IsotonicRegression

from lvkit.eval import CalibrationFitWarning
from lvkit.eval.calibration import (
    CALIBRATORS,
    BetaCalibrator,
    Calibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
    calibration_error,
    calibrator_from_dict,
    fit_calibrator,
    log_loss,
)
from lvkit.eval.scores import confidence_from_score

KINDS = sorted(CALIBRATORS)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


@pytest.fixture(scope="module")
def overconfident() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Anomaly scores sigma(3 logit q) of true probabilities q: a calibration and a test split."""
    rng = np.random.default_rng(7)
    q = np.clip(rng.beta(0.8, 1.2, 4000), 0.01, 0.99)
    y = rng.random(4000) < q
    s = 1.0 / (1.0 + np.exp(-3.0 * _logit(q)))
    return {"cal": (s[:2000], y[:2000]), "test": (s[2000:], y[2000:])}


def _top_label_ece(scores: np.ndarray, p: np.ndarray, y: np.ndarray) -> float:
    verdict = scores >= 0.5  # the model's verdict stays; only its Confidence is recalibrated
    return calibration_error(confidence_from_score(verdict, p), verdict == y, n_bins=10)


@pytest.mark.parametrize("kind", KINDS)
def test_recalibration_lowers_ece_and_nll_on_a_disjoint_split(overconfident, kind: str) -> None:
    s_cal, y_cal = overconfident["cal"]
    s_test, y_test = overconfident["test"]
    cal = fit_calibrator(kind, s_cal, y_cal)
    p = cal.predict(s_test)
    assert p.dtype == np.float64 and p.shape == s_test.shape and np.all((p >= 0) & (p <= 1))
    assert _top_label_ece(s_test, p, y_test) < 0.5 * _top_label_ece(s_test, s_test, y_test)
    assert log_loss(y_test, p) < log_loss(y_test, s_test) - 0.05


def test_fitted_parameters_recover_the_distortion(overconfident) -> None:
    s, y = overconfident["cal"]
    assert TemperatureCalibrator().fit(s, y).temperature == pytest.approx(3.0, rel=0.15)
    platt = PlattCalibrator().fit(s, y)
    assert platt.slope == pytest.approx(1 / 3, rel=0.15) and abs(platt.intercept) < 0.15  # type: ignore[operator]
    beta = BetaCalibrator().fit(s, y)
    assert beta.a == pytest.approx(1 / 3, rel=0.25) and beta.b == pytest.approx(1 / 3, rel=0.25)


def test_platt_matches_sklearn_sigmoid_calibration(overconfident) -> None:
    s, y = overconfident["cal"]
    z = _logit(np.clip(s, 1e-6, 1 - 1e-6))
    a, b = _sigmoid_calibration(z, y)  # sklearn: p = 1 / (1 + exp(a z + b)), Platt's targets
    cal = PlattCalibrator().fit(s, y)
    assert cal.slope == pytest.approx(-a, abs=1e-4) and cal.intercept == pytest.approx(-b, abs=1e-4)
    np.testing.assert_allclose(cal.predict(s), 1 / (1 + np.exp(a * z + b)), atol=1e-5)


def test_isotonic_matches_sklearn(overconfident) -> None:
    s, y = overconfident["cal"]
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(s, y)
    grid = np.linspace(0, 1, 501)
    np.testing.assert_allclose(IsotonicCalibrator().fit(s, y).predict(grid), ref.predict(grid), atol=1e-12)


def test_temperature_is_a_likelihood_minimum(overconfident) -> None:
    s, y = overconfident["cal"]
    t = TemperatureCalibrator().fit(s, y).temperature
    nll = [log_loss(y, TemperatureCalibrator(temperature=t * f).predict(s)) for f in (0.99, 1.0, 1.01)]
    assert nll[1] <= min(nll[0], nll[2])


def test_beta_is_monotone_and_contains_platt(overconfident) -> None:
    s, y = overconfident["cal"]
    beta = BetaCalibrator().fit(s, y)
    assert beta.a >= 0 and beta.b >= 0  # type: ignore[operator]
    assert np.all(np.diff(beta.predict(np.linspace(0, 1, 201))) >= 0)
    platt = PlattCalibrator(slope=0.7, intercept=0.2)
    grid = np.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(BetaCalibrator(a=0.7, b=0.7, c=0.2).predict(grid), platt.predict(grid), atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_dict_round_trip_through_json(overconfident, kind: str) -> None:
    s, y = overconfident["cal"]
    cal = fit_calibrator(kind, s, y)
    d = cal.to_dict()
    assert d["kind"] == kind
    rebuilt = calibrator_from_dict(json.loads(json.dumps(d)))
    assert type(rebuilt) is type(cal) and isinstance(rebuilt, Calibrator)
    grid = np.r_[np.linspace(0, 1, 1001), s[:100]]
    np.testing.assert_array_equal(rebuilt.predict(grid), cal.predict(grid))
    assert rebuilt.to_dict() == d


def test_predict_keeps_shape_and_validates() -> None:
    cal = TemperatureCalibrator(temperature=2.0)
    assert cal.predict(np.full((2, 3), 0.5)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"scores: expected values in \[0, 1\], got \[1.5\]"):
        cal.predict([1.5])


@pytest.mark.parametrize("kind", KINDS)
def test_unfitted_and_one_class(kind: str) -> None:
    with pytest.raises(ValueError, match="call fit"):
        CALIBRATORS[kind]().predict([0.5])
    with pytest.raises(ValueError, match="y_true: expected both classes to fit a calibrator, got 0 anomalous of 3"):
        fit_calibrator(kind, [0.1, 0.2, 0.3], [0, 0, 0])


def test_fit_calibrator_unknown_kind_lists_valid_kinds() -> None:
    valid = r"\['beta', 'isotonic', 'platt', 'temperature'\]"
    with pytest.raises(ValueError, match=rf"kind: expected one of {valid}, got 'sigmoid'"):
        fit_calibrator("sigmoid", [0.1, 0.9], [0, 1])


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"kind": "histogram"}, "kind: expected one of"),
        ({"slope": 1.0}, "kind: expected one of .* got None"),
        ({"kind": "platt", "slope": 1.0, "eps": 1e-6}, r"expected keys \['eps', 'intercept', 'kind', 'slope'\]"),
        ({"kind": "platt", "slope": 1.0, "intercept": 0.0, "eps": 1e-6, "x": 1}, "expected keys"),
        ({"kind": "temperature", "temperature": -1.0, "eps": 1e-6}, "temperature: expected a number > 0, got -1.0"),
        ({"kind": "beta", "a": float("nan"), "b": 1.0, "c": 0.0, "eps": 1e-6}, "a: expected a finite number, got nan"),
        ({"kind": "isotonic", "x": [0.5, 0.2], "y": [0.0, 1.0]}, "non-decreasing knots"),
        ([("kind", "platt")], "expected a dict, got list"),
    ],
)
def test_calibrator_from_dict_rejects_bad_dicts(d, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrator_from_dict(d)


def test_temperature_at_its_lower_bound_warns_of_hard_outputs() -> None:
    # separable scores: the likelihood keeps growing as the temperature falls, down to the bound
    scores = np.r_[np.linspace(0.05, 0.45, 10), np.linspace(0.55, 0.95, 10)]
    y = scores > 0.5
    with pytest.warns(CalibrationFitWarning, match=r"search bound, temperature=0.01: outputs are hard 0/1"):
        cal = fit_calibrator("temperature", scores, y)
    assert cal.temperature == pytest.approx(0.01, rel=1e-3)
    p = cal.predict(scores)
    assert set(p.round(6).tolist()) == {0.0, 1.0}  # the hard outputs the warning is about


def test_temperature_at_its_upper_bound_warns() -> None:
    # scores that say the opposite of the labels: the best temperature is as high as allowed
    scores = np.r_[np.linspace(0.55, 0.95, 10), np.linspace(0.05, 0.45, 10)]
    y = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    with pytest.warns(CalibrationFitWarning, match=r"temperature=100: outputs are all about 0.5"):
        TemperatureCalibrator().fit(scores, y)


def test_temperature_inside_its_bounds_does_not_warn(overconfident) -> None:
    s, y = overconfident["cal"]
    TemperatureCalibrator().fit(s, y)  # filterwarnings=error: any warning fails here
