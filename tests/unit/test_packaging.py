"""Model packaging jobs in process (lvkit.packaging): the package and its runner, statuses, bad inputs, crashes.

Versions are fake (no torch); outputs are a local folder or moto's S3 server (tests/s3.py).
The package's run.py runs in a subprocess with this interpreter.
"""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ParamValidationError

from lvkit import packaging
from lvkit.errors import ConflictException, ValidationException
from lvkit.greengrass import GreengrassConfiguration, TargetPlatform
from lvkit.service import LookoutVisionService
from lvkit.shapes import DetectAnomalyResult, PackagingJobStatus
from lvkit.store import Store

#: a recalibrator that pushes every P(anomaly) up (a dark, normal image becomes anomalous)
SHIFT = {"kind": "platt", "slope": 1.0, "intercept": 3.0, "eps": 1e-6}


def configuration(bucket: str = "edge-packages", **members: Any) -> dict[str, Any]:
    greengrass = {"S3OutputLocation": {"Bucket": bucket, "Prefix": "packages/"}, "ComponentName": "line.model"}
    return {"Greengrass": {**greengrass, **members}}


def unzip(data: bytes, folder: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(folder)
    return folder


def run_package(folder: Path, *images: Path) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "run.py", *map(str, images)], cwd=folder, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def jobs(lv: Any, project: str = "demo") -> list[str]:
    return [j["JobName"] for j in lv.list_model_packaging_jobs(ProjectName=project)["ModelPackagingJobs"]]


def test_a_package_in_a_local_folder_answers_as_the_service(lv, tmp_path, dark, bright):
    out = tmp_path / "out"
    name = lv.service.start_model_packaging_job("demo", "latest", GreengrassConfiguration("line.model", str(out)),
                                                job_name="edge-1", description="first package")
    assert name == "edge-1"
    job = lv.describe_model_packaging_job(ProjectName="demo", JobName="edge-1")["ModelPackagingDescription"]
    assert job["Status"] == "SUCCEEDED" and job["ModelVersion"] == "1"  # latest, recorded as its number
    assert job["ModelPackagingConfiguration"] == {"Greengrass": {"ComponentName": "line.model",
                                                                 "ComponentVersion": "1.0.0"}}  # local: no S3 location
    assert job["ModelPackagingJobDescription"] == "first package" and job["ModelPackagingMethod"] == "lvkit"
    assert job["ModelPackagingOutputDetails"] == {"Greengrass": {
        "ComponentVersionArn": "arn:aws:greengrass:us-east-1:000000000000:components:line.model:versions:1.0.0",
        "ComponentName": "line.model", "ComponentVersion": "1.0.0"}}
    assert job["LastUpdatedTimestamp"] >= job["CreationTimestamp"] and str(out) in job["StatusMessage"]
    package = out / "line.model-1.0.0.zip"
    assert lv.service.describe_model_packaging_job("demo", "edge-1").package_uri == str(package)
    with zipfile.ZipFile(package) as zf:
        assert sorted(zf.namelist()) == ["README.txt", "model/lvkit.json", "recipe.yaml", "run.py"]
        recipe = json.loads(zf.read("recipe.yaml"))  # JSON, which is YAML
        assert "pip install lvkit" in zf.read("README.txt").decode()
    assert (recipe["ComponentName"], recipe["ComponentVersion"]) == ("line.model", "1.0.0")
    assert recipe["Manifests"][0]["Platform"] == {"os": "linux"}
    assert "run.py" in recipe["Manifests"][0]["Lifecycle"]["Run"]
    assert recipe["Manifests"][0]["Artifacts"] == [{"Uri": str(package), "Unarchive": "ZIP"}]

    # the runner, in its own interpreter, answers what the hosted service answers
    folder = unzip(package.read_bytes(), tmp_path / "unzipped")
    images = [tmp_path / "dark.png", tmp_path / "bright.png"]
    images[0].write_bytes(dark)
    images[1].write_bytes(bright)
    lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)
    served = [lv.service.detect_anomalies("demo", "1", p.read_bytes(), "image/png").to_json() for p in images]
    assert run_package(folder, *images) == [{"DetectAnomalyResult": s} for s in served]
    assert served[1]["IsAnomalous"] and "AnomalyMask" in served[1]  # segmentation: the mask travels too
    assert run_package(folder) == [{"ProjectName": "demo", "ModelVersion": "1", "Ready": True}]

    # with a recalibrator attached, the package carries it and the runner applies it
    lv.attach_calibration(ProjectName="demo", ModelVersion="1", Calibration=SHIFT)
    lv.service.start_model_packaging_job("demo", "1", GreengrassConfiguration("line.model", str(out),
                                                                              component_version="1.0.1"))
    with zipfile.ZipFile(out / "line.model-1.0.1.zip") as zf:
        assert json.loads(zf.read("model/calibration.json")) == SHIFT
        folder = unzip(out.joinpath("line.model-1.0.1.zip").read_bytes(), tmp_path / "calibrated")
    recalibrated = lv.service.detect_anomalies("demo", "1", dark, "image/png").to_json()
    assert recalibrated["IsAnomalous"] and not served[0]["IsAnomalous"]
    assert run_package(folder, images[0]) == [{"DetectAnomalyResult": recalibrated}]
    assert DetectAnomalyResult.from_wire(recalibrated).is_anomalous
    assert len(jobs(lv)) == 2


