"""Today's boto3, with lvkit's service description, against a live server on loopback."""

from __future__ import annotations

import datetime as dt
import io
import socket

import numpy as np
import pytest
from PIL import Image

import lvkit
from tests.server.conftest import boto, host, wait_status

pytestmark = pytest.mark.server


def detect(lv, body, version="1", content_type="image/png", project="demo"):
    return lv.detect_anomalies(ProjectName=project, ModelVersion=version, ContentType=content_type, Body=body)


def test_lifecycle_over_http_matches_in_process(live, demo_home, dark, bright):
    lv = boto(live.url)
    projects = lv.list_projects()["Projects"]
    assert [p["ProjectName"] for p in projects] == ["demo"]
    assert isinstance(projects[0]["CreationTimestamp"], dt.datetime)  # epoch seconds on the wire
    d = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]
    assert d["Status"] == "TRAINED" and d["ModelArn"].endswith(":model/demo/1")

    with pytest.raises(lv.exceptions.ConflictException) as info:
        detect(lv, dark)
    assert info.value.response["ResourceType"] == "MODEL" and info.value.response["ResourceId"].endswith("demo/1")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409

    r = lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1, MaxInferenceUnits=2)
    assert r["Status"] == "STARTING_HOSTING" and r["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert wait_status(lv, "1") == "HOSTED"
    d = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]
    assert (d["MinInferenceUnits"], d["MaxInferenceUnits"]) == (1, 2)

    local = lvkit.client(demo_home)  # the same store, in process: the same answers
    for body in (dark, bright):
        remote = detect(lv, body)["DetectAnomalyResult"]
        assert remote == detect(local, body)["DetectAnomalyResult"]
    mask = Image.open(io.BytesIO(detect(lv, bright)["DetectAnomalyResult"]["AnomalyMask"]))
    assert mask.size == (64, 64) and mask.mode == "RGB"

    assert lv.stop_model(ProjectName="demo", ModelVersion="1")["Status"] == "STOPPING_HOSTING"
    assert wait_status(lv, "1") == "TRAINED"
    with pytest.raises(lv.exceptions.ConflictException):
        detect(lv, dark)


def test_errors_carry_their_fields(live, dark):
    lv = boto(live.url)
    with pytest.raises(lv.exceptions.ResourceNotFoundException) as info:
        detect(lv, dark, project="nope")
    assert info.value.response["ResourceId"] == "nope" and info.value.response["ResourceType"] == "PROJECT"
    assert info.value.response["Error"]["Message"] == "project 'nope' does not exist"
    assert info.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ResourceNotFoundException"
    with pytest.raises(lv.exceptions.ResourceNotFoundException) as info:
        lv.describe_model(ProjectName="demo", ModelVersion="9")
    assert info.value.response["ResourceType"] == "MODEL"
    with pytest.raises(lv.exceptions.ValidationException, match="image/png and image/jpeg"):
        detect(lv, dark, content_type="image/gif")
    with pytest.raises(lv.exceptions.ValidationException, match="positive integer"):
        lv.describe_model(ProjectName="demo", ModelVersion="01")
    with pytest.raises(lv.exceptions.ConflictException, match="delete them first"):
        lv.delete_project(ProjectName="demo")
    host(lv, "2")
    with pytest.raises(lv.exceptions.ValidationException, match="trained on 64x64"):
        detect(lv, np_png(96, 64), version="2")
    with pytest.raises(lv.exceptions.ValidationException, match="not a JPEG"):
        detect(lv, dark, version="2", content_type="image/jpeg")


def np_png(w, h):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_error_response_matches_in_process_client(live, demo_home, dark):
    lv, local = boto(live.url), lvkit.client(demo_home)
    for client in (lv, local):
        with pytest.raises(client.exceptions.ConflictException) as info:
            detect(client, dark)
        response = {k: v for k, v in info.value.response.items() if k != "ResponseMetadata"}
        if client is lv:
            remote = response
    assert remote == response
    assert str(info.value).startswith("An error occurred (ConflictException) when calling the DetectAnomalies")


