"""A read-only home and a full disk: everything starts, reads and DetectAnomalies work, every
change answers one clear InternalServerException, and freeing space is enough to go on.

Real file systems: a read-only bind mount and a 4 MiB tmpfs filled to the last byte, made in a
private mount namespace (``unshare --mount``) by ``disk_scenarios.py``; skipped where the
machine does not allow mounts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lvkit.backends.fake import FakeBackend
from lvkit.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _mounts_work() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && echo ok"],
                           capture_output=True, text=True, timeout=30)
    return probe.stdout.strip() == "ok"


pytestmark = [pytest.mark.server,
              pytest.mark.skipif(not _mounts_work(), reason="needs unshare --mount and mount (root)")]


def _scenario(name: str, tmp_path: Path) -> dict:
    home = tmp_path / "home"
    store = Store(home)
    store.create_project("p")
    for _ in range(2):
        store.add_model("p", backend="fake", build=lambda d: FakeBackend.save(d, image_size=(64, 64)))
    store.set_status("p", 1, "HOSTED", "hosted", min_units=1)  # as a server that stopped left it
    store.close()
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run(["unshare", "--mount", sys.executable, "-m", "tests.reliability.disk_scenarios", name,
                          str(home), str(work)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _assert_reads_work_and_changes_say_why(seen: dict, why: str, need: str) -> None:
    assert seen["writable"] is False
    assert seen["list"] == ["p"] and seen["describe"] == "HOSTED"
    assert seen["detect"] == "ok"  # a HOSTED version still answers DetectAnomalies
    for change in ("create", "start", "tag"):
        assert seen[change].startswith(f"InternalServerException: lvkit cannot save this change: {why}"), seen[change]
        assert need in seen[change] and "DetectAnomalies on HOSTED models still work" in seen[change]
    code, stderr = seen["cli_list"]
    assert code == 0 and "Traceback" not in stderr
    code, stderr = seen["cli_start"]
    assert code == 1 and "Traceback" not in stderr and "error: InternalServerException: lvkit cannot save" in stderr
    assert seen["server_started"] is True, seen["server_stderr"]
    assert "Traceback" not in seen["server_stderr"]
    assert seen["http_describe"] == "HOSTED" and seen["http_detect"] == "ok"
    assert seen["http_create"].startswith("InternalServerException: lvkit cannot save this change")


def test_read_only_home_serves_reads_and_detect(tmp_path):
    seen = _scenario("readonly", tmp_path)["before"]
    _assert_reads_work_and_changes_say_why(seen, "its file system is read-only", "a writable LVKIT_HOME")
    assert "read-only" in seen["server_stderr"]  # the server says so when it starts


def test_full_disk_serves_reads_and_detect_and_recovers_when_space_is_freed(tmp_path):
    result = _scenario("full", tmp_path)
    _assert_reads_work_and_changes_say_why(result["before"], "its disk is full", "free space on the disk")
    assert result["before"]["http_create_after_freeing"] == "ok"  # the running server, no restart
    assert result["after_create"] == "ok"
    assert result["after_list"] == ["after", "freed", "p"]  # nothing half-made while the disk was full
    assert result["after_status"] == "HOSTED"
