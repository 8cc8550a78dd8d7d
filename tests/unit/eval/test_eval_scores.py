from __future__ import annotations

import numpy as np
import pytest

from lvkit.eval.scores import anomaly_score, confidence_from_score


def test_scalar_in_float_out() -> None:
    assert anomaly_score(True, 0.9) == 0.9
    assert anomaly_score(False, 0.9) == pytest.approx(0.1)
    assert type(anomaly_score(False, 0.9)) is float
    assert type(confidence_from_score(np.bool_(True), np.float32(0.5))) is float


def test_arrays_vectorised() -> None:
    out = anomaly_score(np.array([True, False, 1, 0]), [0.6, 0.6, 1.0, 0.0])
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, [0.6, 0.4, 1.0, 1.0])


def test_inverse_round_trip(rng: np.random.Generator) -> None:
    flags = rng.random(50) < 0.5
    conf = rng.random(50)
    np.testing.assert_allclose(confidence_from_score(flags, anomaly_score(flags, conf)), conf, atol=1e-15)


@pytest.mark.parametrize("confidence", [1.5, -0.1, float("nan"), float("inf")])
def test_confidence_out_of_range(confidence: float) -> None:
    with pytest.raises(ValueError, match=r"confidence: expected .*got \["):
        anomaly_score(True, confidence)


def test_bad_verdict_and_shapes() -> None:
    with pytest.raises(ValueError, match=r"is_anomalous: expected bool or 0/1 values, got \[2\]"):
        anomaly_score(2, 0.5)
    with pytest.raises(ValueError, match="expected is_anomalous and confidence of the same shape"):
        anomaly_score([True, False], [0.5])
    with pytest.raises(ValueError, match="expected real numbers"):
        anomaly_score(True, "0.5")
