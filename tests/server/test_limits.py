"""The server's limits and leaks: body memory, body timeouts, malformed JSON, what errors tell.

Body memory and timeouts are checked over real sockets against a live ``lvkit serve``: stalled
uploads hold no more than the budget, the next one gets 429 before its body is read, a normal
request still works meanwhile, and after the timeout the stalled ones are answered and freed.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from click.testing import CliRunner
from starlette.testclient import TestClient

import lvkit
from lvkit.cli import main
from lvkit.server import create_app, load_credentials
from lvkit.server.app import JSON_BODY_LIMIT, parse_json_body
from lvkit.service import LookoutVisionService
from tests.server.conftest import boto, host, serving_service

pytestmark = pytest.mark.server

P = "/2020-11-20/projects"
DETECT = P + "/demo/models/1/detect"
MIB = 1024 * 1024


# -- raw HTTP over a socket -----------------------------------------------------------------
_opened: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets():
    yield
    while _opened:
        _opened.pop().close()


def upload(port: int, *, length: int | None, sent: int, path: str = DETECT) -> socket.socket:
    """A POST that declares ``length`` bytes (None: chunked), sends ``sent`` of them and stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    _opened.append(sock)
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n{framing}\r\n\r\n".encode())
    if sent:
        sock.sendall(f"{sent:x}\r\n".encode() + bytes(sent) + b"\r\n" if length is None else bytes(sent))
    return sock


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers (lower-case names) and JSON body of the next response on ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, json.loads(body)


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


# -- body memory and timeouts ---------------------------------------------------------------
@pytest.fixture
def tight(demo_home, start_server):
    """1 MiB bodies, room for three and a half of them, 4 s without a byte ends a body."""
    return start_server(serving_service(demo_home, max_bytes=MIB), max_body_bytes_in_flight=7 * MIB // 2,
                        body_idle_timeout=4.0, body_timeout=30.0)


def test_stalled_uploads_hold_no_more_than_the_budget_and_are_released(tight, dark):
    budget = tight.server.config.app.state.lvkit.budget
    lv = boto(tight.url)
    host(lv, "1")
    stalled = []
    for n in range(1, 4):
        stalled.append(upload(tight.port, length=MIB, sent=64 * 1024))
        wait_until(lambda: budget.in_use == n * MIB)

    refused = [upload(tight.port, length=MIB, sent=64 * 1024) for _ in range(5)]
    for sock in refused:  # answered at once, before their bodies are read
        status, headers, body = read_response(sock, timeout=1.5)
        assert status == 429 and headers["x-amzn-errortype"] == "ThrottlingException", body
        assert headers["retry-after"] == "1" and body["__type"] == "ThrottlingException" and body["message"]
        sock.close()
    with pytest.raises(lv.exceptions.ThrottlingException) as info:  # boto3 sees the contract's 429
        lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=bytes(MIB // 2 + 1))
    assert info.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"
    assert budget.in_use == 3 * MIB <= budget.capacity

    # meanwhile, requests that fit still work: no body, a small JSON body, a small image
    assert lv.create_project(ProjectName="meanwhile")["ProjectMetadata"]["ProjectName"] == "meanwhile"
    assert len(lv.list_projects()["Projects"]) == 2
    r = lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=dark)
    assert r["DetectAnomalyResult"]["IsAnomalous"] is False
    assert budget.in_use == 3 * MIB and not any(answered(sock) for sock in stalled)  # still stalled

    for sock in stalled:  # the idle timeout answers them and closes their connections
        status, headers, body = read_response(sock, timeout=10)
        assert status == 400 and body["__type"] == "ValidationException", body
        assert "did not arrive in time: no byte of it came for 4 seconds (65,536 bytes came)" in body["message"]
        assert headers["connection"] == "close" and closed_by_server(sock)
        sock.close()
    wait_until(lambda: budget.in_use == 0)
    again = upload(tight.port, length=MIB, sent=0)  # room again
    wait_until(lambda: budget.in_use == MIB)
    again.close()


