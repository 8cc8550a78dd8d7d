"""StartModel/StopModel with ClientTokens under DetectAnomalies load never wedge the service.

The bug this guards against: ``Store.remember()`` held the store's lock while StopModel waited
for the model's lock, and DetectAnomalies held the model's lock while it read the store: an
opposite lock order that hung the whole server within a few Start/Stop cycles. A watchdog
fails the test (with every thread's stack) instead of hanging CI.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

import lvkit
from tests.server.conftest import boto, serving_service

CYCLES = 50
CLIENTS = 16
WATCHDOG_SECONDS = 120.0


def _stacks() -> str:
    frames = sys._current_frames()
    out = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None and thread.name.startswith(("lvkit", "load-", "cycle")):
            out.append(f"--- {thread.name}\n" + "".join(traceback.format_stack(frame)[-6:]))
    return "\n".join(out)


def run_with_watchdog(target: Callable[[], None], service: Any, seconds: float = WATCHDOG_SECONDS) -> None:
    """Run ``target`` in a thread; fail (not hang) if it has not finished after ``seconds``.

    A wedged ``service`` is abandoned (its ``close`` would wait on the wedged locks forever)."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=body, name="cycle-driver", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        service.close = lambda *args, **kwargs: None  # teardown must not hang on the deadlock either
        pytest.fail(f"deadlock: Start/Stop cycles did not finish in {seconds:.0f} s\n{_stacks()}")
    if errors:
        raise errors[0]


def cycle_under_load(start: Callable[[str], Any], stop: Callable[[str], Any], status: Callable[[], str],
                     detect: Callable[[], Any], *, cycles: int = CYCLES, clients: int = CLIENTS) -> Counter[str]:
    """Cycle start/stop (fresh token each, and each call repeated with its token) while
    ``clients`` threads call ``detect``; returns the detect answers by code."""
    answers: Counter[str] = Counter()
    unexpected: list[str] = []
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            try:
                detect()
                answers["200"] += 1
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                answers[code] += 1
                if code not in ("ConflictException", "ThrottlingException"):
                    unexpected.append(f"{code}: {exc}")

    def wait(*wanted: str) -> None:
        deadline = time.monotonic() + 30
        while (s := status()) not in wanted:
            assert time.monotonic() < deadline, f"stuck in {s}"
            time.sleep(0.002)

    workers = [threading.Thread(target=load, name=f"load-{i}", daemon=True) for i in range(clients)]
    for w in workers:
        w.start()
    try:
        for _ in range(cycles):
            token = uuid.uuid4().hex
            assert start(token) == "STARTING_HOSTING"
            assert start(token) == "STARTING_HOSTING"  # a retry with the token: the first answer
            wait("HOSTED")
            token = uuid.uuid4().hex
            assert stop(token) == "STOPPING_HOSTING"
            assert stop(token) == "STOPPING_HOSTING"
            wait("TRAINED")
    finally:
        done.set()
        for w in workers:
            w.join(30)
    assert not unexpected, unexpected[:5]
    assert answers["200"] > 0 and answers["ConflictException"] > 0, answers
    return answers


def test_start_stop_cycles_under_detect_load_in_process(demo_home, dark):
    service = serving_service(demo_home)
    lv = lvkit.LookoutVisionClient(service)
    try:
        def start(token: str) -> str:
            return lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1,
                                  ClientToken=token)["Status"]

        def stop(token: str) -> str:
            return lv.stop_model(ProjectName="demo", ModelVersion="1", ClientToken=token)["Status"]

        def status() -> str:
            return lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"]

        def detect() -> Any:
            return lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=dark)

        run_with_watchdog(lambda: cycle_under_load(start, stop, status, detect), service)
    finally:
        service.close()


@pytest.mark.server
def test_start_stop_cycles_under_detect_load_over_http(live, dark):
    from botocore.config import Config

    control = boto(live.url)
    local = threading.local()

    def client() -> Any:  # one boto3 client per load thread, as real callers have
        if not hasattr(local, "lv"):
            local.lv = boto(live.url, config=Config(retries={"total_max_attempts": 1}, read_timeout=20,
                                                      max_pool_connections=2))
        return local.lv

    def start(token: str) -> str:
        return control.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1,
                                   ClientToken=token)["Status"]

    def stop(token: str) -> str:
        return control.stop_model(ProjectName="demo", ModelVersion="1", ClientToken=token)["Status"]

    def status() -> str:
        return control.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"]

    def detect() -> Any:
        return client().detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=dark)

    run_with_watchdog(lambda: cycle_under_load(start, stop, status, detect), live.service)
    # the server still answers everything afterwards
    assert control.list_projects()["Projects"][0]["ProjectName"] == "demo"
