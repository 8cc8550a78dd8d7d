"""A real S3-compatible server for tests: moto's ``ThreadedMotoServer`` on 127.0.0.1.

Fixtures (registered for the whole tree by ``tests/conftest.py``):

* ``s3_server`` (session): the server's URL, started once, stopped at the end.
* ``s3_env`` (function): the AWS environment pointed at that server (``AWS_ENDPOINT_URL_S3``,
  fake keys, ``us-east-1``, no profile, no config files, no instance metadata), so code that
  builds its client from boto3's default chain reaches it. It yields an :class:`S3Env` with
  ``.url``, ``.client`` (a boto3 client of its own) and ``.bucket(name)`` (a fresh bucket).

moto keeps every bucket in memory, shared by all tests of the session: use ``env.bucket()``,
whose names are unique, rather than fixed names. moto does not check credentials.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: variables that would point boto3 elsewhere than the test server; removed by s3_env
_FOREIGN_ENV = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_REGION", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_CA_BUNDLE",
)


@dataclass
class S3Env:
    """The test server as a test sees it."""

    url: str
    client: Any

    def bucket(self, name: str = "lvkit-test") -> str:
        """Create a bucket named ``<name>-<random>`` and return its name."""
        unique = f"{name}-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=unique)
        return unique


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 (and every other service) on 127.0.0.1 at a free port; its URL."""
    pytest.importorskip("moto.server", reason="needs moto[server] (the test extra)")
    from moto.server import ThreadedMotoServer

    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: the OS picks a free one
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        werkzeug_log.setLevel(level)


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Env:
    """The AWS environment of this test pointed at the moto server (restored afterwards)."""
    import boto3

    for name in _FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    none = tmp_path / "no-aws-config"  # no file: the user's ~/.aws is not read
    monkeypatch.setenv("AWS_CONFIG_FILE", str(none))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(none))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    return S3Env(s3_server, client)
