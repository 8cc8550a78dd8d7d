"""Hosting for real, over HTTP: workers, the bounded queue (429), batching, scaling, draining, restarts."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

import lvkit
from lvkit.backends.fake import FakeBackend
from lvkit.hosting import HostingOptions
from tests.server.conftest import boto, host, serving_service, wait_status

pytestmark = pytest.mark.server


def detect(lv, body, version="1", project="demo"):
    return lv.detect_anomalies(ProjectName=project, ModelVersion=version, ContentType="image/png", Body=body)


def until(predicate, timeout=20.0):
    """Poll ``predicate`` until true (a bounded wait for a state, never an assertion by sleeping)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        time.sleep(0.005)


class Gated:
    """Wraps a real backend; every call waits for ``gate``. Records batch sizes."""

    def __init__(self, inner, gate, *, batch=False):
        self.inner, self.gate, self.calls = inner, gate, []
        if batch:
            self.detect_many = self._detect_many

    def detect(self, body, content_type):
        self.calls.append(1)
        assert self.gate.wait(30)
        return self.inner.detect(body, content_type)

    def _detect_many(self, items):
        self.calls.append(len(items))
        assert self.gate.wait(30)
        out = []
        for body, content_type in items:
            try:
                out.append(self.inner.detect(body, content_type))
            except Exception as exc:
                out.append(exc)
        return out


def gated_service(home, gate, *, batch=False, **hosting):
    backends = []

    def loader(artifact_dir, **options):
        backends.append(Gated(FakeBackend.load(artifact_dir, **options), gate, batch=batch))
        return backends[-1]

    hosting.setdefault("idle_timeout", 30.0)
    service = serving_service(home, loader=loader, hosting=HostingOptions(**hosting))
    return service, backends


def test_eight_concurrent_clients(live, dark, bright):
    host(boto(live.url), "1", MinInferenceUnits=2, MaxInferenceUnits=4)

    def client(i):
        lv = boto(live.url)
        return [(body is bright, detect(lv, body)["DetectAnomalyResult"]["IsAnomalous"])
                for body in ([dark, bright] * 5)[i % 2:][:8]]

    with ThreadPoolExecutor(8) as pool:
        answers = [a for result in pool.map(client, range(8)) for a in result]
    assert len(answers) == 64 and all(expected == got for expected, got in answers)
    stats = live.service.hosted()["demo/1"]
    assert stats["served"] == 64 and 2 <= stats["workers"] <= 4


def test_full_queue_answers_429_with_retry_after(demo_home, start_server, dark):
    gate = threading.Event()
    service, _ = gated_service(demo_home, gate, max_queue=2)
    live = start_server(service)
    host(boto(live.url), "1")
    pending = ThreadPoolExecutor(3)
    try:
        first = pending.submit(detect, boto(live.url), dark)
        until(lambda: service.hosted()["demo/1"]["busy"] == 1)
        queued = [pending.submit(detect, boto(live.url), dark) for _ in range(2)]
        until(lambda: service.hosted()["demo/1"]["queued"] == 2)
        lv = boto(live.url)
        with pytest.raises(lv.exceptions.ThrottlingException) as info:
            detect(lv, dark)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert info.value.response["RetryAfterSeconds"] >= 1
        assert info.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"].isdigit()
        assert "busy" in info.value.response["Error"]["Message"]
    finally:
        gate.set()
    for future in [first, *queued]:  # nothing lost: the queued requests are answered
        assert future.result(30)["DetectAnomalyResult"]["IsAnomalous"] is False
    pending.shutdown()


def test_starting_hosting_is_real(demo_home, start_server, dark):
    loaded = threading.Event()

    def slow_loader(artifact_dir, **options):
        assert loaded.wait(30)
        return FakeBackend.load(artifact_dir, **options)

    live = start_server(serving_service(demo_home, loader=slow_loader))
    lv = boto(live.url)
    assert lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)["Status"] == "STARTING_HOSTING"
    assert lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "STARTING_HOSTING"
    with pytest.raises(lv.exceptions.ConflictException, match="STARTING_HOSTING"):
        detect(lv, dark)
    loaded.set()
    assert wait_status(lv, "1") == "HOSTED"
    assert detect(lv, dark)["DetectAnomalyResult"]["IsAnomalous"] is False


def test_hosting_failed_reports_the_reason(demo_home, start_server):
    def broken(artifact_dir, **options):
        raise OSError("weights file is missing")

    lv = boto(start_server(serving_service(demo_home, loader=broken)).url)
    lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)
    assert wait_status(lv, "1") == "HOSTING_FAILED"
    d = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]
    assert "weights file is missing" in d["StatusMessage"]


def test_stop_model_drains_in_flight_requests(demo_home, start_server, dark):
    gate = threading.Event()
    service, _ = gated_service(demo_home, gate)
    live = start_server(service)
    lv = boto(live.url)
    host(lv, "1")
    with ThreadPoolExecutor(2) as pending:
        try:
            running = pending.submit(detect, boto(live.url), dark)
            until(lambda: service.hosted()["demo/1"]["busy"] == 1)
            queued = pending.submit(detect, boto(live.url), dark)
            until(lambda: service.hosted()["demo/1"]["queued"] == 1)
            assert lv.stop_model(ProjectName="demo", ModelVersion="1")["Status"] == "STOPPING_HOSTING"
            status = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"]
            assert status == "STOPPING_HOSTING"
            with pytest.raises(lv.exceptions.ConflictException):
                detect(lv, dark)
        finally:
            gate.set()
        assert running.result(30)["DetectAnomalyResult"]["IsAnomalous"] is False
        assert queued.result(30)["DetectAnomalyResult"]["IsAnomalous"] is False
    assert wait_status(lv, "1") == "TRAINED"
    assert "demo/1" not in service.hosted()