def test_a_trickling_upload_meets_the_total_deadline(demo_home, start_server):
    live = start_server(serving_service(demo_home, max_bytes=MIB), body_idle_timeout=1.0, body_timeout=1.5)
    sock = upload(live.port, length=1000, sent=1)
    start = time.monotonic()
    while not answered(sock):  # a byte every 0.2 s: never idle for 1 s, but over 1.5 s in all
        assert time.monotonic() - start < 10
        sock.sendall(b"\0")
        time.sleep(0.2)
    status, headers, body = read_response(sock, timeout=5)
    assert status == 400 and "it took more than 1.5 seconds" in str(body["message"])
    assert 1.4 < time.monotonic() - start < 5 and headers["connection"] == "close"
    sock.close()
    wait_until(lambda: live.server.config.app.state.lvkit.budget.in_use == 0)


def test_a_body_of_unknown_length_reserves_the_limit_until_the_client_goes(demo_home, start_server):
    live = start_server(serving_service(demo_home, max_bytes=MIB), max_body_bytes_in_flight=MIB,
                        body_idle_timeout=60.0)
    budget = live.server.config.app.state.lvkit.budget
    chunked = upload(live.port, length=None, sent=100)
    wait_until(lambda: budget.in_use == MIB)
    refused = upload(live.port, length=10, sent=0, path=P)  # even a small one: the budget is full
    assert read_response(refused, timeout=2)[0] == 429
    chunked.close()  # a disconnect frees the reservation at once, not after the idle timeout
    wait_until(lambda: budget.in_use == 0, timeout=2)


def test_budget_and_timeouts_are_checked(home):
    service = LookoutVisionService(home, max_bytes=8 * MIB)
    with pytest.raises(lvkit.LvkitError, match="must hold at least one body"):
        create_app(service, max_body_bytes_in_flight=4 * MIB)
    with pytest.raises(lvkit.LvkitError, match="must be positive"):
        create_app(service, body_idle_timeout=0)


def test_serve_passes_the_limits_through(monkeypatch, tmp_path):
    import lvkit.server
    import lvkit.server._serve as serving

    seen: dict[str, object] = {}
    monkeypatch.setattr(lvkit.server, "serve", lambda home, **kw: seen.update(kw))
    result = CliRunner().invoke(main, ["serve", "--home", str(tmp_path), "--max-inflight-bytes", "12345678",
                                       "--body-timeout", "7", "--body-idle-timeout", "3",
                                       "--max-inference-units", "4"])
    assert result.exit_code == 0, result.output
    assert (seen["max_body_bytes_in_flight"], seen["body_timeout"], seen["body_idle_timeout"],
            seen["max_inference_units"]) == (12345678, 7.0, 3.0, 4)
    CliRunner().invoke(main, ["serve", "--home", str(tmp_path)])
    assert (seen["max_body_bytes_in_flight"], seen["body_timeout"], seen["body_idle_timeout"],
            seen["max_inference_units"]) == (256 * MIB, 120.0, 15.0, None)

    class Built(Exception):
        pass

    def service(home, **kw):
        seen.clear()
        seen.update(kw)
        raise Built

    monkeypatch.setattr(serving, "LookoutVisionService", service)
    with pytest.raises(Built):
        serving.serve(tmp_path, max_inference_units=3)
    assert seen["max_inference_units"] == 3
    with pytest.raises(Built):
        serving.serve(tmp_path)
    assert seen["max_inference_units"] is None  # the service's own default


# -- malformed JSON: always 400, never 500 --------------------------------------------------
@pytest.fixture
def api(demo_home) -> TestClient:
    return TestClient(create_app(LookoutVisionService(demo_home), rehost=False), raise_server_exceptions=False)


