"""Result records and their wire forms."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from lvkit.segmentation import build_result
from lvkit.shapes import Anomaly, DetectAnomalyResult


def test_classification_wire_form_exact():
    r = DetectAnomalyResult(is_anomalous=True, confidence=0.75)
    assert r.to_wire() == {"Source": {"Type": "direct"}, "IsAnomalous": True, "Confidence": 0.75}


def test_segmentation_wire_and_json_forms():
    lm = np.zeros((64, 64), np.int64)
    lm[:8, :] = 1
    lm[8:16, :] = 3
    r = build_result(True, 0.9, lm, ["scratch", "hole", "stain"], ["#1f77b4", "#ff7f0e", "#2ca02c"])
    wire = r.to_wire()
    assert [a["Name"] for a in wire["Anomalies"]] == ["background", "scratch", "stain"]  # only present labels
    assert wire["Anomalies"][0]["PixelAnomaly"] == {"TotalPercentageArea": 0.75, "Color": "#FFFFFF"}
    assert sum(a["PixelAnomaly"]["TotalPercentageArea"] for a in wire["Anomalies"]) == pytest.approx(1.0)
    assert isinstance(wire["AnomalyMask"], bytes) and wire["AnomalyMask"].startswith(b"\x89PNG")
    text = r.to_json()
    assert base64.b64decode(text["AnomalyMask"]) == wire["AnomalyMask"]
    assert DetectAnomalyResult.from_wire(text) == r == DetectAnomalyResult.from_wire(wire)


def test_normal_segmentation_is_background_only():
    r = build_result(False, 0.99, np.zeros((64, 64), np.int64), ["scratch"], ["#1f77b4"])
    assert [(a.name, a.total_percentage_area) for a in r.anomalies] == [("background", 1.0)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"is_anomalous": True, "confidence": 1.5},
        {"is_anomalous": True, "confidence": 0.5, "anomalies": (Anomaly("background", 1.0, "#FFFFFF"),)},
        {"is_anomalous": True, "confidence": 0.5, "anomalies": (Anomaly("hole", 1.0, "#FFFFFF"),), "anomaly_mask": b"x"},
    ],
)
def test_invalid_results_rejected(kwargs):
    with pytest.raises(ValueError):
        DetectAnomalyResult(**kwargs)


def test_anomaly_name_rules():
    with pytest.raises(ValueError, match="a-zA-Z0-9"):
        Anomaly("has space", 0.1, "#FFFFFF")