def test_a_bad_image_answers_an_error_line_and_a_missing_lvkit_says_what_to_install(lv, tmp_path, dark):
    lv.service.start_model_packaging_job("demo", "1", GreengrassConfiguration("c", str(tmp_path / "out")))
    folder = unzip((tmp_path / "out" / "c-1.0.0.zip").read_bytes(), tmp_path / "pkg")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "dark.png").write_bytes(dark)
    out = subprocess.run([sys.executable, "run.py", str(tmp_path / "bad.png"), str(tmp_path / "dark.png")],
                         cwd=folder, capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 1 and lines[0]["__type"] == "ValidationException" and "DetectAnomalyResult" in lines[1]
    # without lvkit (no site-packages) it says what to install
    out = subprocess.run([sys.executable, "-S", "run.py", str(tmp_path / "dark.png")], cwd=folder,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "run.py needs lvkit with the fake backend: pip install lvkit" in out.stderr


def test_statuses_created_running_succeeded(home, make_fake_version, tmp_path, monkeypatch):
    svc = LookoutVisionService(home, wait=False)
    make_fake_version(svc.store, "demo")
    started: list[Any] = []
    monkeypatch.setattr(svc.packaging, "_start", lambda key, target: started.append(target))
    seen: list[PackagingJobStatus] = []
    real = packaging.write_package

    def watched(*args: Any, **kwargs: Any) -> None:
        seen.append(svc.describe_model_packaging_job("demo", "j").status)
        real(*args, **kwargs)

    monkeypatch.setattr(packaging, "write_package", watched)
    svc.start_model_packaging_job("demo", "1", GreengrassConfiguration("c", str(tmp_path / "out")), job_name="j")
    created = svc.describe_model_packaging_job("demo", "j")
    assert created.status is PackagingJobStatus.CREATED and created.output_details is None
    assert created.to_wire()["ModelPackagingConfiguration"]["Greengrass"]["ComponentVersion"] == "1.0.0"
    started[0]()
    assert seen == [PackagingJobStatus.RUNNING]
    assert svc.describe_model_packaging_job("demo", "j").status is PackagingJobStatus.SUCCEEDED
    svc.close()


def test_a_package_that_cannot_be_written_fails_the_job(lv, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    lv.service.start_model_packaging_job("demo", "1", GreengrassConfiguration("c", str(blocker / "out")),
                                         job_name="blocked")
    job = lv.describe_model_packaging_job(ProjectName="demo", JobName="blocked")["ModelPackagingDescription"]
    assert job["Status"] == "FAILED" and "could not be written" in job["StatusMessage"]
    assert "ModelPackagingOutputDetails" not in job
    assert not list((lv.service.store.home / "artifacts" / "demo").glob(".tmp-*"))  # no leftover zip
    # a FAILED job frees its component name and version
    lv.service.start_model_packaging_job("demo", "1", GreengrassConfiguration("c", str(tmp_path / "out")))
    assert (tmp_path / "out" / "c-1.0.0.zip").is_file()


def test_to_s3_with_every_greengrass_field(lv, s3_env, tmp_path):
    bucket = s3_env.bucket("edge")
    config = configuration(bucket, ComponentVersion="2.3.4", ComponentDescription="Line 3 (camera A)",
                           TargetPlatform={"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
                           CompilerOptions='{"gpu-code": "sm_72", "trt-ver": "7.1.3", "cuda-ver": "10.2"}',
                           Tags=[{"Key": "site", "Value": "north"}])
    name = lv.start_model_packaging_job(ProjectName="demo", ModelVersion="1", Configuration=config,
                                        Description="for the edge")["JobName"]
    assert name.startswith("demo-1-") and len(name) == len("demo-1-") + 8  # generated, as the service did
    job = lv.describe_model_packaging_job(ProjectName="demo", JobName=name)["ModelPackagingDescription"]
    assert job["Status"] == "SUCCEEDED" and job["ModelPackagingConfiguration"] == config
    assert job["ModelPackagingOutputDetails"]["Greengrass"]["ComponentVersion"] == "2.3.4"
    data = s3_env.client.get_object(Bucket=bucket, Key="packages/line.model-2.3.4.zip")["Body"].read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        recipe = json.loads(zf.read("recipe.yaml"))
    manifest = recipe["Manifests"][0]
    assert manifest["Platform"] == {"os": "linux", "architecture": "aarch64"}
    assert manifest["Artifacts"][0]["Uri"] == f"s3://{bucket}/packages/line.model-2.3.4.zip"
    assert recipe["ComponentDescription"] == "Line 3 (camera A)"
    settings = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    assert settings["TargetPlatform"] == config["Greengrass"]["TargetPlatform"]
    assert settings["CompilerOptions"] == config["Greengrass"]["CompilerOptions"]

    # a bucket that is not there: ValidationException naming it, and no job
    with pytest.raises(lv.exceptions.ValidationException, match="no-such-bucket-lvkit"):
        lv.start_model_packaging_job(ProjectName="demo", ModelVersion="1", JobName="nowhere",
                                     Configuration=configuration("no-such-bucket-lvkit", ComponentVersion="9.9.9"))
    assert jobs(lv) == [name]


def test_list_is_paginated(lv, tmp_path):
    names = [lv.service.start_model_packaging_job("demo", "1", GreengrassConfiguration(
        "c", str(tmp_path), component_version=f"1.0.{i}"), job_name=f"job-{i}") for i in range(5)]
    seen, token, pages = [], None, 0
    while True:
        page = lv.list_model_packaging_jobs(ProjectName="demo", MaxResults=2, **({"NextToken": token} if token
                                                                                else {}))
        seen += [j["JobName"] for j in page["ModelPackagingJobs"]]
        pages += 1
        assert set(page["ModelPackagingJobs"][0]) == {"JobName", "ProjectName", "ModelVersion", "ModelPackagingMethod",
                                                     "Status", "StatusMessage", "CreationTimestamp",
                                                     "LastUpdatedTimestamp"}
        token = page.get("NextToken")
        if not token:
            break
    assert seen == names and pages == 3
    assert lv.can_paginate("list_model_packaging_jobs")
    with pytest.raises(lv.exceptions.ValidationException, match="MaxResults"):
        lv.list_model_packaging_jobs(ProjectName="demo", MaxResults=101)
    with pytest.raises(lv.exceptions.ResourceNotFoundException):
        lv.list_model_packaging_jobs(ProjectName="nope")


BAD = [
    ({"JobName": "edge_1"}, "JobName 'edge_1' is invalid"),
    ({"JobName": "x" * 65}, "JobName"),
    ({"ModelVersion": "01"}, "ModelVersion '01' is invalid"),
    ({"Description": "<script>"}, "Description '<script>' is invalid"),
    ({"ClientToken": "tok_1"}, "ClientToken"),
    ({"Configuration": {}}, "Configuration.Greengrass is required"),
    ({"Configuration": {"Greengrass": {"ComponentName": "c"}}},
     "Configuration.Greengrass.S3OutputLocation is required"),
    ({"Configuration": {"Greengrass": {"S3OutputLocation": {"Bucket": "edge"}}}},
     "Configuration.Greengrass.ComponentName is required"),
    ({"Configuration": configuration(Bogus=1)}, "Configuration.Greengrass has no member 'Bogus'"),
    ({"Configuration": {**configuration(), "Other": {}}}, "Configuration has no member 'Other'"),
    ({"Configuration": configuration(ComponentName="line/model")}, "ComponentName 'line/model' is invalid"),
    ({"Configuration": configuration(ComponentVersion="1.0")}, "ComponentVersion '1.0' is invalid"),
    ({"Configuration": configuration(ComponentVersion="1234567.0.0")}, "ComponentVersion"),
    ({"Configuration": configuration(ComponentDescription="a\nb")}, "ComponentDescription"),
    ({"Configuration": configuration(TargetDevice="jetson_nano")}, "TargetDevice 'jetson_nano' is invalid"),
    ({"Configuration": configuration(TargetPlatform={"Os": "WINDOWS", "Arch": "X86_64"})},
     "TargetPlatform.Os 'WINDOWS' is invalid: valid values are LINUX"),
    ({"Configuration": configuration(TargetPlatform={"Os": "LINUX", "Arch": "ARM_64"})},
     "TargetPlatform.Arch 'ARM_64' is invalid: valid values are ARM64, X86_64"),
    ({"Configuration": configuration(TargetPlatform={"Os": "LINUX", "Arch": "X86_64", "Accelerator": "AMD"})},
     "TargetPlatform.Accelerator 'AMD' is invalid"),
    ({"Configuration": configuration(TargetPlatform={"Os": "LINUX"})},
     "Configuration.Greengrass.TargetPlatform.Arch is required"),
    ({"Configuration": configuration(TargetPlatform={"Os": "LINUX", "Arch": "X86_64", "Cpu": "x"})},
     "TargetPlatform has no member 'Cpu'"),
    ({"Configuration": configuration(TargetDevice="jetson_xavier", TargetPlatform={"Os": "LINUX", "Arch": "ARM64"})},
     "exclude each other"),
    ({"Configuration": configuration(TargetDevice="jetson_xavier", CompilerOptions='{"mcpu": "x"}')},
     "CompilerOptions cannot be given with TargetDevice"),
    ({"Configuration": configuration(TargetPlatform={"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"},
                                     CompilerOptions='{"gpu-code": "sm_75"}')}, "missing trt-ver, cuda-ver"),
    ({"Configuration": configuration(CompilerOptions="ab")}, "CompilerOptions must be 3 to 1024 characters"),
    ({"Configuration": configuration(Tags=[{"Key": "aws:owner", "Value": "x"}])}, "'aws:' is reserved"),
    ({"Configuration": configuration(Tags={"site": "north"})}, "Tags must be a list"),
    ({"Configuration": configuration(ComponentName=7)}, "ComponentName must be a string"),
    ({"Configuration": configuration("x")}, "S3OutputLocation Bucket 'x' is not a bucket name"),
    ({"Configuration": {"Greengrass": {"S3OutputLocation": {"Bucket": "edge", "Prefix": "/abs"},
                                       "ComponentName": "c"}}}, "S3OutputLocation Prefix '/abs' is invalid"),
]


@pytest.mark.parametrize(("change", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_inputs_answer_validation_and_make_nothing(lv, s3_env, change, message):
    call = {"ProjectName": "demo", "ModelVersion": "1", "JobName": "edge", "Configuration": configuration(), **change}
    with pytest.raises(lv.exceptions.ValidationException) as err:
        lv.start_model_packaging_job(**call)
    assert message in err.value.response["Error"]["Message"]
    assert jobs(lv) == []


def test_missing_parameters_are_botocores_error(lv):
    with pytest.raises(ParamValidationError, match='"Configuration"'):
        lv.start_model_packaging_job(ProjectName="demo", ModelVersion="1")
    with pytest.raises(ParamValidationError, match='Unknown parameter in input: "Greengrass"'):
        lv.start_model_packaging_job(ProjectName="demo", ModelVersion="1", Configuration=configuration(),
                                     Greengrass={})


def test_missing_project_version_and_job(lv, s3_env):
    call = {"ModelVersion": "1", "Configuration": configuration()}
    with pytest.raises(lv.exceptions.ResourceNotFoundException) as err:
        lv.start_model_packaging_job(ProjectName="nope", **call)
    assert err.value.response["ResourceType"] == "PROJECT"
    with pytest.raises(lv.exceptions.ResourceNotFoundException) as err:
        lv.start_model_packaging_job(ProjectName="demo", **{**call, "ModelVersion": "7"})
    assert err.value.response["ResourceType"] == "MODEL"
    with pytest.raises(lv.exceptions.ResourceNotFoundException) as err:
        lv.describe_model_packaging_job(ProjectName="demo", JobName="never")
    assert err.value.response["ResourceType"] == "MODEL_PACKAGE_JOB" and err.value.response["ResourceId"] == "never"
    with pytest.raises(lv.exceptions.ValidationException, match="JobName"):
        lv.describe_model_packaging_job(ProjectName="demo", JobName="no_such")
    assert jobs(lv) == []


def test_versions_not_trained_and_names_in_use_conflict(lv, tmp_path):
    store = lv.service.store
    with pytest.raises(RuntimeError):
        store.add_model("demo", backend="fake", build=lambda d: (_ for _ in ()).throw(RuntimeError("no images")))
    training = store.reserve_model("demo", backend="fake")  # TRAINING, owned by this live store
    local = GreengrassConfiguration("c", str(tmp_path))
    for version, status in (("2", "TRAINING_FAILED"), (str(training), "TRAINING")):
        with pytest.raises(ConflictException, match=f"status is {status}") as err:
            lv.service.start_model_packaging_job("demo", version, local)
        assert err.value.resource_type == "MODEL" and err.value.resource_id == store.model_arn("demo", version)
    lv.service.start_model_packaging_job("demo", "1", local, job_name="edge")
    with pytest.raises(ConflictException, match="already has a model packaging job 'edge'") as err:
        lv.service.start_model_packaging_job("demo", "1", GreengrassConfiguration("other", str(tmp_path)),
                                             job_name="edge")
    assert err.value.resource_type == "MODEL_PACKAGE_JOB"
    with pytest.raises(ConflictException, match="component c version 1.0.0"):
        lv.service.start_model_packaging_job("demo", "1", local, job_name="again")
    assert jobs(lv) == ["edge"]
    with pytest.raises(ValidationException, match="unsupported scheme"):
        lv.service.start_model_packaging_job("demo", "1", GreengrassConfiguration("c", "gs://bucket/x"))


def test_client_token_gives_one_job(lv, tmp_path):
    local = GreengrassConfiguration("c", str(tmp_path))
    first = lv.service.start_model_packaging_job("demo", "1", local, client_token="tok-1")  # a generated name
    # the repeat gets the first answer (without its token the component's name and version would conflict)
    assert lv.service.start_model_packaging_job("demo", "1", local, client_token="tok-1") == first
    second = lv.service.start_model_packaging_job("demo", "1", GreengrassConfiguration(
        "c", str(tmp_path), component_version="1.0.1"), client_token="tok-2")  # a new token: a new job
    assert second != first and sorted(jobs(lv)) == sorted([first, second])
    with pytest.raises(ConflictException, match="ClientToken 'tok-1' was already used"):
        lv.service.start_model_packaging_job("demo", "1", local, client_token="tok-1", description="another")


def test_a_dead_owners_job_is_failed_on_next_open(home, make_fake_version):
    store = Store(home)
    make_fake_version(store, "demo")
    config = json.dumps(GreengrassConfiguration("c", "/out", component_version="1.0.0").to_dict())
    store.close()
    dead = uuid.uuid4().hex
    db = sqlite3.connect(home / "lvkit.db")
    with db:
        for name, status in (("running", "RUNNING"), ("created", "CREATED")):
            db.execute("INSERT INTO packaging_jobs VALUES ('demo', ?, 1, 1, 1, ?, 'packaging', NULL, ?, NULL, ?)",
                       (name, status, config, dead))
    db.close()
    leftover = home / "artifacts" / "demo" / f".tmp-{dead}-package-0000.zip"
    leftover.write_bytes(b"PK partial")
    svc = LookoutVisionService(Store(home))  # opening settles what a dead owner left
    for name in ("running", "created"):
        job = svc.describe_model_packaging_job("demo", name)
        assert job.status is PackagingJobStatus.FAILED and "interrupted" in job.status_message
    assert not leftover.exists()
    # a live owner's job is left alone, and is read as it is
    alive = svc.store.claim()
    with svc.store.transaction() as tx:
        tx.execute("INSERT INTO packaging_jobs VALUES ('demo', 'live', 1, 2, 2, 'RUNNING', 'packaging', NULL, ?,"
                   " NULL, ?)", (config, alive))
    assert svc.store.recover() == [] and svc.describe_model_packaging_job("demo", "live").status == "RUNNING"
    svc.close()
    svc = LookoutVisionService(Store(home))  # its owner closed: now it is settled too
    assert [j.status for j in svc.list_model_packaging_jobs("demo")[0]] == ["FAILED"] * 3
    svc.close()


def test_configuration_round_trips():
    c = GreengrassConfiguration("c", "s3://b-1/p/", component_version="1.2.3",
                                target_platform=TargetPlatform("LINUX", "X86_64"), tags={"k": "v"}).check()
    assert GreengrassConfiguration.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert GreengrassConfiguration.from_wire(c.to_wire()) == c
