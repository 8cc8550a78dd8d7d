"""``lvkit.serving``: ``lvkit serve`` as a real child process, reached with a real boto3 client.

It starts and answers, hosts again what was HOSTED before it returns, keeps its output out of
the caller's stderr (a log file instead), stops on exit (gracefully, exit status 0), and a
failed start is an LvkitError carrying the tail of the server's log.
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

import lvkit
from lvkit.server import background
from tests.server.conftest import host

pytestmark = pytest.mark.server


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_serves_boto3_and_stops_on_exit(demo_home, dark, capfd):
    with lvkit.serving(demo_home, device="cpu") as server:
        assert server.running and server.url == f"http://127.0.0.1:{server.port}"
        lv = server.client()
        assert [p["ProjectName"] for p in lv.list_projects()["Projects"]] == ["demo"]
        host(lv, "1")
        answer = lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=dark)
        assert answer["DetectAnomalyResult"]["IsAnomalous"] is False
        lv.stop_model(ProjectName="demo", ModelVersion="1")
    assert not server.running and server.process.returncode == 0  # SIGINT: a graceful shutdown
    assert _refused(server.port)
    assert server.stop() == 0  # idempotent
    log = server.log_path.read_text()
    assert server.log_path == demo_home / "serve.log"
    assert f"lvkit serve: {server.url}  (SigV4 off)" in log and "for boto3: export" in log
    out, err = capfd.readouterr()
    assert "lvkit serve" not in out + err  # nothing on the caller's stdout/stderr: no red box in Jupyter


def test_a_restart_waits_until_the_hosted_version_is_back(demo_home):
    with lvkit.serving(demo_home) as first:
        host(first.client(), "1", MinInferenceUnits=1, MaxInferenceUnits=2)
    with lvkit.serving(demo_home) as second:  # returns once the version hosted again is HOSTED
        d = second.client().describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]
        assert d["Status"] == "HOSTED" and (d["MinInferenceUnits"], d["MaxInferenceUnits"]) == (1, 2)
        assert second.wait_hosted() == {"demo/1": "HOSTED", "demo/2": "TRAINED"}
        second.client().stop_model(ProjectName="demo", ModelVersion="1")
    assert second.process.returncode == 0


def test_a_port_in_use_is_a_clear_error(demo_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = re.escape(f"cannot serve on http://127.0.0.1:{port}: the port is in use")
        with pytest.raises(lvkit.LvkitError, match=refused):
            lvkit.serving(demo_home, port=port)
    assert not (demo_home / "serve.log").exists()  # nothing was started


def test_a_failed_start_raises_with_the_log_tail(demo_home, tmp_path):
    with lvkit.serving(demo_home) as first:
        log = tmp_path / "second.log"
        with pytest.raises(lvkit.LvkitError) as failed:
            lvkit.serving(demo_home, log=log)  # one server per home
        message = str(failed.value)
        assert "exited with status 1 before it answered" in message and str(log) in message
        assert "another lvkit server already serves this home" in message and f"pid {first.process.pid}" in message
        assert first.client().list_projects()["Projects"]  # the first one is untouched
    bad = tmp_path / "bad.log"
    with pytest.raises(lvkit.LvkitError, match="refusing to serve 0.0.0.0 without credentials"):
        lvkit.serving(tmp_path / "home", host="0.0.0.0", log=bad)


def test_a_server_that_does_not_answer_in_time_is_stopped(demo_home, monkeypatch):
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def spy(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(background.subprocess, "Popen", spy)
    with pytest.raises(lvkit.LvkitError, match="did not answer within 0 s"):
        lvkit.serving(demo_home, timeout=0)
    assert len(started) == 1 and started[0].poll() is not None  # not left running


def test_options_become_serve_flags():
    # a server run with credentials= is in tests/server/test_cli_serve.py
    assert background._flags({"max_batch": 2, "insecure": True, "access_log": False, "home": Path("/h"),
                              "device": None}) == ["--max-batch", "2", "--insecure", "--home", "/h"]


def test_not_stopped_by_hand_is_stopped_at_exit(demo_home):
    server = lvkit.serving(demo_home)
    server._stop_at_exit()  # what atexit runs when a notebook's kernel ends with the server up
    assert not server.running and server.process.returncode == 0
