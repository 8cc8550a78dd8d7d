"""The one exception hierarchy lvkit raises on purpose.

::

    LvkitError(Exception)                        root of everything lvkit raises on purpose
    ├── LookoutVisionError(LvkitError, botocore ClientError)
    │   ├── ValidationException            400   bad field, undecodable image, wrong size
    │   ├── AccessDeniedException          403   SigV4 refused, or mapped from a remote service
    │   ├── ResourceNotFoundException      404   + resource_id, resource_type
    │   ├── ConflictException              409   + resource_id, resource_type
    │   ├── ThrottlingException            429   + quota_code, service_code, retry_after_seconds
    │   ├── ServiceQuotaExceededException  402   + quota_code, service_code, resource_id, resource_type
    │   └── InternalServerException        500   + retry_after_seconds
    │       └── StoreNotWritableError             the home is read-only or full (InternalServerException on the wire)
    ├── BackendUnavailableError(LvkitError, ImportError)   optional dependency missing
    └── DatasetError(LvkitError, ValueError)               malformed dataset layout or manifest

    UndefinedMetricWarning(UserWarning)          a metric is undefined for the data; it returns nan
    FailedImagesWarning(UserWarning)             some images of an evaluation run got an error

The API exceptions subclass ``botocore.exceptions.ClientError`` and carry the same ``response``
dict boto3 builds for a modeled error (``Error.Code``, ``Error.Message``, the extra members at the
top level, ``ResponseMetadata.HTTPStatusCode``), so code written against boto3's
``lookoutvision`` client catches them unchanged. The class name is the wire code.

This module imports nothing from lvkit.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from botocore.exceptions import ClientError

__all__ = [
    "AccessDeniedException",
    "BackendUnavailableError",
    "ConflictException",
    "DatasetError",
    "FailedImagesWarning",
    "InternalServerException",
    "LookoutVisionError",
    "LvkitError",
    "ResourceNotFoundException",
    "ServiceQuotaExceededException",
    "StoreNotWritableError",
    "ThrottlingException",
    "UndefinedMetricWarning",
    "ValidationException",
    "API_ERRORS",
    "redact_paths",
]

RESOURCE_TYPES = ("PROJECT", "DATASET", "MODEL", "TRIAL", "MODEL_PACKAGE_JOB")

#: an absolute path in a message (``/a/b/c``); see :func:`redact_paths`
_ABS_PATH = re.compile(r"(?<![\w.~$])/(?:[^\s'\"`:;,()\[\]{}<>/]+/)+([^\s'\"`:;,()\[\]{}<>/]*)")


def redact_paths(text: str, *, home: str | None = None) -> str:
    """``text`` fit to send to a client: server paths never leave the server.

    ``home`` (the store's folder) becomes ``$LVKIT_HOME``; any other absolute path keeps only
    its last part.

    >>> redact_paths("no /srv/lv/artifacts/p/1/lvkit.json nor /etc/x/y.bin", home="/srv/lv")
    'no $LVKIT_HOME/artifacts/p/1/lvkit.json nor …/y.bin'
    """
    if home and len(home) > 1:
        text = text.replace(home.rstrip("/"), "$LVKIT_HOME")
    return _ABS_PATH.sub(lambda m: "…/" + m.group(1), text)


class LvkitError(Exception):
    """Root of every exception lvkit raises on purpose."""


class LookoutVisionError(LvkitError, ClientError):  # type: ignore[misc]  # botocore ships no type hints
    """An error of the Lookout for Vision API contract.

    Parameters
    ----------
    message : str
        What was wrong, for a human.
    operation_name : str, default "DetectAnomalies"
        The API operation that failed (boto3 puts it in ``str(exc)``).
    **members
        The error's extra members in snake_case (``resource_id``, ``resource_type``,
        ``quota_code``, ``service_code``, ``retry_after_seconds``).
    """

    code: ClassVar[str] = "LookoutVisionError"
    http_status: ClassVar[int] = 400
    #: extra wire members of this error: snake_case attribute -> PascalCase wire name
    members: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, *, operation_name: str = "DetectAnomalies", **members: Any) -> None:
        unknown = set(members) - set(self.members)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no members {sorted(unknown)}")
        self.message = message
        for attr in self.members:
            setattr(self, attr, members.get(attr))
        super().__init__(self._response(), operation_name)

    def _response(self) -> dict[str, Any]:
        response: dict[str, Any] = {
            "Error": {"Code": self.code, "Message": self.message},
            "ResponseMetadata": {"HTTPStatusCode": self.http_status, "HTTPHeaders": {}},
            "Message": self.message,
        }
        for attr, wire in self.members.items():
            value = getattr(self, attr)
            if value is not None and wire != "RetryAfterSeconds":
                response[wire] = value
        retry = getattr(self, "retry_after_seconds", None)
        if retry is not None:
            response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] = str(retry)
        return response

    def with_operation(self, operation_name: str) -> LookoutVisionError:
        """Return this error re-labelled with ``operation_name`` (as boto3 would print it)."""
        self.operation_name = operation_name
        self.args = (self._get_message(), )  # ClientError formats "An error occurred (...) when calling X"
        return self

    def _get_message(self) -> str:
        return f"An error occurred ({self.code}) when calling the {self.operation_name} operation: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        kwargs = {attr: getattr(self, attr) for attr in self.members}
        return (_rebuild, (type(self), self.message, self.operation_name, kwargs))

    def wire_members(self) -> dict[str, Any]:
        """The extra members as they go in the JSON error body (PascalCase, None left out)."""
        return {
            wire: getattr(self, attr)
            for attr, wire in self.members.items()
            if getattr(self, attr) is not None and wire != "RetryAfterSeconds"
        }


def _rebuild(cls: type[LookoutVisionError], message: str, operation: str, kwargs: dict[str, Any]) -> LookoutVisionError:
    return cls(message, operation_name=operation, **kwargs)


_RESOURCE = {"resource_id": "ResourceId", "resource_type": "ResourceType"}
_QUOTA = {"quota_code": "QuotaCode", "service_code": "ServiceCode"}


class ValidationException(LookoutVisionError):
    """A request field or the image is invalid (400)."""

    code = "ValidationException"
    http_status = 400


class AccessDeniedException(LookoutVisionError):
    """The caller is not allowed: unknown key, bad signature, expired date (403)."""

    code = "AccessDeniedException"
    http_status = 403


class ResourceNotFoundException(LookoutVisionError):
    """The project, dataset or model does not exist (404)."""

    code = "ResourceNotFoundException"
    http_status = 404
    members = dict(_RESOURCE)


class ConflictException(LookoutVisionError):
    """The resource is in a state that does not allow the call, e.g. detection on a model not hosted (409)."""

    code = "ConflictException"
    http_status = 409
    members = dict(_RESOURCE)


class ThrottlingException(LookoutVisionError):
    """The hosted capacity's queue is full; retry after ``retry_after_seconds`` (429)."""

    code = "ThrottlingException"
    http_status = 429
    members = {**_QUOTA, "retry_after_seconds": "RetryAfterSeconds"}


