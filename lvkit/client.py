"""``lvkit.client()``: boto3's ``lookoutvision`` client, in process.

Method names, keyword arguments, return dicts and errors are those of
``boto3.client("lookoutvision")``: responses carry ``ResponseMetadata``; errors are
``botocore.exceptions.ClientError`` subclasses, reachable as ``client.exceptions.X``; a
missing or unknown parameter raises botocore's ``ParamValidationError`` before anything
runs, as boto3 does. Field constraints (lengths, patterns, ranges) answer
ValidationException, as the service did.

Differences from the remote service, by design: StartModel and StopModel return once the
transition is complete (``wait=False`` gives the service's asynchronous behaviour); the
``Status`` they return is still the one the service answered (STARTING_HOSTING,
STOPPING_HOSTING).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, ParamValidationError

from lvkit.errors import API_ERRORS, LookoutVisionError, ValidationException
from lvkit.service import LookoutVisionService

if TYPE_CHECKING:
    import os

    from lvkit.store import Store

__all__ = ["LookoutVisionClient", "client", "tags_from_wire"]

#: operation -> (snake_case method, required params, optional params, HTTP status)
_OPERATIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], int]] = {
    "CreateProject": ("create_project", ("ProjectName",), ("ClientToken",), 200),
    "DescribeProject": ("describe_project", ("ProjectName",), (), 200),
    "ListProjects": ("list_projects", (), ("NextToken", "MaxResults"), 200),
    "DeleteProject": ("delete_project", ("ProjectName",), ("ClientToken",), 200),
    "DescribeModel": ("describe_model", ("ProjectName", "ModelVersion"), (), 200),
    "ListModels": ("list_models", ("ProjectName",), ("NextToken", "MaxResults"), 200),
    "StartModel": ("start_model", ("ProjectName", "ModelVersion", "MinInferenceUnits"),
                   ("MaxInferenceUnits", "ClientToken"), 202),
    "StopModel": ("stop_model", ("ProjectName", "ModelVersion"), ("ClientToken",), 202),
    "DetectAnomalies": ("detect_anomalies", ("ProjectName", "ModelVersion", "Body", "ContentType"), (), 200),
    "TagResource": ("tag_resource", ("ResourceArn", "Tags"), (), 200),
    "ListTagsForResource": ("list_tags_for_resource", ("ResourceArn",), (), 200),
    "UntagResource": ("untag_resource", ("ResourceArn", "TagKeys"), (), 200),
}


def _check_params(operation: str, kwargs: dict[str, Any]) -> None:
    _, required, optional, _ = _OPERATIONS[operation]
    report = [f'Missing required parameter in input: "{p}"' for p in required if p not in kwargs]
    report += [
        f'Unknown parameter in input: "{p}", must be one of: {", ".join(required + optional)}'
        for p in kwargs if p not in required + optional
    ]
    if report:
        raise ParamValidationError(report="\n".join(report))


class LookoutVisionClient:
    """boto3-shaped methods over a :class:`~lvkit.service.LookoutVisionService`."""

    def __init__(self, service: LookoutVisionService) -> None:
        self.service = service
        self.exceptions = SimpleNamespace(ClientError=ClientError, **API_ERRORS)
        self.meta = SimpleNamespace(service_model=SimpleNamespace(service_name="lookoutvision"),
                                    region_name=service.store.region)

    def _call(self, operation: str, kwargs: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        _check_params(operation, kwargs)
        try:
            out = fn()
        except LookoutVisionError as exc:
            raise exc.with_operation(operation) from exc.__cause__
        out["ResponseMetadata"] = {
            "RequestId": str(uuid.uuid4()), "HTTPStatusCode": _OPERATIONS[operation][3],
            "HTTPHeaders": {}, "RetryAttempts": 0,
        }
        return out

    def can_paginate(self, operation_name: str) -> bool:
        return operation_name in ("list_projects", "list_models")

    # -- projects ---------------------------------------------------------------------------
    def create_project(self, **kw: Any) -> dict[str, Any]:
        return self._call("CreateProject", kw, lambda: {"ProjectMetadata": self.service.create_project(
            kw["ProjectName"], client_token=kw.get("ClientToken")).to_wire(metadata=True)})

    def describe_project(self, **kw: Any) -> dict[str, Any]:
        return self._call("DescribeProject", kw, lambda: {
            "ProjectDescription": self.service.describe_project(kw["ProjectName"]).to_wire()})

    def list_projects(self, **kw: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            page, token = self.service.list_projects(next_token=kw.get("NextToken"), max_results=kw.get("MaxResults"))
            out: dict[str, Any] = {"Projects": [p.to_wire(metadata=True) for p in page]}
            return out | ({"NextToken": token} if token else {})

        return self._call("ListProjects", kw, run)

    def delete_project(self, **kw: Any) -> dict[str, Any]:
        return self._call("DeleteProject", kw, lambda: {"ProjectArn": self.service.delete_project(
            kw["ProjectName"], client_token=kw.get("ClientToken"))})

    # -- models -----------------------------------------------------------------------------
    def describe_model(self, **kw: Any) -> dict[str, Any]:
        return self._call("DescribeModel", kw, lambda: {"ModelDescription": self.service.describe_model(
            kw["ProjectName"], kw["ModelVersion"]).to_wire()})

    def list_models(self, **kw: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            page, token = self.service.list_models(kw["ProjectName"], next_token=kw.get("NextToken"),
                                                   max_results=kw.get("MaxResults"))
            out: dict[str, Any] = {"Models": [m.to_wire(metadata=True) for m in page]}
            return out | ({"NextToken": token} if token else {})

        return self._call("ListModels", kw, run)

    def start_model(self, **kw: Any) -> dict[str, Any]:
        return self._call("StartModel", kw, lambda: {"Status": self.service.start_model(
            kw["ProjectName"], kw["ModelVersion"], kw["MinInferenceUnits"],
            max_inference_units=kw.get("MaxInferenceUnits"), client_token=kw.get("ClientToken"))})

    def stop_model(self, **kw: Any) -> dict[str, Any]:
        return self._call("StopModel", kw, lambda: {"Status": self.service.stop_model(
            kw["ProjectName"], kw["ModelVersion"], client_token=kw.get("ClientToken"))})

    def detect_anomalies(self, **kw: Any) -> dict[str, Any]:
        body = kw.get("Body")
        if hasattr(body, "read"):  # boto3 accepts a file object as a blob
            kw = {**kw, "Body": body.read()}  # type: ignore[union-attr]  # checked by hasattr
        return self._call("DetectAnomalies", kw, lambda: {"DetectAnomalyResult": self.service.detect_anomalies(
            kw["ProjectName"], kw["ModelVersion"], kw["Body"], kw["ContentType"]).to_wire()})

    # -- tags -------------------------------------------------------------------------------
    def tag_resource(self, **kw: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            self.service.tag_resource(kw["ResourceArn"], tags_from_wire(kw["Tags"]))
            return {}

        return self._call("TagResource", kw, run)

    def list_tags_for_resource(self, **kw: Any) -> dict[str, Any]:
        return self._call("ListTagsForResource", kw, lambda: {"Tags": [
            {"Key": k, "Value": v} for k, v in self.service.list_tags_for_resource(kw["ResourceArn"]).items()]})

    def untag_resource(self, **kw: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            self.service.untag_resource(kw["ResourceArn"], list(kw["TagKeys"]))
            return {}

        return self._call("UntagResource", kw, run)


def tags_from_wire(tags: object) -> dict[str, str]:
    """``[{"Key": k, "Value": v}, ...]`` -> ``{k: v}``; ValidationException when malformed."""
    if not isinstance(tags, list) or not all(
            isinstance(t, dict) and set(t) == {"Key", "Value"} for t in tags):
        raise ValidationException('Tags must be a list of {"Key": ..., "Value": ...}')
    return {t["Key"]: t["Value"] for t in tags}


def client(
    home: str | os.PathLike[str] | Store | None = None,
    *,
    device: str = "auto",
    max_bytes: int | None = None,
    wait: bool = True,
) -> LookoutVisionClient:
    """An in-process client with the methods of ``boto3.client("lookoutvision")``.

    Parameters
    ----------
    home : path-like or Store, optional
        Where state lives; default ``$LVKIT_HOME`` or ``~/.lvkit``.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where anomalib models run.
    max_bytes : int, optional
        DetectAnomalies body limit (default 8 MiB).
    wait : bool, default True
        StartModel/StopModel return once hosting has started/stopped.

    Examples
    --------
    >>> import tempfile, lvkit
    >>> lv = lvkit.client(tempfile.mkdtemp())
    >>> lv.create_project(ProjectName="demo")["ProjectMetadata"]["ProjectName"]
    'demo'
    >>> try:
    ...     lv.describe_model(ProjectName="demo", ModelVersion="1")
    ... except lv.exceptions.ResourceNotFoundException as e:
    ...     print(e.response["Error"]["Code"], e.response["ResourceType"])
    ResourceNotFoundException MODEL
    """
    options: dict[str, Any] = {"device": device, "wait": wait}
    if max_bytes is not None:
        options["max_bytes"] = max_bytes
    return LookoutVisionClient(LookoutVisionService(home, **options))
