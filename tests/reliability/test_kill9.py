"""kill -9 at random moments during CreateProject, StartModel/StopModel and training: after each
crash nothing is lost (every acknowledged project is there, every ClientToken retry gets the
first answer) and nothing is stuck (no transient status, no temporary folder survives the next
open). Two processes given the same tokens at once act once per token.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lvkit
from lvkit.backends.fake import FakeBackend
from lvkit.store import Store

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 6

WORKER = """
    import sys, time
    from lvkit.store import Store
    from lvkit.service import LookoutVisionService
    from lvkit.backends.fake import FakeBackend
    home, round_ = sys.argv[1], int(sys.argv[2])
    service = LookoutVisionService(home)
    store = service.store
    if store.get_model("base", 1).status == "HOSTED":  # a kill after StartModel, before StopModel: it stays HOSTED
        service.stop_model("base", "1")
    print("ready", flush=True)
    i = 0
    while True:
        token = f"r{round_}-t{i}"
        p = service.create_project(f"p-{round_}-{i}", client_token=token)
        print("created", token, p.project_name, p.project_arn, flush=True)
        service.start_model("base", "1", 1, client_token=f"start-{round_}-{i}")
        service.stop_model("base", "1", client_token=f"stop-{round_}-{i}")
        def build(d):
            (d / "partial.bin").write_bytes(b"x" * 4096)
            time.sleep(0.05)
            return FakeBackend.save(d, image_size=(64, 64))
        store.add_model("base", backend="fake", build=build)
        i += 1
"""


def _check(home: Path, acknowledged: dict[str, tuple[str, str]]) -> None:
    store = Store(home)  # opening recovers what the dead process owned
    try:
        for project in store.list_projects():
            for m in store.list_models(project.name):
                assert m.status not in ("TRAINING", "STARTING_HOSTING", "STOPPING_HOSTING"), f"stuck: {m}"
        assert not list((home / "artifacts").glob("*/.tmp-*")), "a temporary folder survived"
        service = lvkit.LookoutVisionService(store)
        for token, (name, arn) in acknowledged.items():
            assert store.get_project(name).arn == arn, f"lost: {name}"
            again = service.create_project(name, client_token=token)  # the retry: the first answer
            assert again.project_arn == arn
    finally:
        store.close()


def test_kill9_loop_loses_and_strands_nothing(tmp_path):
    home = tmp_path / "home"
    store = Store(home)
    store.create_project("base")
    store.add_model("base", backend="fake", build=lambda d: FakeBackend.save(d, image_size=(64, 64)))
    store.close()
    rng = random.Random(8)
    acknowledged: dict[str, tuple[str, str]] = {}
    for round_ in range(ROUNDS):
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WORKER), str(home), str(round_)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.8))
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
        for line in out.splitlines():
            if line.startswith("created "):
                _, token, name, arn = line.split()
                acknowledged[token] = (name, arn)
        _check(home, acknowledged)
    assert len(acknowledged) >= ROUNDS  # the loop did real work between kills


SAME_TOKENS = """
    import json, os, sys, time
    from lvkit.service import LookoutVisionService
    service = LookoutVisionService(sys.argv[1])
    while not os.path.exists(sys.argv[3]):  # all start together
        time.sleep(0.001)
    out = {}
    for i in range(int(sys.argv[2])):
        try:
            out[i] = service.create_project(f"same-{i}", client_token=f"shared-{i}").project_arn
        except Exception as exc:
            out[i] = type(exc).__name__
    print(json.dumps(out))
"""


def test_two_processes_given_the_same_tokens_act_once(tmp_path):
    home = tmp_path / "home"
    Store(home).close()
    n, go = 60, tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(SAME_TOKENS), str(home), str(n), str(go)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(2.5)  # let them import and open the store
    go.touch()
    answers = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        answers.append(json.loads(out))
    for i in range(n):
        got = {a[str(i)] for a in answers}
        assert got == {f"arn:aws:lookoutvision:us-east-1:000000000000:project/same-{i}"}, got
    assert len(Store(home).list_projects()) == n


def test_a_token_is_forgotten_after_its_ttl(tmp_path, monkeypatch):
    store = Store(tmp_path)
    service = lvkit.LookoutVisionService(store)
    service.create_project("a", client_token="tok")
    with pytest.raises(lvkit.ConflictException, match="different CreateProject"):
        service.create_project("b", client_token="tok")
    store._db.execute("UPDATE tokens SET created = created - ?", (lvkit.store.TOKEN_TTL_SECONDS + 1,))
    assert service.create_project("b", client_token="tok").project_name == "b"  # expired: a new request


def test_a_failed_operation_stores_no_token(tmp_path):
    service = lvkit.LookoutVisionService(tmp_path)
    service.create_project("a")
    with pytest.raises(lvkit.ConflictException, match="already exists"):
        service.create_project("a", client_token="t1")
    service.delete_project("a")
    assert service.create_project("a", client_token="t1").project_name == "a"  # the token was not spent
