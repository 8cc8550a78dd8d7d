"""The one error of :mod:`lvkit.storage`, and how boto3's and the file system's failures become it.

Owns :class:`StorageError` and its ``reason`` values (:data:`Reason`), :func:`s3_error` (a botocore
``ClientError`` or ``BotoCoreError`` by its code, HTTP status or class: a missing key or bucket,
access denied with the credentials hint, an unreachable endpoint, ...) and :func:`os_error` (an
``OSError`` by its class). The message never repeats the location: ``str(exc)`` is
``"<uri>: <what was wrong>"``.

Imports ``lvkit.errors`` only (and ``botocore.exceptions``, which does not load boto3).
"""

from __future__ import annotations

from typing import Any, Literal

from botocore.exceptions import ClientError

from lvkit.errors import LvkitError

__all__ = ["Reason", "StorageError", "os_error", "s3_error"]

Reason = Literal["not_found", "no_bucket", "access_denied", "invalid", "unreachable", "too_large", "io"]

_MISSING = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "RequestTimeTooSkewed"}
_INVALID = {"InvalidBucketName", "InvalidArgument", "KeyTooLongError"}
_CREDENTIALS_HINT = ("configure credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                     "naming a profile of ~/.aws/config (see `aws configure`)")


class StorageError(LvkitError):
    """A location could not be read or written; ``str(exc)`` is ``"<uri>: <what was wrong>"``.

    Parameters
    ----------
    uri : str
        The location, as given (an ``s3://`` URI, a ``file://`` URI or a path).
    reason : {"not_found", "no_bucket", "access_denied", "invalid", "unreachable", "too_large", "io"}
        What kind of failure, for code to branch on.
    detail : str
        What was wrong, one sentence, without the location.
    """

    def __init__(self, uri: str, reason: Reason, detail: str) -> None:
        super().__init__(f"{uri}: {detail}")
        self.uri = uri
        self.reason: Reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.uri, self.reason, self.detail))


def s3_error(uri: str, bucket: str, exc: Exception, *, missing: Reason = "not_found") -> StorageError:
    from botocore import exceptions as bx

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", "")).rstrip(".")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        said = f"{code}: {message}" if message else code
        if code == "NoSuchBucket" or (missing == "no_bucket" and status == 404):
            return StorageError(uri, "no_bucket", f"no such bucket {bucket!r}")
        if code == "NoSuchVersion":
            return StorageError(uri, "not_found", f"no such version of the key in bucket {bucket!r}")
        if code in _MISSING or status == 404:
            return StorageError(uri, "not_found", f"no such key in bucket {bucket!r}")
        if code in _DENIED or status == 403:
            return StorageError(uri, "access_denied", f"access denied ({said}); check the credentials boto3 found "
                                                      "(AWS_PROFILE, AWS_ACCESS_KEY_ID) and the bucket's policy")
        if code in _INVALID:
            return StorageError(uri, "invalid", f"S3 refused the request ({said})")
        if status >= 500:
            return StorageError(uri, "unreachable", f"the S3 endpoint failed after 3 attempts ({said})")
        return StorageError(uri, "io", f"S3 error ({said})")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError,
                        bx.ProxyConnectionError, bx.SSLError, bx.ReadTimeoutError)):
        return StorageError(uri, "unreachable", f"cannot reach S3 ({exc}); check the endpoint (AWS_ENDPOINT_URL_S3, "
                                                "AWS_ENDPOINT_URL or the profile's endpoint_url) and the network")
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.ProfileNotFound,
                        bx.CredentialRetrievalError)):
        return StorageError(uri, "access_denied", f"{exc}; {_CREDENTIALS_HINT}")
    return StorageError(uri, "io", f"S3 failed: {exc}")


def os_error(location: str, exc: OSError) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageError(location, "not_found", "no such file")
    if isinstance(exc, NotADirectoryError):
        return StorageError(location, "not_found", "a part of the path is a file, not a folder")
    if isinstance(exc, IsADirectoryError):
        return StorageError(location, "invalid", "a folder, not a file")
    if isinstance(exc, PermissionError):
        return StorageError(location, "access_denied", "permission denied")
    return StorageError(location, "io", exc.strerror or str(exc))
