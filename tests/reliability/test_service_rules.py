"""Bad input answers the contract's error, never a bare Python exception or a 500; quotas hold;
hosting failures end in HOSTING_FAILED; the store refuses names that would leave its home;
messages sent to clients carry no server paths; one server per home."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

import lvkit
from lvkit.backends.fake import FakeBackend
from lvkit.hosting import HostingOptions, ModelPool
from lvkit.service import LookoutVisionService
from lvkit.store import Store
from tests.server.conftest import boto, serving_service

ARN = "arn:aws:lookoutvision:us-east-1:000000000000:model/demo/"


# -- item 5: inference units are a quota ----------------------------------------------------------
@pytest.mark.parametrize("units", [{"MinInferenceUnits": 10**18}, {"MinInferenceUnits": 2**63},
                                   {"MinInferenceUnits": 1, "MaxInferenceUnits": 2**70},
                                   {"MinInferenceUnits": 2**31}])
def test_inference_units_beyond_the_api_integer_are_400(lv, units):
    """The API's Integer is 32-bit: 1e18 or 2**63 units are not a count the API can carry."""
    with pytest.raises(lv.exceptions.ValidationException, match="InferenceUnits must be an integer"):
        lv.start_model(ProjectName="demo", ModelVersion="1", **units)
    assert lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "TRAINED"


@pytest.mark.parametrize("units", [{"MinInferenceUnits": 2**31 - 1}, {"MinInferenceUnits": 10**6},
                                   {"MinInferenceUnits": 1, "MaxInferenceUnits": 9}, {"MinInferenceUnits": 9}])
def test_inference_units_beyond_the_quota_are_402(lv, units):
    lv.service.quota.limit = 8
    with pytest.raises(lv.exceptions.ServiceQuotaExceededException) as err:
        lv.start_model(ProjectName="demo", ModelVersion="1", **units)
    e = err.value.response
    assert e["ResponseMetadata"]["HTTPStatusCode"] == 402
    assert e["QuotaCode"] == "inference-units" and e["ServiceCode"] == "lookoutvision"
    assert e["ResourceType"] == "MODEL" and e["ResourceId"].endswith("model/demo/1")
    d = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]
    assert d["Status"] == "TRAINED"  # nothing changed
    lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=2, MaxInferenceUnits=8)  # within it


def test_quota_counts_every_hosted_version(demo_home):
    service = LookoutVisionService(demo_home, max_inference_units=4)
    service.start_model("demo", "1", 3)
    with pytest.raises(lvkit.ServiceQuotaExceededException, match="1 in use|3 in use"):
        service.start_model("demo", "2", 2)
    service.start_model("demo", "2", 1)
    service.stop_model("demo", "1")  # frees its 3
    service.stop_model("demo", "2")
    service.start_model("demo", "2", 4)
    assert service.describe_model("demo", "2").status == "HOSTED"
    service.close()


@pytest.mark.server
def test_quota_over_http_with_boto3(demo_home, start_server):
    live = start_server(serving_service(demo_home, max_inference_units=4))
    lv = boto(live.url)
    with pytest.raises(ClientError) as err:
        lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=10**6)
    assert err.value.response["Error"]["Code"] == "ServiceQuotaExceededException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
    before = threading.active_count()
    assert lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "TRAINED"
    assert threading.active_count() <= before + 1


