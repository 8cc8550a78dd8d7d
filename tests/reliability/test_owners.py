"""Crash recovery trusts owner ids, not PIDs: a dead owner's transitional states are recovered,
a live owner's never are, whatever PID namespace either side runs in.

The real cases use ``unshare --pid --fork`` (a new PID namespace, where the process is PID 1, as
in a container) and are skipped where the machine does not allow it; the same cases are also
simulated by writing the PID the old scheme would have trusted into the database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lvkit
from lvkit.backends.fake import FakeBackend
from lvkit.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, timeout=30)
    return probe.returncode == 0 and probe.stdout.strip() == "1"


NAMESPACES = pytest.mark.skipif(not _namespaces_work(), reason="needs unshare --pid (root or user namespaces)")


def python(script: str, *args: object, namespace: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter (in its own PID namespace, as PID 1, with ``namespace``)."""
    cmd = [sys.executable, "-c", textwrap.dedent(script), *map(str, args)]
    if namespace:
        cmd = ["unshare", "--pid", "--fork", *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def fake_version(home: Path) -> None:
    store = Store(home)
    store.create_project("p")
    store.add_model("p", backend="fake", build=lambda d: FakeBackend.save(d, image_size=(64, 64)))
    store.close()


CRASH_WHILE_STARTING = """
    import os, sys
    from lvkit.store import Store
    store = Store(sys.argv[1])
    assert store.set_status("p", 1, "STARTING_HOSTING", "hosting is starting", expect=("TRAINED",))
    {simulate}
    os._exit(137)  # killed while starting (PID 1 of a namespace ignores SIGKILL from inside it)
"""

STATUS = """
    import json, os, sys
    import lvkit
    m = lvkit.client(sys.argv[1]).describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]
    print(json.dumps({"pid": os.getpid(), "status": m["Status"], "message": m["StatusMessage"]}))
"""


@NAMESPACES
def test_server_restarted_as_pid_1_recovers_its_own_dead_start(tmp_path):
    """Killed during StartModel as PID 1 of a container, restarted as PID 1 again: not stuck."""
    fake_version(tmp_path)
    crashed = python(CRASH_WHILE_STARTING.format(simulate=""), tmp_path, namespace=True)
    assert crashed.returncode == 137, crashed.stderr
    again = python(STATUS, tmp_path, namespace=True)
    assert again.returncode == 0, again.stderr
    assert '"pid": 1' in again.stdout
    assert '"status": "TRAINED"' in again.stdout and "interrupted" in again.stdout


def test_dead_owner_with_a_reused_pid_is_recovered(tmp_path):
    """The same case without namespaces: the row names the PID of a live process (ours)."""
    fake_version(tmp_path)
    simulate = f"store._db.execute('UPDATE models SET owner_pid={os.getpid()}')"
    crashed = python(CRASH_WHILE_STARTING.format(simulate=simulate), tmp_path)
    assert crashed.returncode == 137, crashed.stderr
    d = lvkit.client(tmp_path).describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]
    assert d["Status"] == "TRAINED" and "interrupted" in d["StatusMessage"]


TRAINER = """
    import sys, time
    from pathlib import Path
    from lvkit.store import Store
    from lvkit.backends.fake import FakeBackend
    home, go = Path(sys.argv[1]), Path(sys.argv[2])
    store = Store(home)
    store.create_project("p")
    def build(d):
        (d / "partial").write_text("x")
        {simulate}
        print("training", flush=True)
        while not go.exists():
            time.sleep(0.02)
        return FakeBackend.save(d, image_size=(64, 64))
    print(store.add_model("p", backend="fake", build=build).status, flush=True)
"""


def _live_trainer(tmp_path: Path, simulate: str = "") -> tuple[subprocess.Popen[str], Path]:
    go = tmp_path / "go"
    trainer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(TRAINER.format(simulate=simulate)),
                                str(tmp_path / "home"), str(go)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert trainer.stdout is not None and trainer.stdout.readline().strip() == "training"
    return trainer, go