class ServiceQuotaExceededException(LookoutVisionError):
    """A service quota would be exceeded (402). Not a DetectAnomalies error."""

    code = "ServiceQuotaExceededException"
    http_status = 402
    members = {**_QUOTA, **_RESOURCE}


class InternalServerException(LookoutVisionError):
    """Something failed inside lvkit or the backend (500)."""

    code = "InternalServerException"
    http_status = 500
    members = {"retry_after_seconds": "RetryAfterSeconds"}


class StoreNotWritableError(InternalServerException):
    """The store cannot save a change: its file system is read-only or full (500 on the wire).

    Reads and DetectAnomalies on HOSTED versions keep working; the message says what to do.
    The wire code stays ``InternalServerException``: the client sees the contract's error.
    """


#: every API error class by wire code
API_ERRORS: dict[str, type[LookoutVisionError]] = {
    cls.code: cls
    for cls in (
        ValidationException,
        AccessDeniedException,
        ResourceNotFoundException,
        ConflictException,
        ThrottlingException,
        ServiceQuotaExceededException,
        InternalServerException,
    )
}


class BackendUnavailableError(LvkitError, ImportError):
    """An optional dependency is missing; the message names the ``pip install lvkit[extra]`` to run."""


class DatasetError(LvkitError, ValueError):
    """A dataset folder or manifest is malformed; the message names the file and line."""


class FailedImagesWarning(UserWarning):
    """Some images of an evaluation run got an error instead of an answer; the rows say which."""


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the given data (one class only, no positive pixels); it returns nan."""