START = P + "/demo/models/1/start"
TAG = "/2020-11-20/tags/{arn}"


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        (P, b"[" * 100_000, "nests arrays or objects too deeply"),
        (P, b'{"ProjectName": ' + b'{"a": ' * 50_000, "too deeply"),
        (P, b'{"ProjectName": "caf\xe9"}', "not UTF-8"),
        (P, '{"ProjectName": "x"}'.encode("utf-16"), "not UTF-8"),
        (P, b'\xef\xbb\xbf{"ProjectName": "x"}', "not valid JSON"),
        (P, b'{"ProjectName": "a", "ProjectName": "b"}', "repeats the key 'ProjectName'"),
        (P, b'{"ProjectName": "\\ud800"}', "lone surrogate"),
        (P, b'{"ProjectName": 5}', "ProjectName must be a string, got a number"),
        (P, b'{"ProjectName": ["demo"]}', "ProjectName must be a string, got a list"),
        (P, b'"demo"', "must be a JSON object"),
        (P, b"null", "must be a JSON object"),
        (P, b'{"ProjectName": "x",}', "not valid JSON"),
        (START, b'{"MinInferenceUnits": NaN}', "NaN, which is not JSON"),
        (START, b'{"MinInferenceUnits": Infinity}', "Infinity, which is not JSON"),
        (START, b'{"MinInferenceUnits": -Infinity}', "-Infinity, which is not JSON"),
        (START, b'{"MinInferenceUnits": 1e999}', "beyond a float's range"),
        (START, b'{"MinInferenceUnits": 1' + b"0" * 400 + b"}", "beyond 64 bits"),
        (START, b'{"MinInferenceUnits": ' + b"9" * 5000 + b"}", "beyond 64 bits"),
        (START, b'{"MinInferenceUnits": 10000000000000000000}', "beyond 64 bits"),
        (START, b'{"MinInferenceUnits": 4294967296}', "MinInferenceUnits must be a 32-bit integer"),
        (START, b'{"MinInferenceUnits": "1"}', "MinInferenceUnits must be an integer, got a string"),
        (START, b'{"MinInferenceUnits": [1]}', "MinInferenceUnits must be an integer, got a list"),
        (START, b'{"MinInferenceUnits": {"n": 1}}', "got an object"),
        (START, b'{"MinInferenceUnits": 1.5}', "MinInferenceUnits must be an integer, got a number"),
        (START, b'{"MinInferenceUnits": true}', "MinInferenceUnits must be an integer, got a boolean"),
        (START, b'{"MinInferenceUnits": 1, "MaxInferenceUnits": "2"}', "MaxInferenceUnits must be an integer"),
        (TAG, b'{"Tags": {"k": "v"}}', "Tags must be a list"),
        (TAG, b'{"Tags": "k=v"}', "Tags must be a list"),
        (TAG, b'{"Tags": [1]}', "Tags must be a list"),
        (TAG, b'{"Tags": [{"Key": ["k"], "Value": "v"}]}', "Tags must be a list"),
        (TAG, b'{"Tags": [{"Key": {"k": 1}, "Value": "v"}]}', "Tags must be a list"),
        (TAG, b'{"Tags": [{"Key": "k", "Value": 1}]}', "Tags must be a list"),
        (TAG, b'{"Tags": [{"Key": "k", "Value": "\\udfff"}]}', "lone surrogate"),
    ],
)
def test_every_malformed_json_body_is_a_validation_exception(api, path, body, needle):
    arn = api.get(f"{P}/demo").json()["ProjectDescription"]["ProjectArn"]
    r = api.post(path.format(arn=arn), content=body, headers={"Content-Type": "application/x-amz-json-1.1"})
    assert r.status_code == 400, r.text
    assert r.headers["x-amzn-ErrorType"] == "ValidationException" and r.json()["__type"] == "ValidationException"
    assert needle in r.json()["message"]
    assert r.content.isascii()


def test_well_formed_json_still_works(api):
    assert api.post(P, content=b'{"ProjectName": "ok", "Unknown": [1, 2.5, null, {"x": "\\ud83d\\ude00"}]}'
                    ).status_code == 200
    assert parse_json_body(b"  ") == {} and parse_json_body(b'{"a": -9223372036854775808}') == {"a": -2**63}
    r = api.post(START, json={"MinInferenceUnits": 1, "MaxInferenceUnits": None})
    assert r.status_code == 202, r.text