def _assert_untouched_then_finished(tmp_path: Path, trainer: subprocess.Popen[str], go: Path,
                                    observer: subprocess.CompletedProcess[str]) -> None:
    assert observer.returncode == 0, observer.stderr
    assert '"status": "TRAINING"' in observer.stdout, observer.stdout
    assert list((tmp_path / "home" / "artifacts" / "p").glob(".tmp-*")), "a live training's folder was deleted"
    go.touch()
    out, err = trainer.communicate(timeout=60)
    assert trainer.returncode == 0 and out.strip() == "TRAINED", err
    assert lvkit.Store(tmp_path / "home").get_model("p", 1).status == "TRAINED"


@NAMESPACES
def test_client_in_another_pid_namespace_leaves_a_live_training_alone(tmp_path):
    trainer, go = _live_trainer(tmp_path)
    try:
        observer = python(STATUS, tmp_path / "home", namespace=True)
        _assert_untouched_then_finished(tmp_path, trainer, go, observer)
    finally:
        trainer.kill()


def test_live_owner_whose_pid_is_invisible_is_left_alone(tmp_path):
    """The same without namespaces: the row names a PID nobody here can see (2**22 - 1)."""
    trainer, go = _live_trainer(tmp_path, simulate="store._db.execute('UPDATE models SET owner_pid=4194303')")
    try:
        observer = python(STATUS, tmp_path / "home")
        _assert_untouched_then_finished(tmp_path, trainer, go, observer)
    finally:
        trainer.kill()


def test_owner_lock_follows_the_store_instance(tmp_path):
    """In one process: a closed Store's transient rows are recoverable, an open one's are not."""
    fake_version(tmp_path)
    a = Store(tmp_path)
    assert a.set_status("p", 1, "STARTING_HOSTING", "hosting is starting", expect=("TRAINED",))
    b = Store(tmp_path)
    assert b.owner != a.owner and b.owner_alive(a.owner)
    assert b.get_model("p", 1).status == "STARTING_HOSTING"  # a live owner's state is never touched
    a.close()
    assert not b.owner_alive(a.owner)
    m = b.get_model("p", 1)  # a read that finds a dead owner's transient row settles it
    assert m.status == "TRAINED" and "interrupted" in m.status_message
    assert not (tmp_path / "owners" / f"{a.owner}.lock").exists()


def test_stale_lock_files_do_not_count_as_owners(tmp_path):
    """A lock file left by a dead process (no flock held) is not a live owner, and is cleaned up."""
    fake_version(tmp_path)
    (tmp_path / "owners").mkdir(exist_ok=True)
    ghost = "0" * 32
    (tmp_path / "owners" / f"{ghost}.lock").write_text("pid 1")
    store = Store(tmp_path)
    assert not store.owner_alive(ghost)
    assert not store.owner_alive("../lvkit.db") and not store.owner_alive(None)
    assert not (tmp_path / "owners" / f"{ghost}.lock").exists()


def test_a_check_while_an_owner_takes_its_lock_cannot_call_it_dead(tmp_path, monkeypatch):
    """Another process's recover() runs between the owner creating its lock file and locking it."""
    from lvkit import locks

    fake_version(tmp_path)
    a, b = Store(tmp_path), Store(tmp_path)
    real, interleaved = locks.fcntl.flock, []

    def flock(fd: int, operation: int) -> None:
        if not interleaved and f"{a.owner}." in os.readlink(f"/proc/self/fd/{fd}"):
            interleaved.append(b.recover())  # the other side looks at the folder right now
        real(fd, operation)

    monkeypatch.setattr(locks.fcntl, "flock", flock)
    assert a.set_status("p", 1, "STARTING_HOSTING", "hosting is starting", expect=("TRAINED",))
    assert interleaved == [[]]
    assert b.owner_alive(a.owner) and b.get_model("p", 1).status == "STARTING_HOSTING"
    a.close()
    assert b.get_model("p", 1).status == "TRAINED"
