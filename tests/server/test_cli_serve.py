"""``lvkit serve`` as a real process: starts on loopback, stops on SIGINT, hosts again after a restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.server.conftest import KEY_ID, SECRET, boto, host, wait_status

pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    def __init__(self, home: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LVKIT_HOME": str(home)}
        self.proc = subprocess.Popen([sys.executable, "-m", "lvkit.server", "--port", str(self.port),
                                      "--log-level", "warning", *args],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.proc.stdout.read() if self.proc.stdout else ""
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "lvkit serve did not start"
                time.sleep(0.05)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, out
        return out


def test_serve_stop_and_restart(demo_home, dark):
    first = Process(demo_home)
    try:
        lv = boto(first.url)
        host(lv, "1", MinInferenceUnits=1, MaxInferenceUnits=2)
        assert lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png",
                                   Body=dark)["DetectAnomalyResult"]["IsAnomalous"] is False
    finally:
        out = first.stop()
    assert f"http://127.0.0.1:{first.port}" in out and "SigV4 off" in out

    second = Process(demo_home)
    try:
        lv = boto(second.url)
        assert wait_status(lv, "1") == "HOSTED"
        d = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]
        assert (d["MinInferenceUnits"], d["MaxInferenceUnits"]) == (1, 2)
        assert lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png",
                                   Body=dark)["DetectAnomalyResult"]["IsAnomalous"] is False
    finally:
        second.stop()


def test_serve_with_a_credentials_file(demo_home, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY_ID}:{SECRET}\n")
    server = Process(demo_home, "--credentials", str(keys))
    try:
        assert [p["ProjectName"] for p in boto(server.url).list_projects()["Projects"]] == ["demo"]
        lv = boto(server.url, aws_access_key_id=KEY_ID, aws_secret_access_key="nope")
        with pytest.raises(lv.exceptions.AccessDeniedException):
            lv.list_projects()
    finally:
        assert "SigV4 on, 1 key(s)" in server.stop()
