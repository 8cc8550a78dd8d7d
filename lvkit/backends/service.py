"""ServiceBackend: DetectAnomalies answered by a remote Lookout for Vision endpoint.

Wraps a boto3 ``lookoutvision`` client and one (project, model version): the real service for
whoever still has it, or any compatible endpoint such as another ``lvkit serve``. Returns the
same :class:`~lvkit.shapes.DetectAnomalyResult` as every backend and translates botocore's
errors at this boundary: a ``ClientError`` becomes the lvkit class named by its
``Error.Code`` (with its members), any other failure (connection refused, timeout, an unknown
code) an InternalServerException, always ``raise New(...) from exc``.

The stored form (``lvkit.json``)::

    {"backend": "service", "endpoint_url": "http://127.0.0.1:8080", "project": "demo",
     "version": "1", "region": "us-east-1"}

Not emulated: nothing is checked locally (content type, size, decoding): the endpoint decides.
Credentials come from boto3's usual chain (see :func:`lvkit.boto.boto3_client`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvkit.backends import read_version_manifest, write_version_manifest
from lvkit.errors import API_ERRORS, InternalServerException, LookoutVisionError, ValidationException
from lvkit.shapes import DetectAnomalyResult

if TYPE_CHECKING:
    from lvkit.shapes import ContentType

__all__ = ["ServiceBackend", "translate_client_error"]

#: snake_case attribute of each wire member an API error may carry
_MEMBERS = {"ResourceId": "resource_id", "ResourceType": "resource_type", "QuotaCode": "quota_code",
            "ServiceCode": "service_code"}


def translate_client_error(exc: Exception, operation: str = "DetectAnomalies") -> LookoutVisionError:
    """The lvkit error for a botocore/boto3 exception (not raised: the caller raises it ``from exc``).

    Examples
    --------
    >>> from botocore.exceptions import ClientError
    >>> err = ClientError({"Error": {"Code": "ConflictException", "Message": "not hosted"},
    ...                    "ResourceId": "demo/1", "ResourceType": "MODEL"}, "DetectAnomalies")
    >>> new = translate_client_error(err)
    >>> type(new).__name__, new.resource_type, new.message
    ('ConflictException', 'MODEL', 'not hosted')
    """
    from botocore.exceptions import ClientError, ParamValidationError

    if isinstance(exc, LookoutVisionError):
        return exc
    if isinstance(exc, ParamValidationError):  # refused by botocore before sending
        return ValidationException(str(exc), operation_name=operation)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        cls = API_ERRORS.get(str(error.get("Code", "")))
        message = str(error.get("Message") or exc)
        if cls is not None:
            members = {attr: exc.response[wire] for wire, attr in _MEMBERS.items()
                       if wire in exc.response and attr in cls.members}
            retry = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("retry-after")
            if "retry_after_seconds" in cls.members and retry is not None and str(retry).isdigit():
                members["retry_after_seconds"] = int(retry)
            return cls(message, operation_name=operation, **members)
        return InternalServerException(f"the endpoint answered {error.get('Code')}: {message}",
                                       operation_name=operation)
    return InternalServerException(f"the endpoint could not be reached: {type(exc).__name__}: {exc}",
                                   operation_name=operation)


class ServiceBackend:
    """A backend that forwards DetectAnomalies to a ``lookoutvision`` endpoint.

    Parameters
    ----------
    client
        A boto3 ``lookoutvision`` client (``lvkit.boto3_client(...)`` or the genuine one).
    project : str
        The endpoint's project name.
    version : str, default "latest"
        The endpoint's model version.
    """

    def __init__(self, client: Any, project: str, version: str = "latest") -> None:
        self.client = client
        self.project = project
        self.version = version

    def detect(self, body: bytes, content_type: ContentType) -> DetectAnomalyResult:
        try:
            response = self.client.detect_anomalies(ProjectName=self.project, ModelVersion=self.version,
                                                    Body=body, ContentType=content_type)
        except Exception as exc:  # every failure of the remote call is translated here, and only here
            raise translate_client_error(exc) from exc
        return DetectAnomalyResult.from_wire(response["DetectAnomalyResult"])

    @staticmethod
    def save(artifact_dir: Path, *, endpoint_url: str, project: str, version: str = "latest",
             region: str | None = None) -> None:
        """Write a version that forwards to ``endpoint_url`` (project, version) into ``artifact_dir``."""
        write_version_manifest(artifact_dir, {"backend": "service", "endpoint_url": endpoint_url, "project": project,
                                      "version": str(version), "region": region})

    @classmethod
    def load(cls, artifact_dir: Path, **options: Any) -> ServiceBackend:
        """Build the client from ``lvkit.json`` (other options, like ``device``, are ignored)."""
        from lvkit.boto import boto3_client

        m = read_version_manifest(artifact_dir)
        client = boto3_client(m["endpoint_url"], region_name=m.get("region"))
        return cls(client, m["project"], m.get("version", "latest"))
