"""Server fixtures: a live ``lvkit serve`` on a free loopback port, boto3 clients, test images."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lvkit
from lvkit.service import LookoutVisionService
from tests.server.live import LiveServer, serving_service

__all__ = ["GENUINE", "KEY_ID", "SECRET", "LiveServer", "boto", "host", "serving_service", "wait_status"]

KEY_ID, SECRET = "AKIDLVKITTEST", "lvkit-test-secret"

GENUINE = "1.40.60"
_OFFLINE = re.compile(r"No matching distribution|Could not find a version|NewConnectionError|Failed to establish|"
                      r"Temporary failure in name resolution|Max retries exceeded|Network is unreachable|timed out",
                      re.IGNORECASE)


@pytest.fixture(scope="session")
def genuine_python() -> Path:
    """The interpreter of a venv holding boto3 and botocore 1.40.60 (built once, then reused)."""
    base = Path(os.environ.get("LVKIT_GENUINE_VENV_DIR") or tempfile.gettempdir())
    root = base / f"lvkit-genuine-boto3-{GENUINE}-py{sys.version_info[0]}{sys.version_info[1]}"
    python = root / "bin" / "python"
    if (root / ".complete").exists():
        return python
    tmp = base / f"{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    venv.create(tmp, with_pip=True)
    pip = subprocess.run(
        [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"boto3=={GENUINE}", f"botocore=={GENUINE}"], capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        if _OFFLINE.search(pip.stderr):
            pytest.skip(f"pip could not fetch boto3=={GENUINE} from PyPI: {pip.stderr.strip()[-300:]}")
        raise RuntimeError(f"pip install boto3=={GENUINE} failed:\n{pip.stderr}")
    (tmp / ".complete").write_text(GENUINE)
    try:
        os.replace(tmp, root)
    except OSError:  # another session finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return python


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A hermetic AWS environment: test keys, one region, no shared files, no metadata endpoint."""
    for name in ("AWS_PROFILE", "AWS_DATA_PATH", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LOOKOUTVISION",
                 "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "LVKIT_ACCESS_KEYS", "LVKIT_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def start_server() -> Iterator[Callable[..., LiveServer]]:
    """Start live servers (``start_server(service, credentials=...)``); all stopped at teardown."""
    servers: list[LiveServer] = []

    def start(service: LookoutVisionService, **options: Any) -> LiveServer:
        servers.append(LiveServer(service, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def demo_home(home: Path, make_fake_version: Callable[..., str]) -> Path:
    """A store with project 'demo': version 1 fake segmentation, version 2 fake classification (64x64)."""
    store = lvkit.Store(home)
    make_fake_version(store, "demo", segmentation=True)
    make_fake_version(store, "demo")
    store.close()
    return home


@pytest.fixture
def live(demo_home: Path, start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server(serving_service(demo_home))


def boto(url: str, **kwargs: Any) -> Any:
    """Today's boto3 with lvkit's model, no retries (so a 429 or 500 shows as it is)."""
    from botocore.config import Config

    kwargs.setdefault("config", Config(retries={"total_max_attempts": 1}, read_timeout=30))
    return lvkit.boto3_client(url, **kwargs)


def wait_status(lv: Any, version: str, *, project: str = "demo", timeout: float = 20.0) -> str:
    """Poll DescribeModel until the version leaves STARTING_HOSTING/STOPPING_HOSTING."""
    deadline = time.monotonic() + timeout
    while True:
        status = lv.describe_model(ProjectName=project, ModelVersion=version)["ModelDescription"]["Status"]
        if status not in ("STARTING_HOSTING", "STOPPING_HOSTING") or time.monotonic() > deadline:
            return str(status)
        time.sleep(0.02)


def host(lv: Any, version: str, *, project: str = "demo", **units: int) -> None:
    units.setdefault("MinInferenceUnits", 1)
    lv.start_model(ProjectName=project, ModelVersion=version, **units)
    assert wait_status(lv, version, project=project) == "HOSTED"