def test_a_pool_that_cannot_start_its_threads_ends_in_hosting_failed(demo_home, monkeypatch):
    """The host refuses threads part-way: HOSTING_FAILED with a reason, no thread leaked, units freed."""
    real = threading.Thread.start
    started: list[threading.Thread] = []

    def start(self: threading.Thread) -> None:
        if self.name.startswith("lvkit-unit-") and len(started) >= 2:
            raise RuntimeError("can't start new thread")
        if self.name.startswith("lvkit-unit-"):
            started.append(self)
        real(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    service = serving_service(demo_home, max_inference_units=8)
    service.wait = True
    assert service.start_model("demo", "1", 5) == "STARTING_HOSTING"
    m = service.describe_model("demo", "1")
    assert m.status == "HOSTING_FAILED" and "can't start new thread" in m.status_message
    for thread in started:
        thread.join(5)
    assert not any(t.is_alive() for t in started), "worker threads leaked"
    assert service.quota.reserved == {}  # the reservation was given back
    monkeypatch.setattr(threading.Thread, "start", real)
    service.stop_model("demo", "1")
    service.start_model("demo", "1", 2)  # and it can be hosted again
    assert service.describe_model("demo", "1").status == "HOSTED"
    service.close()


def test_model_pool_closes_what_it_started_when_a_thread_is_refused(monkeypatch):
    real, count = threading.Thread.start, []

    def start(self: threading.Thread) -> None:
        count.append(1)
        if len(count) > 2:
            raise RuntimeError("can't start new thread")
        real(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError):
        ModelPool(FakeBackend.load, min_units=4, options=HostingOptions(idle_timeout=0.1))  # type: ignore[arg-type]
    monkeypatch.setattr(threading.Thread, "start", real)
    deadline = time.monotonic() + 5
    while any(t.name.startswith("lvkit-unit-model") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "worker threads leaked"
        time.sleep(0.01)


# -- item 7: ARNs with non-ASCII or overlong versions are 400, in process too ------------------
@pytest.mark.parametrize("version", ["²", "١", "1" * 20, "9" * 11, "01", "0", "１"])
def test_tag_arns_take_ascii_version_numbers_only(lv, version):
    for call in (lambda: lv.list_tags_for_resource(ResourceArn=ARN + version),
                 lambda: lv.tag_resource(ResourceArn=ARN + version, Tags=[{"Key": "k", "Value": "v"}]),
                 lambda: lv.untag_resource(ResourceArn=ARN + version, TagKeys=["k"])):
        with pytest.raises(lv.exceptions.ValidationException, match="version number"):
            call()
    assert lv.service.store.get_tags(ARN + version) == {}


# -- item 11: tags follow the contract's pattern ----------------------------------------------------
@pytest.mark.parametrize("text", ["a\nb", "a\tb", "a\x00", "a\rb", "\x1b[31m", "a\u200bb"])
def test_tags_with_control_or_format_characters_are_400(lv, text):
    with pytest.raises(lv.exceptions.ValidationException, match="tag key"):
        lv.tag_resource(ResourceArn=ARN + "1", Tags=[{"Key": text, "Value": "v"}])
    with pytest.raises(lv.exceptions.ValidationException, match="tag value"):
        lv.tag_resource(ResourceArn=ARN + "1", Tags=[{"Key": "k", "Value": text}])


def test_tags_accept_what_the_pattern_accepts(lv):
    tags = [{"Key": "Ünïcode 名前 ٣", "Value": "a b_.:/=+-@ ²"}, {"Key": "sep\u2028", "Value": "\u00a0"}]
    lv.tag_resource(ResourceArn=ARN + "1", Tags=tags)
    got = lv.list_tags_for_resource(ResourceArn=ARN + "1")["Tags"]
    assert sorted(got, key=lambda t: t["Key"]) == sorted(tags, key=lambda t: t["Key"])


# -- item 10: the store checks names itself --------------------------------------------------------
@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "", "x" * 256, "lvkit.db", "-a"])
def test_store_refuses_names_outside_the_contract(tmp_path, name):
    store = Store(tmp_path)
    for call in (lambda: store.create_project(name), lambda: store.delete_project(name),
                 lambda: store.get_project(name), lambda: store.list_models(name),
                 lambda: store.artifact_dir(name, 1)):
        with pytest.raises(lvkit.ValidationException):
            call()
    assert (tmp_path / "lvkit.db").is_file() and (tmp_path / "artifacts").is_dir()
    store.create_project("still-works")
    assert [p.name for p in store.list_projects()] == ["still-works"]


@pytest.mark.parametrize("version", [0, -1, "0", "01", "..", "1/../2", "²", 10**12, True])
def test_store_refuses_bad_version_numbers(tmp_path, version):
    store = Store(tmp_path)
    store.create_project("p")
    with pytest.raises(lvkit.ValidationException):
        store.get_model("p", version)
    with pytest.raises(lvkit.ValidationException):
        store.artifact_dir("p", version)


# -- item 9: no server paths in what clients read ----------------------------------------------------
def test_hosting_failure_message_names_no_server_path(tmp_path):
    store = Store(tmp_path)
    store.create_project("p")
    store.add_model(
        "p", backend="fake", build=lambda d: {"f1_score": 1.0} if (d / "lvkit.json").write_text("{") else None
    )
    lv = lvkit.client(store)
    lv.start_model(ProjectName="p", ModelVersion="1", MinInferenceUnits=1)
    d = lv.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]
    assert d["Status"] == "HOSTING_FAILED"
    assert str(tmp_path) not in d["StatusMessage"] and str(tmp_path.resolve()) not in d["StatusMessage"]


