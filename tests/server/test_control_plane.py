"""Datasets and CreateModel over HTTP, with manifests, images and outputs in a real S3 server (moto).

Today's boto3 (lvkit's bundled model) talks to a live ``lvkit serve``; the server reads the
manifests and images from moto's S3 through boto3's default chain (``AWS_ENDPOINT_URL_S3``),
as it would from real S3, and writes the training output there.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from lvkit.datasets import load_mvtec, write_manifest
from tests.server.conftest import boto

pytestmark = pytest.mark.server


def upload_benchmark(tiny_benchmark: Path, tmp_path: Path, s3: Any, bucket: str) -> dict[str, str]:
    """The tiny benchmark as train/test manifests whose references are relative keys in ``bucket``."""
    root = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, root)
    ds = load_mvtec(root)
    keys = {}
    for split in ("train", "test"):
        write_manifest(ds, root / f"{split}.manifest", split=split)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = f"lines/{path.relative_to(root).as_posix()}"
        s3.upload_file(str(path), bucket, key)
        keys[path.name] = key
    return keys


def wait(fn, done, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def source(bucket: str, key: str) -> dict:
    return {"GroundTruthManifest": {"S3Object": {"Bucket": bucket, "Key": key}}}


def test_datasets_from_s3_then_create_model_writes_its_output(s3_env, lvkit_server, tiny_benchmark, tmp_path):
    bucket = s3_env.bucket("lines")
    upload_benchmark(tiny_benchmark, tmp_path, s3_env.client, bucket)
    lv = boto(lvkit_server.url)
    lv.create_project(ProjectName="line")

    for bad_bucket, key in ((bucket, "lines/missing.manifest"), ("no-such-bucket-lvkit", "lines/train.manifest")):
        with pytest.raises(lv.exceptions.ValidationException, match="no manifest at s3://"):
            lv.create_dataset(ProjectName="line", DatasetType="train", DatasetSource=source(bad_bucket, key))
    with pytest.raises(lv.exceptions.ValidationException, match="DatasetType"):
        lv.create_dataset(ProjectName="line", DatasetType="validation")
    for kind in ("train", "test"):
        meta = lv.create_dataset(ProjectName="line", DatasetType=kind,
                                 DatasetSource=source(bucket, f"lines/{kind}.manifest"))["DatasetMetadata"]
        assert meta["Status"] == "CREATE_IN_PROGRESS" and meta["DatasetType"] == kind
    train = wait(lambda: lv.describe_dataset(ProjectName="line", DatasetType="train")["DatasetDescription"],
                 lambda d: d["Status"] != "CREATE_IN_PROGRESS")
    test = wait(lambda: lv.describe_dataset(ProjectName="line", DatasetType="test")["DatasetDescription"],
                lambda d: d["Status"] != "CREATE_IN_PROGRESS")
    assert train["Status"] == "CREATE_COMPLETE", train["StatusMessage"]
    assert train["ImageStats"] == {"Total": 12, "Labeled": 12, "Normal": 12, "Anomaly": 0}
    assert test["Status"] == "CREATE_COMPLETE" and test["ImageStats"]["Anomaly"] > 0
    assert [d["DatasetType"] for d in lv.describe_project(ProjectName="line")["ProjectDescription"]["Datasets"]] \
        == ["train", "test"]

    pages = lv.get_paginator("list_dataset_entries").paginate(ProjectName="line", DatasetType="test",
                                                              AnomalyClass="anomaly", PaginationConfig={"PageSize": 3})
    entries = [json.loads(line) for page in pages for line in page["DatasetEntries"]]
    assert len(entries) == test["ImageStats"]["Anomaly"] and all(e["anomaly-label"] == 1 for e in entries)
    assert all("anomaly-mask-ref" in e for e in entries)  # segmentation lines come back as they were written

    with pytest.raises(lv.exceptions.ValidationException, match="bucket"):
        lv.create_model(ProjectName="line", OutputConfig={"S3Location": {"Bucket": "no-such-bucket-lvkit"}})
    created = lv.create_model(ProjectName="line", Description="padim-64",
                              OutputConfig={"S3Location": {"Bucket": bucket, "Prefix": "runs/"}},
                              KmsKeyId="alias/lvkit-test",
                              Tags=[{"Key": "lvkit:model", "Value": "padim"},
                                    {"Key": "lvkit:image-size", "Value": "64"}, {"Key": "team", "Value": "qa"}])
    assert created["ModelMetadata"]["Status"] == "TRAINING" and created["ResponseMetadata"]["HTTPStatusCode"] == 202
    version = created["ModelMetadata"]["ModelVersion"]
    with pytest.raises(lv.exceptions.ConflictException, match="TRAINING"):
        lv.delete_model(ProjectName="line", ModelVersion=version)
    with pytest.raises(lv.exceptions.ConflictException, match="TRAINING"):
        lv.update_dataset_entries(ProjectName="line", DatasetType="train", Changes=b'{"source-ref": "s3://b/x.png"}')
    model = wait(lambda: lv.describe_model(ProjectName="line", ModelVersion=version)["ModelDescription"],
                 lambda m: m["Status"] != "TRAINING")
    assert model["Status"] == "TRAINED", model["StatusMessage"]
    assert model["OutputConfig"] == {"S3Location": {"Bucket": bucket, "Prefix": "runs/"}}
    assert model["KmsKeyId"] == "alias/lvkit-test" and model["Description"] == "padim-64"
    assert model["EvaluationResult"]["Key"] == f"runs/line/{version}/EvaluationResult-line.json"
    result = json.loads(s3_env.client.get_object(**model["EvaluationResult"])["Body"].read())
    metrics = result["AggregatedEvaluationResults"]["Metrics"]
    assert metrics["F1Score"] == pytest.approx(model["Performance"]["F1Score"])
    assert 0.0 <= metrics["ROCAUC"] <= 1.0
    labels = sorted({json.loads(e)["anomaly-mask-ref-metadata"]["internal-color-map"]["1"]["class-name"]
                     for e in lv.list_dataset_entries(ProjectName="line", DatasetType="test",
                                                      AnomalyClass="anomaly")["DatasetEntries"]})
    per_label = metrics["PixelAnomalyClassMetrics"]
    assert [m["ClassName"] for m in per_label] == labels
    for m in per_label:
        assert 0.0 <= m["AIOU"] <= 1.0 and 0.0 <= m["Recall"] <= 1.0
        p, r = m["Precision"], m["Recall"]
        assert m["F1Score"] == pytest.approx(0.0 if p + r == 0 else 2 * p * r / (p + r))
    details = result["EvaluationDetails"]
    # the train dataset has no anomaly: half the test dataset set the threshold (lvkit.training.plan_splits)
    assert details["NumberOfTrainingImages"] + details["NumberOfTestingImages"] == 12 + test["ImageStats"]["Total"]
    assert details["ModelArn"] == model["ModelArn"]
    body = s3_env.client.get_object(**model["EvaluationManifest"])["Body"].read().decode()
    lines = [json.loads(x) for x in body.splitlines()]
    assert len(lines) == details["NumberOfTestingImages"]
    assert {x["source-ref"] for x in lines} <= {json.loads(e)["source-ref"] for e in lv.list_dataset_entries(
        ProjectName="line", DatasetType="test")["DatasetEntries"]}
    detected = [x["anomaly-label-detected"] for x in lines]
    truth = [x["anomaly-label"] for x in lines]
    tp = sum(d and t for d, t in zip(detected, truth))
    assert model["Performance"]["Recall"] == pytest.approx(tp / sum(truth))  # the manifest is what was scored
    arn = model["ModelArn"]
    assert {t["Key"]: t["Value"] for t in lv.list_tags_for_resource(ResourceArn=arn)["Tags"]}["lvkit:model"] == "padim"

    status = lv.update_dataset_entries(ProjectName="line", DatasetType="train",
                                       Changes=json.dumps({"source-ref": f"s3://{bucket}/lines/missing.png"}).encode())
    assert status["Status"] == "UPDATE_IN_PROGRESS"
    d = wait(lambda: lv.describe_dataset(ProjectName="line", DatasetType="train")["DatasetDescription"],
             lambda d: d["Status"] != "UPDATE_IN_PROGRESS")
    assert d["Status"] == "UPDATE_FAILED_ROLLBACK_COMPLETE" and "missing.png" in d["StatusMessage"]
    assert d["ImageStats"]["Total"] == 12

    with pytest.raises(lv.exceptions.ConflictException, match="model versions"):
        lv.delete_project(ProjectName="line")
    assert lv.delete_model(ProjectName="line", ModelVersion=version)["ModelArn"] == arn
    with pytest.raises(lv.exceptions.ConflictException, match="datasets"):
        lv.delete_project(ProjectName="line")
    lv.delete_dataset(ProjectName="line", DatasetType="test")
    lv.delete_dataset(ProjectName="line", DatasetType="train")
    lv.delete_project(ProjectName="line")


def test_create_model_failures_say_why(s3_env, lvkit_server, tmp_path):
    bucket = s3_env.bucket("few")
    lv = boto(lvkit_server.url)
    lv.create_project(ProjectName="few")
    with pytest.raises(lv.exceptions.ValidationException, match="no train dataset"):
        lv.create_model(ProjectName="few", OutputConfig={"S3Location": {"Bucket": bucket}})
    from PIL import Image

    lines = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 64), (i, i, i)).save(path)
        s3_env.client.upload_file(str(path), bucket, f"img/{i}.png")
        lines.append(json.dumps({"source-ref": f"s3://{bucket}/img/{i}.png", "anomaly-label": 0}))
    s3_env.client.put_object(Bucket=bucket, Key="train.manifest", Body="\n".join(lines).encode())
    lv.create_dataset(ProjectName="few", DatasetType="train", DatasetSource=source(bucket, "train.manifest"))
    wait(lambda: lv.describe_dataset(ProjectName="few", DatasetType="train")["DatasetDescription"]["Status"],
         lambda s: s != "CREATE_IN_PROGRESS")
    for tags, message in [([{"Key": "lvkit:modle", "Value": "padim"}], "unknown lvkit tag"),
                          ([{"Key": "lvkit:model", "Value": "nope"}], "not one lvkit trains"),
                          ([{"Key": "lvkit:image-size", "Value": "big"}], "whole number"),
                          ([{"Key": "lvkit:model", "Value": "padim"}, {"Key": "lvkit:option:n_featurs", "Value": "9"}],
                           "takes no option 'n_featurs'")]:
        with pytest.raises(lv.exceptions.ValidationException, match=message):
            lv.create_model(ProjectName="few", OutputConfig={"S3Location": {"Bucket": bucket}}, Tags=tags)
    with pytest.raises(lv.exceptions.ValidationException, match="Description"):
        lv.create_model(ProjectName="few", OutputConfig={"S3Location": {"Bucket": bucket}}, Description="a b")
    version = lv.create_model(ProjectName="few", OutputConfig={"S3Location": {"Bucket": bucket}},
                              Tags=[{"Key": "lvkit:model", "Value": "padim"}])["ModelMetadata"]["ModelVersion"]
    model = wait(lambda: lv.describe_model(ProjectName="few", ModelVersion=version)["ModelDescription"],
                 lambda m: m["Status"] != "TRAINING")
    assert model["Status"] == "TRAINING_FAILED"
    assert "at least 20 normal images" in model["StatusMessage"] and "found 3" in model["StatusMessage"]
    assert "EvaluationResult" not in model
    assert lv.list_models(ProjectName="few")["Models"][0]["Status"] == "TRAINING_FAILED"
    with pytest.raises(lv.exceptions.ValidationException):
        lv.delete_model(ProjectName="few", ModelVersion="latest")
    lv.delete_model(ProjectName="few", ModelVersion=version)


def test_lvkit_serve_reads_s3_references_only_and_takes_10_mib_of_changes(tmp_path):
    """A remote client must not make the server copy the server's own files; UpdateDatasetEntries
    takes its whole 10 MiB of Changes over HTTP (base64 in JSON: more than the 1 MiB JSON limit)."""
    from PIL import Image

    import lvkit

    image = tmp_path / "files" / "a.png"
    image.parent.mkdir()
    Image.new("RGB", (64, 64)).save(image)
    with lvkit.serving(tmp_path / "home") as server:
        lv = server.client()
        lv.create_project(ProjectName="p")
        lv.create_dataset(ProjectName="p", DatasetType="train")
        lv.update_dataset_entries(ProjectName="p", DatasetType="train",
                                  Changes=json.dumps({"source-ref": str(image)}).encode())
        d = wait(lambda: lv.describe_dataset(ProjectName="p", DatasetType="train")["DatasetDescription"],
                 lambda d: d["Status"] != "UPDATE_IN_PROGRESS", timeout=60)
        assert d["Status"] == "UPDATE_FAILED_ROLLBACK_COMPLETE" and "s3:// references only" in d["StatusMessage"]
        assert str(tmp_path) not in d["StatusMessage"]
        teacher = [{"Key": "lvkit:model", "Value": "efficient_ad"},
                   {"Key": "lvkit:option:teacher_weights", "Value": str(image)}]  # a file of the server's
        with pytest.raises(lv.exceptions.ValidationException, match="names a file on this server, which reads none"):
            lv.create_model(ProjectName="p", Tags=teacher, OutputConfig={"S3Location": {"Bucket": "none"}})
        line = json.dumps({"pad": "x" * 2000}) + "\n"  # no source-ref: refused at once, no S3 asked
        big = line * (9 * 1024 * 1024 // len(line))
        assert lv.update_dataset_entries(ProjectName="p", DatasetType="train", Changes=big.encode())["Status"] == \
            "UPDATE_IN_PROGRESS"
    with lvkit.serving(tmp_path / "home", args=["--local-files", str(image.parent)]) as server:
        lv = server.client()
        wait(lambda: lv.describe_dataset(ProjectName="p", DatasetType="train")["DatasetDescription"],
             lambda d: d["Status"] != "UPDATE_IN_PROGRESS", timeout=60)
        lv.update_dataset_entries(ProjectName="p", DatasetType="train",
                                  Changes=json.dumps({"source-ref": str(image)}).encode())
        d = wait(lambda: lv.describe_dataset(ProjectName="p", DatasetType="train")["DatasetDescription"],
                 lambda d: d["Status"] != "UPDATE_IN_PROGRESS", timeout=60)
        assert d["Status"] == "UPDATE_COMPLETE" and d["ImageStats"]["Total"] == 1, d["StatusMessage"]
        outside = [teacher[0], {"Key": "lvkit:option:teacher_weights", "Value": str(tmp_path / "home" / "x.pth")}]
        with pytest.raises(lv.exceptions.ValidationException, match="outside the folder this server reads"):
            lv.create_model(ProjectName="p", Tags=outside, OutputConfig={"S3Location": {"Bucket": "none"}})
