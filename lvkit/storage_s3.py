"""The S3 client of the process, and calls through it with their failures as StorageError.

Owns the one boto3 S3 client (built on first use, shared by all threads, rebuilt when the
environment it came from changes) and :func:`s3_call`, which every S3 request of
:mod:`lvkit.storage` goes through. ``boto3`` is imported inside the function that builds the
client, so importing this module leaves it unloaded.

S3 access goes through boto3's default chain and nothing of lvkit's own: credentials, region
and endpoint come from the environment (``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, ...) and from the shared config file, including
a profile's ``endpoint_url`` or its ``services`` section. So real S3, MinIO and other
S3-compatible servers work as the AWS CLI does. Servers that need path-style addressing want
``s3 =\\n  addressing_style = path`` in the profile; servers without the newer checksums want
``request_checksum_calculation = when_required`` (or the ``AWS_REQUEST_CHECKSUM_CALCULATION``
variable). The client's own settings are only a short connect timeout (5 s) and 3 attempts,
so an unreachable endpoint fails in seconds.

Imports ``lvkit.storage_errors`` and ``lvkit.storage_locations`` only.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from lvkit.storage_errors import Reason, s3_error
from lvkit.storage_locations import split_s3

__all__ = ["s3_call", "s3_client"]

_T = TypeVar("_T")

#: the environment the S3 client is built from; a change rebuilds it
_CLIENT_ENV = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
)
_client_lock = threading.Lock()
_client_cache: tuple[str, Any] | None = None


def s3_client() -> Any:
    """The process's boto3 S3 client, from boto3's default chain (no endpoint of lvkit's own).

    One client, shared by all threads (boto3 clients are thread-safe), rebuilt when a variable of
    ``_CLIENT_ENV`` changes (the profile, config files, endpoints, keys, region). Its ``Config``
    sets ``connect_timeout=5``, ``read_timeout=60`` and 3 attempts in all (``standard`` retry
    mode); these override ``AWS_MAX_ATTEMPTS`` and the profile's own.

    Raises
    ------
    StorageError
        ``reason="access_denied"`` at the location ``s3://`` when the configuration cannot be
        used (``AWS_PROFILE`` names no profile, say).
    """
    try:
        return _client()
    except BotoCoreError as exc:
        raise s3_error("s3://", "", exc) from exc


def _client() -> Any:
    global _client_cache
    env = "\0".join(f"{name}={os.environ.get(name)}" for name in _CLIENT_ENV)
    key = hashlib.sha256(env.encode("utf-8", "surrogatepass")).hexdigest()  # no secrets kept in the clear
    with _client_lock:
        if _client_cache is None or _client_cache[0] != key:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=5, read_timeout=60, retries={"total_max_attempts": 3, "mode": "standard"})
            _client_cache = (key, boto3.session.Session().client("s3", config=config))
        return _client_cache[1]


def s3_call(uri: str, call: Callable[[Any, str, str], _T], *, missing: Reason = "not_found") -> _T:
    """``call(client, bucket, key)`` with botocore's errors turned into StorageError."""
    bucket, key = split_s3(uri)
    try:
        return call(_client(), bucket, key)
    except (ClientError, BotoCoreError) as exc:
        raise s3_error(uri, bucket, exc, missing=missing) from exc