def test_training_failure_message_names_no_server_path(tmp_path):
    store = Store(tmp_path / "home")
    store.create_project("p")
    secret = tmp_path / "private" / "weights.ckpt"

    def build(d: Path) -> None:
        raise FileNotFoundError(2, "No such file or directory", str(secret))

    with pytest.raises(FileNotFoundError):
        store.add_model("p", backend="fake", build=build)
    message = store.get_model("p", 1).status_message
    assert "weights.ckpt" in message and str(tmp_path) not in message and "/private/" not in message

    def build_in_home(d: Path) -> None:
        raise OSError(f"cannot write {d}/x")

    with pytest.raises(OSError):
        store.add_model("p", backend="fake", build=build_in_home)
    assert "$LVKIT_HOME/artifacts/p/" in store.get_model("p", 2).status_message


def test_model_failure_answer_names_no_server_path(lv, dark, monkeypatch):
    lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)
    backend = lv.service.loaded_backend("demo", "1")

    def fail(body: bytes, content_type: str) -> None:
        raise FileNotFoundError(2, "No such file", "/srv/secret/models/weights.ckpt")

    monkeypatch.setattr(backend, "detect", fail)
    with pytest.raises(lv.exceptions.InternalServerException) as err:
        lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=dark)
    assert "/srv/secret" not in str(err.value) and "weights.ckpt" in str(err.value)


# -- item 3: one serving process per home ----------------------------------------------------------
@pytest.mark.server
def test_a_second_server_on_the_same_home_is_refused_and_the_first_keeps_serving(demo_home, dark):
    with lvkit.serving(demo_home) as first:
        lv = boto(first.url)
        lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)
        assert first.wait_hosted(timeout=20)["demo/1"] == "HOSTED"
        with pytest.raises(lvkit.LvkitError) as refused:
            lvkit.serving(demo_home)
        err = str(refused.value)
        assert "exited with status 1" in err  # lvkit serve's exit status
        assert "another lvkit server already serves this home" in err and f"pid {first.process.pid}" in err, err
        # the first is untouched: still HOSTED, still answering
        assert lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "HOSTED"
        r = lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=dark)
        assert r["DetectAnomalyResult"]["IsAnomalous"] is False
        # once the first is gone (kill -9 included), a new server takes the home over and hosts again
        first.process.kill()
        assert first.stop() == -9
    with lvkit.serving(demo_home) as third:  # returns once the version it hosts again has left STARTING_HOSTING
        lv3 = boto(third.url)
        assert lv3.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "HOSTED"


def test_in_process_clients_run_beside_a_server(demo_home):
    serving = Store(demo_home)
    serving.claim_server("test")
    with pytest.raises(lvkit.LvkitError, match="already serves this home"):
        Store(demo_home).claim_server()
    lv = lvkit.client(demo_home)  # never claims
    assert lv.list_projects()["Projects"][0]["ProjectName"] == "demo"
    serving.close()
    Store(demo_home).claim_server()  # free again


# -- review findings: trailing newlines, token replays past the quota, lazy loads, refused threads ----
@pytest.mark.parametrize("call", [
    lambda lv: lv.create_project(ProjectName="demo2\n"),
    lambda lv: lv.create_project(ProjectName="demo2", ClientToken="abc\n"),
    lambda lv: lv.describe_model(ProjectName="demo", ModelVersion="1\n"),
    lambda lv: lv.list_tags_for_resource(ResourceArn=ARN + "1\n"),
])
def test_a_final_newline_is_not_part_of_a_valid_name(lv, call):
    with pytest.raises(lv.exceptions.ValidationException):
        call(lv)
    assert [p["ProjectName"] for p in lv.list_projects()["Projects"]] == ["demo"]


def test_a_start_retried_with_its_token_gets_the_first_answer_even_at_the_quota(demo_home):
    service = LookoutVisionService(demo_home, max_inference_units=4)
    assert service.start_model("demo", "1", 4, client_token="t1") == "STARTING_HOSTING"
    assert service.start_model("demo", "1", 4, client_token="t1") == "STARTING_HOSTING"  # not 402
    with pytest.raises(lvkit.ConflictException, match="different StartModel"):
        service.start_model("demo", "1", 3, client_token="t1")
    with pytest.raises(lvkit.ServiceQuotaExceededException):
        service.start_model("demo", "2", 1)
    service.close()


