"""A whole pipeline written for the real service: S3 manifests, datasets, training, hosting, packaging.

Run by ``test_genuine_pipeline.py`` with boto3/botocore 1.40.60 (and again with today's boto3
and lvkit's bundled model), under a named profile whose config file points ``lookoutvision`` at
``lvkit serve`` and ``s3`` at an S3-compatible server. Nothing in it knows about lvkit::

    python genuine_pipeline.py BUCKET IMAGES_DIR [--tag KEY=VALUE ...]

IMAGES_DIR is an MVTec-style folder (``train/good``, ``test/good``, ``test/<defect>``). Prints
what it saw as JSON on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

PROJECT = "pipeline"


def wait(fn, busy: tuple[str, ...], timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = fn()
        if answer["Status"] not in busy or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def manifest_line(bucket: str, key: str, label: int) -> str:
    return json.dumps({
        "source-ref": f"s3://{bucket}/{key}",
        "anomaly-label": label,
        "anomaly-label-metadata": {"class-name": "anomaly" if label else "normal", "confidence": 1,
                                   "type": "groundtruth/image-classification", "human-annotated": "yes",
                                   "job-name": "labeling-job/pipeline", "creation-date": "2024-05-01T10:00:00"},
    })


def main(bucket: str, images: Path, tags: list[dict]) -> dict:
    import boto3
    import botocore

    seen: dict = {"botocore": botocore.__version__}
    session = boto3.Session()  # the profile named by AWS_PROFILE
    s3 = session.client("s3")
    lv = session.client("lookoutvision")
    seen["endpoints"] = [lv.meta.endpoint_url, s3.meta.endpoint_url]

    # 1. a project, the images in S3, a train and a test manifest beside them
    lv.create_project(ProjectName=PROJECT)
    manifests: dict[str, list[str]] = {"train": [], "test": []}
    for path in sorted(images.rglob("*.png")):
        split, kind = path.relative_to(images).parts[:2]
        if split not in manifests:
            continue
        key = f"images/{path.relative_to(images).as_posix()}"
        s3.upload_file(str(path), bucket, key)
        manifests[split].append(manifest_line(bucket, key, 0 if kind == "good" else 1))
    for split, lines in manifests.items():
        s3.put_object(Bucket=bucket, Key=f"manifests/{split}.manifest", Body="\n".join(lines).encode())

    # 2. CreateDataset twice, from the manifests
    for split in ("train", "test"):
        lv.create_dataset(ProjectName=PROJECT, DatasetType=split, DatasetSource={"GroundTruthManifest": {
            "S3Object": {"Bucket": bucket, "Key": f"manifests/{split}.manifest"}}})
    for split in ("train", "test"):
        d = wait(lambda: lv.describe_dataset(ProjectName=PROJECT, DatasetType=split)["DatasetDescription"],
                 ("CREATE_IN_PROGRESS",))
        seen[f"dataset_{split}"] = [d["Status"], d["ImageStats"]]

    # 3. CreateModel, poll until TRAINED, read Performance and the evaluation result from S3
    kw = {"Tags": tags} if tags else {}
    created = lv.create_model(ProjectName=PROJECT, Description="first",
                              OutputConfig={"S3Location": {"Bucket": bucket, "Prefix": "training-output/"}}, **kw)
    version = created["ModelMetadata"]["ModelVersion"]
    seen["created"] = [created["ModelMetadata"]["Status"], version]
    model = wait(lambda: lv.describe_model(ProjectName=PROJECT, ModelVersion=version)["ModelDescription"],
                 ("TRAINING",))
    seen["trained"] = [model["Status"], model["StatusMessage"], sorted(model.get("Performance", {}))]
    result = json.loads(s3.get_object(Bucket=model["EvaluationResult"]["Bucket"],
                                      Key=model["EvaluationResult"]["Key"])["Body"].read())
    metrics = result["AggregatedEvaluationResults"]["Metrics"]
    seen["evaluation"] = [metrics["F1Score"] == model["Performance"]["F1Score"],
                          result["EvaluationDetails"]["ModelArn"] == model["ModelArn"]]
    manifest = s3.get_object(Bucket=model["EvaluationManifest"]["Bucket"], Key=model["EvaluationManifest"]["Key"])
    seen["evaluation_lines"] = len(manifest["Body"].read().decode().splitlines())

    # 4. host it, detect, list and update the dataset, stop
    lv.start_model(ProjectName=PROJECT, ModelVersion=version, MinInferenceUnits=1)
    seen["hosted"] = wait(lambda: lv.describe_model(ProjectName=PROJECT, ModelVersion=version)["ModelDescription"],
                          ("STARTING_HOSTING",))["Status"]
    defect = next(p for p in sorted((images / "test").rglob("*.png")) if p.parent.name != "good")
    r = lv.detect_anomalies(ProjectName=PROJECT, ModelVersion=version, ContentType="image/png",
                            Body=defect.read_bytes())["DetectAnomalyResult"]
    seen["detect"] = [r["IsAnomalous"], 0.5 <= r["Confidence"] <= 1.0]
    entries = [json.loads(line) for page in lv.get_paginator("list_dataset_entries").paginate(
        ProjectName=PROJECT, DatasetType="test", AnomalyClass="anomaly") for line in page["DatasetEntries"]]
    seen["anomaly_entries"] = len(entries)
    extra = sorted((images / "train" / "good").glob("*.png"))[0]
    s3.upload_file(str(extra), bucket, "images/extra/normal.png")
    status = lv.update_dataset_entries(ProjectName=PROJECT, DatasetType="train",
                                       Changes=manifest_line(bucket, "images/extra/normal.png", 0).encode())["Status"]
    d = wait(lambda: lv.describe_dataset(ProjectName=PROJECT, DatasetType="train")["DatasetDescription"],
             ("UPDATE_IN_PROGRESS",))
    seen["update"] = [status, d["Status"], d["ImageStats"]["Total"]]
    lv.stop_model(ProjectName=PROJECT, ModelVersion=version)
    seen["stopped"] = wait(lambda: lv.describe_model(ProjectName=PROJECT, ModelVersion=version)["ModelDescription"],
                           ("STOPPING_HOSTING",))["Status"]

    # 5. package it for an edge device
    job = lv.start_model_packaging_job(ProjectName=PROJECT, ModelVersion=version, JobName="edge-1", Configuration={
        "Greengrass": {"S3OutputLocation": {"Bucket": bucket, "Prefix": "packages/"}, "ComponentName": "pipeline.model",
                       "ComponentVersion": "1.0.0", "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}})
    described = wait(lambda: lv.describe_model_packaging_job(ProjectName=PROJECT, JobName=job["JobName"])[
        "ModelPackagingDescription"], ("CREATED", "RUNNING"))
    seen["package"] = [described["Status"], described.get("StatusMessage", ""),
                       described.get("ModelPackagingOutputDetails", {}).get("Greengrass", {}).get("ComponentName")]
    seen["jobs"] = [j["JobName"] for page in lv.get_paginator("list_model_packaging_jobs").paginate(
        ProjectName=PROJECT) for j in page["ModelPackagingJobs"]]
    seen["package_objects"] = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="packages/")
                               .get("Contents", [])]

    # 6. delete it all
    lv.delete_model(ProjectName=PROJECT, ModelVersion=version)
    wait(lambda: {"Status": "DELETING" if lv.list_models(ProjectName=PROJECT)["Models"] else "gone"}, ("DELETING",))
    for split in ("test", "train"):
        lv.delete_dataset(ProjectName=PROJECT, DatasetType=split)
    lv.delete_project(ProjectName=PROJECT)
    seen["projects_left"] = [p["ProjectName"] for p in lv.list_projects()["Projects"]]
    return seen


if __name__ == "__main__":
    args = sys.argv[1:]
    tags = [dict(zip(("Key", "Value"), a.split("=", 1))) for flag, a in zip(args[2::2], args[3::2]) if flag == "--tag"]
    print(json.dumps(main(args[0], Path(args[1]), tags)))