def test_projects_pagination_and_deletion(live):
    lv = boto(live.url)
    for name in ("p1", "p2", "p3"):
        r = lv.create_project(ProjectName=name)["ProjectMetadata"]
        assert r["ProjectArn"] == f"arn:aws:lookoutvision:us-east-1:000000000000:project/{name}"
    pages = list(lv.get_paginator("list_projects").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(p["Projects"]) for p in pages] == [2, 2]
    assert [p["ProjectName"] for page in pages for p in page["Projects"]] == ["demo", "p1", "p2", "p3"]
    models = [m["ModelVersion"] for page in lv.get_paginator("list_models").paginate(
        ProjectName="demo", PaginationConfig={"PageSize": 1}) for m in page["Models"]]
    assert models == ["1", "2"]
    described = lv.describe_project(ProjectName="p1")["ProjectDescription"]
    assert described["ProjectName"] == "p1" and described["Datasets"] == []
    assert lv.delete_project(ProjectName="p1")["ProjectArn"].endswith("project/p1")
    with pytest.raises(lv.exceptions.ResourceNotFoundException):
        lv.describe_project(ProjectName="p1")
    with pytest.raises(lv.exceptions.ConflictException) as info:
        lv.create_project(ProjectName="p2")
    assert info.value.response["ResourceType"] == "PROJECT"


def test_tags(live):
    lv = boto(live.url)
    arn = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["ModelArn"]
    lv.tag_resource(ResourceArn=arn, Tags=[{"Key": "line", "Value": "3"}, {"Key": "team", "Value": "qa"}])
    assert lv.list_tags_for_resource(ResourceArn=arn)["Tags"] == [
        {"Key": "line", "Value": "3"}, {"Key": "team", "Value": "qa"}]
    lv.untag_resource(ResourceArn=arn, TagKeys=["line", "absent"])
    assert lv.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "qa"}]
    with pytest.raises(lv.exceptions.ResourceNotFoundException) as info:
        lv.list_tags_for_resource(ResourceArn=arn.replace("/1", "/7"))
    assert info.value.response["ResourceType"] == "MODEL"
    with pytest.raises(lv.exceptions.ValidationException, match="reserved"):
        lv.tag_resource(ResourceArn=arn, Tags=[{"Key": "aws:x", "Value": "1"}])
    with pytest.raises(lv.exceptions.ServiceQuotaExceededException) as info:
        lv.tag_resource(ResourceArn=arn, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(200)])
    assert info.value.response["QuotaCode"] and info.value.response["ServiceCode"] == "lookoutvision"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402


def test_client_token_idempotency(live):
    lv = boto(live.url)
    a = lv.create_project(ProjectName="tok", ClientToken="create-1")
    b = lv.create_project(ProjectName="tok", ClientToken="create-1")
    assert a["ProjectMetadata"] == b["ProjectMetadata"]
    with pytest.raises(lv.exceptions.ConflictException) as info:
        lv.create_project(ProjectName="tok-other", ClientToken="create-1")
    assert info.value.response["ResourceType"] == "PROJECT"

    first = lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1, ClientToken="start-1")
    assert wait_status(lv, "1") == "HOSTED"
    again = lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1, ClientToken="start-1")
    assert again["Status"] == first["Status"] == "STARTING_HOSTING"  # the first answer, no second start
    with pytest.raises(lv.exceptions.ConflictException, match="HOSTED"):  # a new token: a new request
        lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)
    lv.stop_model(ProjectName="demo", ModelVersion="1", ClientToken="stop-1")
    assert wait_status(lv, "1") == "TRAINED"
    assert lv.stop_model(ProjectName="demo", ModelVersion="1", ClientToken="stop-1")["Status"] == "STOPPING_HOSTING"
    assert lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "TRAINED"


def test_body_over_the_limit_refused_before_it_is_read(live):
    host(boto(live.url), "1")
    limit = live.service.max_bytes
    # Content-Length says too much: the answer comes without a byte of the body sent
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            f"POST /2020-11-20/projects/demo/models/1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            f"Content-Length: {limit + 1}\r\n\r\n".encode())
        answer = b""
        while b"}" not in answer:  # the JSON error body ends the answer
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    text = answer.decode("latin-1")
    assert text.startswith("HTTP/1.1 400") and "x-amzn-errortype: validationexception" in text.lower()
    assert f"the limit is {limit:,} bytes" in text
    # and through boto3, a body just over the limit
    lv = boto(live.url)
    with pytest.raises(lv.exceptions.ValidationException, match="the limit is"):
        detect(lv, b"\x89PNG\r\n\x1a\n" + bytes(limit))
