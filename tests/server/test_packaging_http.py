"""Model packaging jobs over HTTP: today's boto3 (lvkit's bundled model) against a live ``lvkit serve``,
the package written to a real S3 server (moto) through boto3's default chain."""

from __future__ import annotations

import io
import json
import time
import zipfile
from typing import Any

import pytest

from lvkit.backends.fake import FakeBackend
from tests.server.conftest import boto

pytestmark = pytest.mark.server


def wait_job(lv: Any, name: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = lv.describe_model_packaging_job(ProjectName="line", JobName=name)["ModelPackagingDescription"]
        if job["Status"] not in ("CREATED", "RUNNING") or time.monotonic() > deadline:
            return dict(job)
        time.sleep(0.05)


def test_start_describe_list_over_http(s3_env, lvkit_server):
    store = lvkit_server.service.store
    store.create_project("line")
    store.add_model("line", backend="fake", build=lambda d: FakeBackend.save(d, image_size=(64, 64)))
    bucket = s3_env.bucket("edge")
    lv = boto(lvkit_server.url)
    config = {"Greengrass": {"S3OutputLocation": {"Bucket": bucket, "Prefix": "packages/"},
                             "ComponentName": "line.model", "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
                             "Tags": [{"Key": "site", "Value": "north"}]}}
    names = []
    for i in range(3):
        greengrass = {**config["Greengrass"], "ComponentVersion": f"1.0.{i}"}
        answer = lv.start_model_packaging_job(ProjectName="line", ModelVersion="latest", JobName=f"edge-{i}",
                                              Description="for line 3", Configuration={"Greengrass": greengrass})
        assert answer["JobName"] == f"edge-{i}" and answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        names.append(answer["JobName"])
    for i, name in enumerate(names):
        job = wait_job(lv, name)
        assert job["Status"] == "SUCCEEDED", job["StatusMessage"]
        assert job["ModelVersion"] == "1" and job["ModelPackagingJobDescription"] == "for line 3"
        assert job["ModelPackagingConfiguration"]["Greengrass"]["ComponentVersion"] == f"1.0.{i}"
        assert job["ModelPackagingConfiguration"]["Greengrass"]["Tags"] == [{"Key": "site", "Value": "north"}]
        assert job["ModelPackagingOutputDetails"]["Greengrass"]["ComponentVersionArn"].endswith(
            f":components:line.model:versions:1.0.{i}")
    assert lv.can_paginate("list_model_packaging_jobs")
    pages = list(lv.get_paginator("list_model_packaging_jobs").paginate(ProjectName="line",
                                                                        PaginationConfig={"PageSize": 2}))
    assert [len(p["ModelPackagingJobs"]) for p in pages] == [2, 1]
    assert [j["JobName"] for p in pages for j in p["ModelPackagingJobs"]] == names
    keys = sorted(o["Key"] for o in s3_env.client.list_objects_v2(Bucket=bucket, Prefix="packages/")["Contents"])
    assert keys == [f"packages/line.model-1.0.{i}.zip" for i in range(3)]
    data = s3_env.client.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {"run.py", "recipe.yaml", "README.txt", "model/lvkit.json"} <= set(zf.namelist())
        assert json.loads(zf.read("recipe.yaml"))["Manifests"][0]["Platform"]["architecture"] == "amd64"

    # errors over the wire: the contract's codes, and nothing made
    with pytest.raises(lv.exceptions.ConflictException):
        lv.start_model_packaging_job(ProjectName="line", ModelVersion="1", JobName="edge-0", Configuration=config)
    with pytest.raises(lv.exceptions.ValidationException, match="ComponentVersion"):
        lv.start_model_packaging_job(ProjectName="line", ModelVersion="1", Configuration={"Greengrass": {
            **config["Greengrass"], "ComponentVersion": "v1"}})
    nowhere = {**config["Greengrass"], "ComponentVersion": "9.9.9",
               "S3OutputLocation": {"Bucket": "no-such-bucket-lvkit"}}
    with pytest.raises(lv.exceptions.ValidationException, match="no-such-bucket-lvkit"):
        lv.start_model_packaging_job(ProjectName="line", ModelVersion="1", Configuration={"Greengrass": nowhere})
    with pytest.raises(lv.exceptions.ResourceNotFoundException) as err:
        lv.describe_model_packaging_job(ProjectName="line", JobName="never")
    assert err.value.response["ResourceType"] == "MODEL_PACKAGE_JOB"
    assert len(lv.list_model_packaging_jobs(ProjectName="line")["ModelPackagingJobs"]) == 3
