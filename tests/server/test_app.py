"""The ASGI app in process (Starlette's TestClient): routes, status codes, headers, JSON shapes, errors."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

import lvkit
from lvkit.backends.fake import FakeBackend
from lvkit.boto import DATA_PATH
from lvkit.hosting import HostingOptions
from lvkit.operations import NOT_IMPLEMENTED
from lvkit.server import create_app
from lvkit.server.app import JSON_BODY_LIMIT, ROUTES
from lvkit.service import LookoutVisionService

pytestmark = pytest.mark.server

P = "/2020-11-20/projects"
DETECT = P + "/demo/models/{}/detect"


def make_client(home: Path, **options) -> TestClient:
    options.setdefault("hosting", HostingOptions(max_queue=4))
    return TestClient(create_app(LookoutVisionService(home, **options), rehost=False))


@pytest.fixture
def api(demo_home) -> TestClient:
    return make_client(demo_home)


def start(api: TestClient, version: str = "1") -> None:
    r = api.post(f"{P}/demo/models/{version}/start", json={"MinInferenceUnits": 1})
    assert r.status_code == 202 and r.json() == {"Status": "STARTING_HOSTING"}


def assert_error(r, status: int, code: str, **members) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["x-amzn-ErrorType"] == code and r.headers["content-type"] == "application/json"
    assert r.headers["x-amzn-RequestId"]
    body = r.json()
    assert body["__type"] == code and body["message"] == body["Message"] and body["message"]
    for key, value in members.items():
        assert body[key] == value, (key, body)
    return body


def test_routes_mirror_the_service_description():
    model = json.loads(Path(DATA_PATH, "lookoutvision", "2020-11-20", "service-2.json").read_text())
    served = {(m, re.sub(r":path}", "}", uri), op) for m, uri, op, _ in ROUTES}
    described = {(o["http"]["method"], o["http"]["requestUri"], name) for name, o in model["operations"].items()
                 if name not in NOT_IMPLEMENTED}
    assert served == described


def test_json_shapes_and_headers(api):
    r = api.post(P, json={"ProjectName": "other"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json" and r.headers["x-amzn-RequestId"]
    meta = r.json()["ProjectMetadata"]
    assert set(meta) == {"ProjectArn", "ProjectName", "CreationTimestamp"}
    assert isinstance(meta["CreationTimestamp"], float)  # epoch seconds, a JSON number

    page = api.get(P, params={"maxResults": "1"}).json()
    assert [p["ProjectName"] for p in page["Projects"]] == ["demo"] and page["NextToken"]
    rest = api.get(P, params={"nextToken": page["NextToken"]}).json()
    assert [p["ProjectName"] for p in rest["Projects"]] == ["other"] and "NextToken" not in rest
    assert api.get(f"{P}/other").json()["ProjectDescription"]["Datasets"] == []

    models = api.get(f"{P}/demo/models").json()["Models"]
    assert [m["ModelVersion"] for m in models] == ["1", "2"] and models[0]["Status"] == "TRAINED"
    d = api.get(f"{P}/demo/models/latest").json()["ModelDescription"]
    assert d["ModelVersion"] == "2" and isinstance(d["CreationTimestamp"], float)
    assert api.delete(f"{P}/other").json() == {"ProjectArn": meta["ProjectArn"]}


def test_detect_takes_the_raw_body_and_answers_base64_mask(api, bright, dark):
    start(api)
    assert api.get(f"{P}/demo/models/1").json()["ModelDescription"]["Status"] == "HOSTED"
    r = api.post(DETECT.format(1), content=bright, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    result = r.json()["DetectAnomalyResult"]
    assert result["IsAnomalous"] is True and result["Source"] == {"Type": "direct"}
    assert Image.open(io.BytesIO(base64.b64decode(result["AnomalyMask"]))).size == (64, 64)
    normal = api.post(DETECT.format(1), content=dark, headers={"Content-Type": "image/png"}).json()
    assert normal["DetectAnomalyResult"]["IsAnomalous"] is False
    assert normal["DetectAnomalyResult"]["Anomalies"][0]["Name"] == "background"


class Raising:
    """A backend that raises what it was given."""

    def __init__(self, exc):
        self.exc = exc

    def detect(self, body, content_type):
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "status", "code", "headers"),
    [
        (RuntimeError("boom"), 500, "InternalServerException", {}),
        (lvkit.ThrottlingException("busy", retry_after_seconds=3), 429, "ThrottlingException", {"Retry-After": "3"}),
        (lvkit.InternalServerException("down", retry_after_seconds=5), 500, "InternalServerException",
         {"Retry-After": "5"}),
        (lvkit.ValidationException("bad pixels"), 400, "ValidationException", {}),
    ],
    ids=["crash", "throttling", "internal-retry", "validation"],
)
def test_backend_errors_rendered_once(demo_home, dark, exc, status, code, headers):
    api = make_client(demo_home, loader=lambda artifact_dir, **kw: Raising(exc))
    start(api)
    r = api.post(DETECT.format(1), content=dark, headers={"Content-Type": "image/png"})
    body = assert_error(r, status, code)
    for name, value in headers.items():
        assert r.headers[name] == value
    if isinstance(exc, RuntimeError):
        assert "RuntimeError: boom" in body["message"]


def test_every_contract_error_on_the_wire(api, dark):
    assert_error(api.post(DETECT.format(1), content=dark, headers={"Content-Type": "image/gif"}),
                 400, "ValidationException")
    assert_error(api.get(f"{P}/nope"), 404, "ResourceNotFoundException", ResourceId="nope", ResourceType="PROJECT")
    body = assert_error(api.post(DETECT.format(1), content=dark, headers={"Content-Type": "image/png"}),
                        409, "ConflictException", ResourceType="MODEL")
    assert body["ResourceId"].endswith(":model/demo/1")
    arn = api.get(f"{P}/demo/models/1").json()["ModelDescription"]["ModelArn"]
    many = {"Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(150)]}
    assert api.post(f"/2020-11-20/tags/{arn}", json=many).status_code == 200
    more = {"Tags": [{"Key": f"x{i}", "Value": "v"} for i in range(60)]}
    assert_error(api.post(f"/2020-11-20/tags/{arn}", json=more), 402, "ServiceQuotaExceededException",
                 ResourceId=arn, ResourceType="MODEL", ServiceCode="lookoutvision")
    secured = TestClient(create_app(api.app.state.lvkit.service, credentials={"AKID": "secret"}, rehost=False))
    assert_error(secured.get(P), 403, "AccessDeniedException")


def test_tags_in_the_path_with_a_percent_encoded_arn(api):
    arn = api.get(f"{P}/demo").json()["ProjectDescription"]["ProjectArn"]
    quoted = arn.replace(":", "%3A").replace("/", "%2F")
    assert api.post(f"/2020-11-20/tags/{quoted}", json={"Tags": [{"Key": "a b", "Value": "c"}]}).status_code == 200
    assert api.get(f"/2020-11-20/tags/{quoted}").json() == {"Tags": [{"Key": "a b", "Value": "c"}]}
    assert api.delete(f"/2020-11-20/tags/{quoted}", params=[("tagKeys", "a b")]).json() == {}
    assert api.get(f"/2020-11-20/tags/{arn}").json() == {"Tags": []}
    assert_error(api.get("/2020-11-20/tags/not-an-arn"), 400, "ValidationException")
    assert_error(api.post(f"/2020-11-20/tags/{arn}", json={"Tags": {"a": "b"}}), 400, "ValidationException")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/2020-11-20/projects/", 404),
        ("GET", "/2020-11-20/datasets", 404),
        ("GET", "/2020-11-20/projects/demo/models/1/detect", 405),
        ("PUT", "/2020-11-20/projects", 405),
        ("PATCH", "/2020-11-20/projects/demo", 405),
    ],
)
def test_unknown_routes_and_methods_answer_the_error_form(api, method, path, status):
    r = api.request(method, path)
    body = assert_error(r, status, "UnknownOperationException")
    assert "<" not in r.text
    if status == 405:
        assert r.headers["Allow"] and method in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "needle"),
    [
        ("POST", P, {"content": b"{not json"}, "not valid JSON"),
        ("POST", P, {"content": b"[1]"}, "JSON object"),
        ("POST", P, {"json": {}}, "ProjectName"),
        ("GET", P, {"params": {"maxResults": "ten"}}, "MaxResults must be an integer"),
        ("GET", P, {"params": {"maxResults": "0"}}, "MaxResults must be an integer from 1 to 100"),
        ("GET", P, {"params": {"nextToken": "garbage"}}, "NextToken"),
        ("POST", P + "/demo/models/1/start", {"json": {}}, "MinInferenceUnits"),
        ("POST", P + "/demo/models/1/start", {"json": {"MinInferenceUnits": 2, "MaxInferenceUnits": 1}},
         "MaxInferenceUnits"),
        ("POST", P + "/demo/models/1/start", {"json": {"MinInferenceUnits": 1},
                                              "headers": {"X-Amzn-Client-Token": "bad token"}}, "ClientToken"),
        ("POST", DETECT.format(1), {"content": b""}, "ContentType"),
        ("POST", DETECT.format(1), {"content": b"", "headers": {"Content-Type": "image/png"}}, "empty"),
    ],
)
def test_bad_requests(api, method, path, kwargs, needle):
    body = assert_error(api.request(method, path, **kwargs), 400, "ValidationException")
    assert needle in body["message"]


def test_body_limits(demo_home):
    api = make_client(demo_home, max_bytes=1000)
    start(api)
    big = b"\x89PNG\r\n\x1a\n" + bytes(2000)
    r = api.post(DETECT.format(1), content=big, headers={"Content-Type": "image/png"})
    assert "Body is 2,008 bytes; the limit is 1,000 bytes" in assert_error(r, 400, "ValidationException")["message"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(10):
            yield bytes(300)

    r = api.post(DETECT.format(1), content=chunks(), headers={"Content-Type": "image/png"})
    assert "more than 1,000 bytes" in assert_error(r, 400, "ValidationException")["message"]
    r = api.post(P, content=b" " * (JSON_BODY_LIMIT + 1))
    assert "the limit is 1,048,576 bytes" in assert_error(r, 400, "ValidationException")["message"]


def test_a_service_crash_is_a_logged_500_that_tells_the_client_nothing(api, caplog, monkeypatch):
    def crash(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "/srv/secret/home/store.sqlite")

    monkeypatch.setattr(api.app.state.lvkit.service, "list_projects", crash)
    r = api.get(P)
    body = assert_error(r, 500, "InternalServerException")
    request_id = r.headers["x-amzn-RequestId"]
    assert "/srv/secret" not in r.text and "FileNotFoundError" not in r.text
    assert body["message"].startswith("ListProjects failed on an internal error") and request_id in body["message"]
    [record] = [r for r in caplog.records if "ListProjects failed" in r.getMessage()]
    assert request_id in record.getMessage() and "/srv/secret/home/store.sqlite" in str(record.exc_info[1])


def test_lifespan_hosts_again_what_was_hosted(demo_home, dark):
    lv = lvkit.client(demo_home)
    lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=2)
    lv.service.close()
    service = LookoutVisionService(demo_home, hosting=HostingOptions(), loader=FakeBackend.load)
    with TestClient(create_app(service)) as api:
        service.wait_for("demo", "1", timeout=20)
        d = api.get(f"{P}/demo/models/1").json()["ModelDescription"]
        assert d["Status"] == "HOSTED" and d["MinInferenceUnits"] == 2
        assert service.hosted()["demo/1"]["workers"] == 2
        r = api.post(DETECT.format(1), content=dark, headers={"Content-Type": "image/png"})
        assert r.json()["DetectAnomalyResult"]["IsAnomalous"] is False


def test_service_description_files_are_package_data():
    folder = Path(DATA_PATH, "lookoutvision", "2020-11-20")
    model = json.loads((folder / "service-2.json").read_text())
    assert model["metadata"]["protocol"] == "rest-json" and model["metadata"]["signingName"] == "lookoutvision"
    assert json.loads((folder / "paginators-1.json").read_text())["pagination"]["ListModels"]["result_key"] == "Models"
    assert sorted(p.name for p in folder.iterdir()) == ["paginators-1.json", "service-2.json"]
