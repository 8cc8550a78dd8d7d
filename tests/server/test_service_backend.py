"""ServiceBackend against ``lvkit serve`` on loopback: the backend contract, error mapping, load()."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from botocore.exceptions import ClientError

import lvkit
from lvkit.backends import Backend, get_backend
from lvkit.backends.fake import FakeBackend
from lvkit.backends.service import ServiceBackend, translate_client_error
from lvkit.shapes import DetectAnomalyResult
from tests.conftest import png_bytes
from tests.server.conftest import boto, host

pytestmark = pytest.mark.server


@pytest.fixture
def remote(live):
    host(boto(live.url), "1")
    return ServiceBackend(boto(live.url), "demo", "1")


def test_conformance(remote, demo_home, dark, bright):
    """The checks every backend passes: same results as the model it fronts, the contract's errors."""
    assert isinstance(remote, Backend)
    local = FakeBackend.load(lvkit.Store(demo_home).artifact_dir("demo", 1))
    for body in (dark, bright, png_bytes(np.full((64, 64, 3), 200, np.uint8), fmt="JPEG")):
        content_type = "image/jpeg" if body[:2] == b"\xff\xd8" else "image/png"
        got = remote.detect(body, content_type)
        assert isinstance(got, DetectAnomalyResult) and 0.0 <= got.confidence <= 1.0
        assert got == local.detect(body, content_type)
        assert remote.detect(body, content_type) == got  # deterministic
    bad = [(b"", "image/png"), (b"GIF89a" + bytes(100), "image/png"), (dark, "image/gif"), (dark, "image/jpeg"),
           (png_bytes(np.zeros((64, 96, 3), np.uint8)), "image/png")]
    for body, content_type in bad:
        with pytest.raises(lvkit.ValidationException) as info:
            remote.detect(body, content_type)
        assert isinstance(info.value, ClientError) and isinstance(info.value.__cause__, Exception)


def test_errors_map_onto_lvkits_tree(live, remote, dark):
    with pytest.raises(lvkit.ConflictException) as info:
        ServiceBackend(boto(live.url), "demo", "2").detect(dark, "image/png")
    assert info.value.resource_type == "MODEL" and info.value.resource_id.endswith("demo/2")
    with pytest.raises(lvkit.ResourceNotFoundException) as info:
        ServiceBackend(boto(live.url), "nope").detect(dark, "image/png")
    assert (info.value.resource_id, info.value.resource_type) == ("nope", "PROJECT")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(lvkit.InternalServerException, match="could not be reached"):
        ServiceBackend(boto(dead), "demo", "1").detect(dark, "image/png")


def test_translate_client_error_keeps_members():
    err = ClientError({"Error": {"Code": "ThrottlingException", "Message": "busy"}, "QuotaCode": "q",
                       "ResponseMetadata": {"HTTPStatusCode": 429, "HTTPHeaders": {"retry-after": "4"}}},
                      "DetectAnomalies")
    new = translate_client_error(err)
    assert isinstance(new, lvkit.ThrottlingException) and (new.retry_after_seconds, new.quota_code) == (4, "q")
    odd = translate_client_error(ClientError({"Error": {"Code": "Weird", "Message": "?"}}, "DetectAnomalies"))
    assert isinstance(odd, lvkit.InternalServerException) and "Weird" in odd.message


def test_a_version_that_forwards_to_a_server(live, tmp_path, dark, bright):
    """A store version whose backend is another lvkit serve: load() reads lvkit.json."""
    host(boto(live.url), "1")
    proxy = lvkit.client(tmp_path / "proxy-home")
    proxy.create_project(ProjectName="proxy")
    proxy.service.store.add_model("proxy", backend="service", build=lambda d: ServiceBackend.save(
        d, endpoint_url=live.url, project="demo", version="1"))
    loaded = get_backend("service")(proxy.service.store.artifact_dir("proxy", 1))
    assert isinstance(loaded, ServiceBackend) and loaded.client.meta.endpoint_url == live.url
    proxy.start_model(ProjectName="proxy", ModelVersion="1", MinInferenceUnits=1)
    direct = boto(live.url)
    for body in (dark, bright):
        through = proxy.detect_anomalies(ProjectName="proxy", ModelVersion="1", ContentType="image/png", Body=body)
        straight = direct.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=body)
        assert through["DetectAnomalyResult"] == straight["DetectAnomalyResult"]
