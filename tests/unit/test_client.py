"""lvkit.client(): boto3-shaped calls, the hosting lifecycle and every bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from botocore.exceptions import ClientError, ParamValidationError
from PIL import Image

import lvkit
from lvkit.boto import DATA_PATH
from lvkit.client import LookoutVisionClient
from lvkit.operations import NOT_IMPLEMENTED, operations, paginated
from lvkit.shapes import DetectAnomalyResult
from tests.conftest import png_bytes


def detect(lv, body, *, version="latest", content_type="image/png", project="demo"):
    return lv.detect_anomalies(ProjectName=project, ModelVersion=version, ContentType=content_type, Body=body)


def start(lv, version="1", project="demo"):
    return lv.start_model(ProjectName=project, ModelVersion=version, MinInferenceUnits=1)


def test_lifecycle_and_detection(lv, dark, bright):
    assert lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "TRAINED"
    with pytest.raises(lv.exceptions.ConflictException) as info:
        detect(lv, dark)
    assert info.value.response["Error"]["Code"] == "ConflictException"
    assert info.value.response["ResourceType"] == "MODEL"
    assert info.value.response["ResourceId"].endswith(":model/demo/1")
    assert "not hosted" in info.value.response["Error"]["Message"]

    r = start(lv)
    assert r["Status"] == "STARTING_HOSTING" and r["ResponseMetadata"]["HTTPStatusCode"] == 202
    d = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]
    assert d["Status"] == "HOSTED" and d["MinInferenceUnits"] == 1

    normal = detect(lv, dark)["DetectAnomalyResult"]
    assert normal["IsAnomalous"] is False and 0.5 <= normal["Confidence"] <= 1
    assert normal["Anomalies"] == [
        {"Name": "background", "PixelAnomaly": {"TotalPercentageArea": 1.0, "Color": "#FFFFFF"}}
    ]
    anomalous = detect(lv, bright)["DetectAnomalyResult"]
    assert anomalous["IsAnomalous"] is True and anomalous["Source"] == {"Type": "direct"}
    areas = {a["Name"]: a["PixelAnomaly"]["TotalPercentageArea"] for a in anomalous["Anomalies"]}
    assert areas == pytest.approx({"background": 24 / 64, "anomaly": 40 / 64})
    mask = np.asarray(Image.open(io.BytesIO(anomalous["AnomalyMask"])))
    assert mask.shape == (64, 64, 3) and mask[0, 0].tolist() == [255, 0, 0] and mask[0, 63].tolist() == [0, 0, 0]

    assert lv.stop_model(ProjectName="demo", ModelVersion="1")["Status"] == "STOPPING_HOSTING"
    assert lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "TRAINED"
    with pytest.raises(lv.exceptions.ConflictException):
        detect(lv, dark)


def test_latest_resolves_to_newest(lv, make_fake_version, dark):
    v2 = make_fake_version(lv.service.store, "demo", threshold=10.0, image_size=(64, 64))
    assert v2 == "2"
    start(lv, "2")
    assert detect(lv, dark)["DetectAnomalyResult"]["IsAnomalous"] is True  # v2's threshold is 10
    with pytest.raises(lv.exceptions.ConflictException):  # v1 not hosted
        detect(lv, dark, version="1")


def test_unknown_resources(lv, dark):
    with pytest.raises(lv.exceptions.ResourceNotFoundException) as info:
        detect(lv, dark, project="nope")
    assert info.value.response["ResourceType"] == "PROJECT" and info.value.response["ResourceId"] == "nope"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(lv.exceptions.ResourceNotFoundException) as info:
        start(lv, "7")
    assert info.value.response["ResourceType"] == "MODEL"
    assert "StartModel" in str(info.value)


def test_errors_are_botocore_client_errors(lv, dark):
    with pytest.raises(ClientError):
        detect(lv, dark, project="nope")
    assert lv.exceptions.ValidationException is lvkit.ValidationException


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("ProjectName", "-x", "must start with a letter or digit"),
        ("ProjectName", "a" * 256, "1 to 255"),
        ("ProjectName", "prøject", "ASCII"),
        ("ModelVersion", "0", "positive integer"),
        ("ModelVersion", "01", "positive integer"),
        ("ModelVersion", "abc", "positive integer"),
        ("ModelVersion", "1" * 11, "1 to 10"),
        ("ContentType", "image/gif", "image/png and image/jpeg"),
        ("ContentType", "", "image/png and image/jpeg"),
    ],
)
def test_bad_fields(lv, dark, field, value, needle):
    start(lv)
    kw = {"ProjectName": "demo", "ModelVersion": "1", "ContentType": "image/png", "Body": dark, field: value}
    with pytest.raises(lv.exceptions.ValidationException) as info:
        lv.detect_anomalies(**kw)
    assert needle in info.value.response["Error"]["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def _jpeg(rgb):
    return png_bytes(rgb, fmt="JPEG")


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        (b"", "image/png", "empty"),
        (png_bytes(np.zeros((1, 1, 3), np.uint8)), "image/png", "1x1 pixels"),
        (png_bytes(np.zeros((64, 64, 3), np.uint8)), "image/jpeg", "not a JPEG"),
        (_jpeg(np.zeros((64, 64, 3), np.uint8)), "image/png", "not a PNG"),
        (png_bytes(np.zeros((64, 64, 3), np.uint8))[:-40], "image/png", "truncated or corrupt"),
        (bytes(np.random.RandomState(0).randint(0, 256, 4000, dtype=np.uint8)), "image/png", "neither PNG nor JPEG"),
        (png_bytes(np.zeros((64, 96, 3), np.uint8)), "image/png", "trained on 64x64"),
    ],
    ids=["empty", "1x1", "lying-png", "lying-jpeg", "truncated", "random", "wrong-size"],
)
def test_bad_images(lv, body, content_type, needle):
    start(lv)
    with pytest.raises(lv.exceptions.ValidationException) as info:
        detect(lv, body, content_type=content_type)
    assert needle in info.value.response["Error"]["Message"]


def test_huge_image_refused_before_decoding(lv):
    start(lv)
    body = png_bytes(np.zeros((5000, 5000, 3), np.uint8))
    with pytest.raises(lv.exceptions.ValidationException, match="5000x5000"):
        detect(lv, body)


def test_byte_limit_is_configurable(home, make_fake_version, dark):
    lv = lvkit.client(home, max_bytes=100)
    make_fake_version(lv.service.store, "demo")
    start(lv)
    with pytest.raises(lv.exceptions.ValidationException, match="limit is 100 bytes"):
        detect(lv, dark)


def test_missing_and_unknown_params_like_boto3(lv):
    with pytest.raises(ParamValidationError, match='Missing required parameter in input: "Body"'):
        lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png")
    with pytest.raises(ParamValidationError, match='Unknown parameter in input: "Bogus"'):
        lv.describe_model(ProjectName="demo", ModelVersion="1", Bogus=1)


@pytest.mark.parametrize("units", [0, -1, "1", True])
def test_bad_inference_units(lv, units):
    with pytest.raises(lv.exceptions.ValidationException, match="MinInferenceUnits"):
        lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=units)
    assert lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "TRAINED"


def test_start_twice_conflicts_and_stop_of_trained_conflicts(lv):
    with pytest.raises(lv.exceptions.ConflictException, match="TRAINED"):
        lv.stop_model(ProjectName="demo", ModelVersion="1")
    start(lv)
    with pytest.raises(lv.exceptions.ConflictException, match="HOSTED"):
        start(lv)


def test_projects(lv):
    r = lv.create_project(ProjectName="other")
    assert r["ProjectMetadata"]["ProjectArn"] == "arn:aws:lookoutvision:us-east-1:000000000000:project/other"
    with pytest.raises(lv.exceptions.ConflictException):
        lv.create_project(ProjectName="other")
    names = [p["ProjectName"] for p in lv.list_projects()["Projects"]]
    assert names == ["demo", "other"]
    page = lv.list_projects(MaxResults=1)
    assert len(page["Projects"]) == 1 and "NextToken" in page
    rest = lv.list_projects(NextToken=page["NextToken"])
    assert [p["ProjectName"] for p in rest["Projects"]] == ["other"] and "NextToken" not in rest
    with pytest.raises(lv.exceptions.ValidationException, match="NextToken"):
        lv.list_projects(NextToken="garbage")
    with pytest.raises(lv.exceptions.ConflictException, match="delete them first"):
        lv.delete_project(ProjectName="demo")
    assert lv.delete_project(ProjectName="other")["ProjectArn"].endswith("project/other")
    with pytest.raises(lv.exceptions.ResourceNotFoundException):
        lv.describe_project(ProjectName="other")


def test_client_token_makes_create_idempotent(lv):
    a = lv.create_project(ProjectName="tok", ClientToken="abc-1")
    b = lv.create_project(ProjectName="tok", ClientToken="abc-1")
    assert a["ProjectMetadata"] == b["ProjectMetadata"]
    with pytest.raises(lv.exceptions.ValidationException, match="ClientToken"):
        lv.create_project(ProjectName="tok2", ClientToken="bad token!")


def test_list_models_and_wire_round_trip(lv, bright):
    models = lv.list_models(ProjectName="demo")["Models"]
    assert [m["ModelVersion"] for m in models] == ["1"] and "MinInferenceUnits" not in models[0]
    start(lv)
    wire = detect(lv, bright)["DetectAnomalyResult"]
    assert DetectAnomalyResult.from_wire(wire).to_wire() == wire


def test_state_survives_a_new_client(lv, home, dark):
    start(lv)
    other = lvkit.client(home)  # another process would see the same: HOSTED persists, model loads lazily
    assert other.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "HOSTED"
    assert detect(other, dark)["DetectAnomalyResult"]["IsAnomalous"] is False


# -- the operation table is the service description's ----------------------------------------------
MODEL_DIR = Path(DATA_PATH, "lookoutvision", "2020-11-20")
DESCRIPTION = json.loads((MODEL_DIR / "service-2.json").read_text())


def test_client_methods_and_not_implemented_make_up_the_description():
    described = set(DESCRIPTION["operations"])
    extensions = {"can_paginate", "attach_calibration"}  # boto3's helper, and lvkit's own (documented as such)
    methods = {name for name in vars(LookoutVisionClient) if not name.startswith("_")} - extensions
    implemented = {name for name, op in operations().items() if op.method_name in methods}
    assert methods == {operations()[name].method_name for name in implemented}  # no method beyond the table
    assert implemented.isdisjoint(NOT_IMPLEMENTED)
    assert implemented | NOT_IMPLEMENTED == described


def test_client_parameters_and_status_are_the_description(lv):
    for name, op in operations().items():
        if name in NOT_IMPLEMENTED:
            continue
        shape = DESCRIPTION["shapes"][DESCRIPTION["operations"][name]["input"]["shape"]]
        with pytest.raises(ParamValidationError) as err:
            getattr(lv, op.method_name)(Bogus=1)
        report = str(err.value)
        for member in shape.get("required", []):
            assert f'Missing required parameter in input: "{member}"' in report
        assert f'must be one of: {", ".join(shape["members"])}' in report  # botocore's order
    assert lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)[
        "ResponseMetadata"]["HTTPStatusCode"] == 202
    assert lv.describe_project(ProjectName="demo")["ResponseMetadata"]["HTTPStatusCode"] == 200
    paginators = json.loads((MODEL_DIR / "paginators-1.json").read_text())
    assert paginated() == set(paginators["pagination"])
    served = {operations()[name].method_name for name in paginated() - NOT_IMPLEMENTED}
    assert {m for m in vars(LookoutVisionClient) if lv.can_paginate(m)} == served >= {"list_models", "list_projects"}
