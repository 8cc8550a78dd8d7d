"""The documented ways to give today's boto3 the lookoutvision model, each run as a fresh program."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import lvkit
from lvkit.boto import DATA_PATH

pytestmark = pytest.mark.server

PROGRAM = """
import boto3
lv = boto3.client("lookoutvision")  # an unchanged program: endpoint and keys from the environment
print(",".join(p["ProjectName"] for p in lv.list_projects()["Projects"]))
"""


def run(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_cli_prints_the_data_path():
    out = subprocess.run([sys.executable, "-m", "lvkit.cli", "aws-data-path"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == DATA_PATH and out.stderr == ""


def test_unchanged_program_with_aws_data_path(live):
    env = {"AWS_DATA_PATH": DATA_PATH, "AWS_ENDPOINT_URL_LOOKOUTVISION": live.url}
    assert run(PROGRAM, env) == "demo"


def test_unchanged_program_after_register_boto3(live):
    env = {"AWS_ENDPOINT_URL_LOOKOUTVISION": live.url}
    assert run("import lvkit; lvkit.register_boto3()\n" + PROGRAM, env) == "demo"


def test_boto3_client_defaults(live, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_LOOKOUTVISION", live.url)
    lv = lvkit.boto3_client()
    assert lv.meta.endpoint_url == live.url and lv.meta.region_name == "us-east-1"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    unsigned = lvkit.boto3_client(live.url)  # no credentials anywhere: unsigned requests
    assert [p["ProjectName"] for p in unsigned.list_projects()["Projects"]] == ["demo"]