def test_units_scale_up_under_load_and_back_down(demo_home, start_server, dark):
    gate = threading.Event()
    service, _ = gated_service(demo_home, gate, idle_timeout=0.2)
    live = start_server(service)
    host(boto(live.url), "1", MinInferenceUnits=1, MaxInferenceUnits=3)
    with ThreadPoolExecutor(4) as pending:
        try:
            futures = [pending.submit(detect, boto(live.url), dark) for _ in range(4)]
            until(lambda: service.hosted()["demo/1"]["workers"] == 3)  # MaxInferenceUnits, never more
            until(lambda: service.hosted()["demo/1"]["queued"] == 1)
            assert service.hosted()["demo/1"]["workers"] == 3
        finally:
            gate.set()
        assert all(not f.result(30)["DetectAnomalyResult"]["IsAnomalous"] for f in futures)
    until(lambda: service.hosted()["demo/1"]["workers"] == 1)  # back to MinInferenceUnits when idle


def test_concurrent_requests_are_batched(demo_home, start_server, dark, bright):
    gate = threading.Event()
    service, backends = gated_service(demo_home, gate, batch=True, max_batch=8)
    live = start_server(service)
    host(boto(live.url), "1")
    bodies = [dark, bright, dark, bright, b"\x89PNG\r\n\x1a\nbroken", dark]
    with ThreadPoolExecutor(len(bodies) + 1) as pending:
        try:
            first = pending.submit(detect, boto(live.url), bright)
            until(lambda: service.hosted()["demo/1"]["busy"] == 1)
            rest = [pending.submit(detect, boto(live.url), body) for body in bodies]
            until(lambda: service.hosted()["demo/1"]["queued"] == len(bodies))
        finally:
            gate.set()
        assert first.result(30)["DetectAnomalyResult"]["IsAnomalous"] is True
        for body, future in zip(bodies, rest):
            if body.endswith(b"broken"):  # a bad image fails alone, not its batch
                with pytest.raises(ClientError) as info:
                    future.result(30)
                assert info.value.response["Error"]["Code"] == "ValidationException"
            else:
                assert future.result(30)["DetectAnomalyResult"]["IsAnomalous"] is (body is bright)
    assert backends[0].calls == [1, len(bodies)]


def test_several_versions_hosted_at_once(live, make_fake_version, dark):
    store = live.service.store
    make_fake_version(store, "other", threshold=10.0)
    lv = boto(live.url)
    host(lv, "1")
    host(lv, "2")
    host(lv, "1", project="other")
    assert set(live.service.hosted()) == {"demo/1", "demo/2", "other/1"}
    assert "Anomalies" in detect(lv, dark, "1")["DetectAnomalyResult"]  # segmentation
    assert "Anomalies" not in detect(lv, dark, "2")["DetectAnomalyResult"]  # classification
    assert detect(lv, dark, "1", project="other")["DetectAnomalyResult"]["IsAnomalous"] is True  # threshold 10


def test_restart_hosts_again_what_was_hosted(demo_home, start_server, dark):
    first = start_server(serving_service(demo_home))
    lv = boto(first.url)
    host(lv, "1", MinInferenceUnits=2, MaxInferenceUnits=3)
    first.stop()
    assert lvkit.Store(demo_home).get_model("demo", 1).status == "HOSTED"  # persisted across the restart

    second = start_server(serving_service(demo_home))
    lv = boto(second.url)
    assert wait_status(lv, "1") == "HOSTED"
    d = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]
    assert (d["MinInferenceUnits"], d["MaxInferenceUnits"], d["StatusMessage"]) == (2, 3, "hosted")
    assert detect(lv, dark)["DetectAnomalyResult"]["IsAnomalous"] is False
    assert second.service.hosted()["demo/1"]["workers"] >= 2
    assert lv.describe_model(ProjectName="demo", ModelVersion="2")["ModelDescription"]["Status"] == "TRAINED"


def test_pool_adds_units_before_it_throttles(dark):
    """Unit level: with room to grow, a full queue means a new worker, not a 429."""
    from lvkit.hosting import ModelPool

    gate = threading.Event()
    pool = ModelPool(Gated(FakeBackend.load.__self__(lambda rgb: None), gate), min_units=1, max_units=3,
                     options=HostingOptions(max_queue=1, idle_timeout=30.0), name="t/1")
    try:
        futures = [pool.submit(dark, "image/png") for _ in range(4)]  # 3 running, 1 queued
        until(lambda: pool.stats()["busy"] == 3)
        with pytest.raises(lvkit.ThrottlingException) as info:
            pool.submit(dark, "image/png")
        assert info.value.retry_after_seconds >= 1 and pool.workers == 3
    finally:
        gate.set()
    for future in futures:
        assert future.result(30) is None  # the handler's answer
    pool.close()
    assert pool.workers == 0