# -- what errors tell -----------------------------------------------------------------------
def test_an_internal_error_names_the_request_id_not_the_cause(api, caplog, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError(f"database disk image is malformed: {Path('/home/ops/.lvkit/lvkit.sqlite')}")

    monkeypatch.setattr(api.app.state.lvkit.service, "describe_project", crash)
    r = api.get(f"{P}/demo")
    assert r.status_code == 500 and r.headers["x-amzn-ErrorType"] == "InternalServerException"
    request_id = r.headers["x-amzn-RequestId"]
    assert "/home/ops" not in r.text and "OSError" not in r.text and "malformed" not in r.text
    assert request_id in r.json()["message"]
    [record] = [rec for rec in caplog.records if request_id in rec.getMessage()]
    assert record.levelno == logging.ERROR and "/home/ops/.lvkit/lvkit.sqlite" in str(record.exc_info[1])


def signed(key: str, secret: str, *, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The headers of a GET ListProjects signed with ``key``/``secret`` by botocore."""
    request = AWSRequest(method="GET", url=f"http://testserver{P}", headers={"host": "testserver", **(extra or {})})
    SigV4Auth(Credentials(key, secret), "lookoutvision", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def test_unknown_keys_and_wrong_signatures_read_the_same(demo_home, caplog):
    app = create_app(LookoutVisionService(demo_home), credentials={"AKIDKNOWN": "s3cret"}, rehost=False)
    api = TestClient(app)
    assert api.get(P, headers=signed("AKIDKNOWN", "s3cret")).status_code == 200
    cases = {
        "unknown key": signed("AKIDNOBODY", "s3cret"),
        "wrong secret": signed("AKIDKNOWN", "guess"),
        "payload hash": signed("AKIDKNOWN", "s3cret", extra={"X-Amz-Content-SHA256": "0" * 64}),
    }
    answers = {name: api.get(P, headers=headers) for name, headers in cases.items()}
    bodies = {json.dumps({k: v for k, v in r.json().items()}) for r in answers.values()}
    assert {r.status_code for r in answers.values()} == {403} and len(bodies) == 1
    assert "AKID" not in bodies.pop()
    for name, r in answers.items():  # the log tells them apart, under the request id
        logged = [rec.getMessage() for rec in caplog.records if r.headers["x-amzn-RequestId"] in rec.getMessage()]
        assert logged, name
    assert any("'AKIDNOBODY' is not known" in rec.getMessage() for rec in caplog.records)

    app.state.lvkit.verifier.clock = lambda: time.time() + 16 * 60  # checks that need no secret come first
    expired = {api.get(P, headers=signed(key, "s3cret")).json()["message"] for key in ("AKIDKNOWN", "AKIDNOBODY")}
    assert len(expired) == 1 and "Signature expired" in expired.pop()


def test_an_unknown_key_meets_the_same_body_checks_as_a_known_one(demo_home):
    """Before, an unknown key was refused before the body (403) and a known one reached the size
    check (400): the status told which keys exist. Now both get the body checks first."""
    app = create_app(LookoutVisionService(demo_home), credentials={"AKIDKNOWN": "s3cret"}, rehost=False)
    api = TestClient(app)
    too_big = {"Content-Length": str(JSON_BODY_LIMIT + 1)}
    answers = [api.post(P, headers={**signed(key, secret), **too_big}, content=b" " * (JSON_BODY_LIMIT + 1))
               for key, secret in (("AKIDKNOWN", "guess"), ("AKIDNOBODY", "s3cret"))]
    assert [r.status_code for r in answers] == [400, 400]
    assert answers[0].json()["message"] == answers[1].json()["message"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("AKID1:fine\nAKIDX-wJalrXUtnFEMIK7MDENG\n", "line 2 is not of the form ACCESS_KEY_ID:SECRET"),
        ("# keys\nAKID1:fine\n:wJalrXUtnFEMIK7MDENG\n", "line 3 is not of the form ACCESS_KEY_ID:SECRET"),
        ("[default]\naws_access_key_id = AKID1\naws_secret_access_key wJalrXUtnFEMIK7MDENG\n",
         "not a credentials INI file (ParsingError at line 3)"),
        ("[default]\naws_access_key_id = AKID1\naws_access_key_id = wJalrXUtnFEMIK7MDENG\n",
         "not a credentials INI file (DuplicateOptionError at line 3)"),
    ],
)
def test_a_malformed_credentials_file_names_the_line_not_its_content(tmp_path, text, where):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_credentials(path, env={})
    assert where in str(info.value) and "wJalr" not in str(info.value) and "AKIDX" not in str(info.value)
    result = CliRunner().invoke(main, ["serve", "--credentials", str(path)])
    assert result.exit_code != 0 and where in result.output and "wJalr" not in result.output


def test_credentials_files_take_secrets_as_written(tmp_path):
    ini = tmp_path / "credentials"
    ini.write_text("[default]\naws_access_key_id = AKID1\naws_secret_access_key = a%b%%c\n")
    assert load_credentials(ini, env={}) == {"AKID1": "a%b%%c"}  # no INI interpolation
    binary = tmp_path / "binary"
    binary.write_bytes(b"AKID1:\xffsecret\n")
    with pytest.raises(ValueError, match="not UTF-8 text$"):
        load_credentials(binary, env={})
