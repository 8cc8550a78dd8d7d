"""Result records and their wire forms."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from lvkit.boto import DATA_PATH
from lvkit.errors import ValidationException
from lvkit.segmentation import build_result
from lvkit.shapes import (
    Anomaly,
    DetectAnomalyResult,
    ModelDescription,
    ModelPackagingJob,
    ModelStatus,
    PackagingJobStatus,
    tags_from_wire,
    tags_to_wire,
)

DESCRIPTION = json.loads(Path(DATA_PATH, "lookoutvision", "2020-11-20", "service-2.json").read_text())


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
        {
            "is_anomalous": True,
            "confidence": 0.5,
            "anomalies": (Anomaly("hole", 1.0, "#FFFFFF"),),
            "anomaly_mask": b"x",
        },
    ],
)
def test_invalid_results_rejected(kwargs):
    with pytest.raises(ValueError):
        DetectAnomalyResult(**kwargs)


def test_anomaly_name_rules():
    with pytest.raises(ValueError, match="a-zA-Z0-9"):
        Anomaly("has space", 0.1, "#FFFFFF")


def test_model_status_is_the_description_enum():
    assert [s.value for s in ModelStatus] == DESCRIPTION["shapes"]["ModelStatus"]["enum"]
    assert set(DESCRIPTION["shapes"]["ModelHostingStatus"]["enum"]) <= set(ModelStatus)


def test_packaging_job_status_is_the_description_enum():
    assert [s.value for s in PackagingJobStatus] == DESCRIPTION["shapes"]["ModelPackagingJobStatus"]["enum"]


def test_packaging_job_wire_forms_are_the_description_shapes():
    job = ModelPackagingJob("edge-1", "demo", "1", 1.0, 2.0, "SUCCEEDED", "done", "lvkit",
                            {"Greengrass": {"ComponentName": "c", "ComponentVersion": "1.0.0"}}, "first",
                            {"Greengrass": {"ComponentName": "c", "ComponentVersion": "1.0.0"}}, "/out/c-1.0.0.zip")
    assert job.status is PackagingJobStatus.SUCCEEDED
    shapes = DESCRIPTION["shapes"]
    assert set(job.to_wire()) == set(shapes["ModelPackagingDescription"]["members"])
    assert set(job.to_wire(metadata=True)) == set(shapes["ModelPackagingJobMetadata"]["members"])
    assert type(job.to_wire()["Status"]) is str


def test_model_status_is_its_string():
    s = ModelStatus.HOSTED
    assert s == "HOSTED" and ModelStatus("HOSTED") is s and hash(s) == hash("HOSTED")
    assert (str(s), f"{s}", f"{s:>7}", json.dumps({"Status": s})) == (
        "HOSTED", "HOSTED", " HOSTED", '{"Status": "HOSTED"}'
    )
    with pytest.raises(ValueError):
        ModelStatus("RUNNING")


def test_model_description_status_is_a_model_status_and_a_plain_string_on_the_wire():
    d = ModelDescription(model_version="1", model_arn="arn", creation_timestamp=1.0, status="TRAINED",
                         status_message="training completed")
    assert d.status is ModelStatus.TRAINED
    for wire in (d.to_wire(), d.to_wire(metadata=True)):
        assert type(wire["Status"]) is str and wire["Status"] == "TRAINED"
    with pytest.raises(ValueError):
        ModelDescription(model_version="1", model_arn="arn", creation_timestamp=1.0, status="RUNNING",
                         status_message="")


def test_tags_wire_form():
    tags = {"team": "qa", "stage": ""}
    assert tags_to_wire(tags) == [{"Key": "team", "Value": "qa"}, {"Key": "stage", "Value": ""}]
    assert tags_from_wire(tags_to_wire(tags)) == tags
    for bad in (None, {"team": "qa"}, [{"Key": "team"}], [{"Key": "a", "Value": "b", "Extra": 1}]):
        with pytest.raises(ValidationException, match="Tags must be a list"):
            tags_from_wire(bad)