def test_a_version_hosted_elsewhere_reserves_its_units_when_loaded_here(demo_home, dark):
    other = Store(demo_home)
    other.set_status("demo", 1, "HOSTED", "hosted", min_units=3)  # as another process left it
    other.close()
    service = serving_service(demo_home, max_inference_units=2)
    with pytest.raises(lvkit.ThrottlingException, match="cannot be loaded now") as err:
        service.detect_anomalies("demo", "1", dark, "image/png")
    assert err.value.response["QuotaCode"] == "inference-units"
    assert service.quota.reserved == {} and service.hosted() == {}
    service.quota.limit = 3
    assert service.detect_anomalies("demo", "1", dark, "image/png").is_anomalous is False
    assert service.quota.reserved == {("demo", 1): 3}
    service.close()


def test_when_the_host_refuses_a_transition_thread_the_caller_runs_it(demo_home, monkeypatch):
    real = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name.startswith("lvkit-hosting-"):
            raise RuntimeError("can't start new thread")
        real(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    service = serving_service(demo_home)  # wait=False: still complete, in the caller's thread
    assert service.start_model("demo", "1", 1) == "STARTING_HOSTING"
    assert service.describe_model("demo", "1").status == "HOSTED"
    assert service.stop_model("demo", "1") == "STOPPING_HOSTING"
    assert service.describe_model("demo", "1").status == "TRAINED" and service.quota.reserved == {}
    service.close()


def test_reads_still_work_when_settling_a_dead_owner_cannot_be_written(demo_home, monkeypatch):
    dead = Store(demo_home)
    dead.set_status("demo", 1, "STARTING_HOSTING", "hosting is starting")
    dead.close()  # its owner is gone: a read would settle the row
    store = Store.__new__(Store)  # opened while the disk is full (recover() cannot commit)
    monkeypatch.setattr(Store, "recover", lambda self: (_ for _ in ()).throw(
        lvkit.StoreNotWritableError("lvkit cannot save this change: its disk is full")))
    store.__init__(demo_home)  # type: ignore[misc]
    assert store.get_model("demo", 1).status == "STARTING_HOSTING"  # shown as it is, no error
    assert [m.version for m in store.list_models("demo")] == [1, 2]


# -- validation first: a bad field is 400 even when the resource does not exist (not 404) -----------
MISSING = "arn:aws:lookoutvision:us-east-1:000000000000:project/missing"


@pytest.mark.parametrize("call", [
    lambda lv: lv.stop_model(ProjectName="missing", ModelVersion="1", ClientToken="not a token!"),
    lambda lv: lv.stop_model(ProjectName="demo", ModelVersion="99", ClientToken="x" * 65),
    lambda lv: lv.start_model(ProjectName="missing", ModelVersion="1", MinInferenceUnits=0),
    lambda lv: lv.start_model(ProjectName="demo", ModelVersion="99", MinInferenceUnits=1, ClientToken="bad token"),
    lambda lv: lv.tag_resource(ResourceArn=MISSING, Tags=[{"Key": "aws:reserved", "Value": "v"}]),
    lambda lv: lv.tag_resource(ResourceArn=ARN + "99", Tags=[{"Key": "k", "Value": "a\nb"}]),
    lambda lv: lv.untag_resource(ResourceArn=MISSING, TagKeys=["aws:reserved"]),
    lambda lv: lv.untag_resource(ResourceArn=ARN + "99", TagKeys=["x" * 129]),
    lambda lv: lv.list_models(ProjectName="missing", MaxResults=0),
    lambda lv: lv.delete_project(ProjectName="missing", ClientToken="not a token!"),
    lambda lv: lv.detect_anomalies(ProjectName="missing", ModelVersion="1", Body=b"x", ContentType="image/gif"),
], ids=["stop-token", "stop-token-version", "start-units", "start-token", "tag-key", "tag-value", "untag-key",
        "untag-long-key", "list-max-results", "delete-token", "detect-content-type"])
def test_a_bad_field_is_400_even_when_the_resource_does_not_exist(lv, call):
    with pytest.raises(lv.exceptions.ValidationException):
        call(lv)


def test_over_http_too_a_bad_field_is_400_before_a_missing_resource(demo_home):
    from starlette.testclient import TestClient

    from lvkit.server import create_app

    api = TestClient(create_app(LookoutVisionService(demo_home), rehost=False))
    r = api.post(f"/2020-11-20/tags/{MISSING}", json={"Tags": [{"Key": "aws:reserved", "Value": "v"}]})
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"] == "ValidationException", r.text
    r = api.delete(f"/2020-11-20/tags/{MISSING}", params={"tagKeys": "aws:reserved"})
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"] == "ValidationException", r.text
    r = api.post("/2020-11-20/projects/missing/models/1/stop", headers={"X-Amzn-Client-Token": "not a token!"})
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"] == "ValidationException", r.text
