"""Issue 9's acceptance: a pipeline written for the service runs unchanged against lvkit serve + an S3 server.

``genuine_pipeline.py`` (nothing in it knows about lvkit) runs twice in a subprocess, under a
named profile whose config file sends ``lookoutvision`` to a live ``lvkit serve`` (SigV4 on)
and ``s3`` to moto's server: once with the genuine boto3/botocore 1.40.60, once with today's
boto3 and lvkit's bundled model (``AWS_DATA_PATH``). It creates a project, uploads images and
manifests, creates both datasets, trains (PaDiM at 64 px, chosen by tags), reads the evaluation
output from S3, hosts and detects, lists and updates entries, stops, packages and deletes it all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lvkit.boto import DATA_PATH
from tests.server.conftest import GENUINE, KEY_ID, SECRET, serving_service

pytestmark = [pytest.mark.server, pytest.mark.slow]

PROGRAM = Path(__file__).with_name("genuine_pipeline.py")


def profile_env(tmp_path: Path, lvkit_url: str, s3_url: str) -> dict[str, str]:
    """The environment of a program configured by a named profile (no endpoint variables)."""
    config = tmp_path / "aws-config"
    config.write_text(f"""[profile line]
region = us-east-1
aws_access_key_id = {KEY_ID}
aws_secret_access_key = {SECRET}
services = line-services

[services line-services]
lookoutvision =
  endpoint_url = {lvkit_url}
s3 =
  endpoint_url = {s3_url}
""")
    return {"PATH": "/usr/bin:/bin", "AWS_PROFILE": "line", "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"), "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONNOUSERSITE": "1"}


@pytest.mark.parametrize("client", ["genuine", "today"])
def test_a_service_pipeline_runs_unchanged(client, request, s3_env, start_server, tiny_benchmark, tmp_path):
    python = request.getfixturevalue("genuine_python") if client == "genuine" else Path(sys.executable)
    live = start_server(serving_service(tmp_path / "home"), credentials={KEY_ID: SECRET})
    bucket = s3_env.bucket("pipeline")
    env = profile_env(tmp_path, live.url, s3_env.url)
    if client == "today":
        env["AWS_DATA_PATH"] = DATA_PATH  # today's botocore has no lookoutvision model: lvkit's bundled one
    run = subprocess.run([str(python), str(PROGRAM), bucket, str(tiny_benchmark), "--tag", "lvkit:model=padim",
                          "--tag", "lvkit:image-size=64"], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout)
    if client == "genuine":
        assert seen["botocore"] == GENUINE
    assert seen["endpoints"] == [live.url, s3_env.url]
    assert seen["dataset_train"] == ["CREATE_COMPLETE", {"Total": 12, "Labeled": 12, "Normal": 12, "Anomaly": 0}]
    defects = sum(1 for p in (tiny_benchmark / "test").rglob("*.png") if p.parent.name != "good")
    assert seen["dataset_test"][0] == "CREATE_COMPLETE" and seen["dataset_test"][1]["Anomaly"] == defects
    assert seen["created"] == ["TRAINING", "1"]
    assert seen["trained"] == ["TRAINED", "training completed", ["F1Score", "Precision", "Recall"]]
    assert seen["evaluation"] == [True, True] and seen["evaluation_lines"] > 0
    assert seen["hosted"] == "HOSTED" and seen["detect"][1] is True
    assert seen["anomaly_entries"] == defects
    assert seen["update"] == ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE", 13]
    assert seen["stopped"] == "TRAINED"
    assert seen["package"][0] == "SUCCEEDED", seen["package"]
    assert seen["package"][2] == "pipeline.model" and seen["jobs"] == ["edge-1"]
    assert seen["package_objects"] == ["packages/pipeline.model-1.0.0.zip"]
    assert seen["projects_left"] == []
