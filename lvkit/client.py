"""``lvkit.client()``: boto3's ``lookoutvision`` client, in process.

Method names, keyword arguments, return dicts and errors are those of
``boto3.client("lookoutvision")``: responses carry ``ResponseMetadata``; errors are
``botocore.exceptions.ClientError`` subclasses, reachable as ``client.exceptions.X``; a
missing or unknown parameter raises botocore's ``ParamValidationError`` before anything
runs, as boto3 does. Field constraints (lengths, patterns, ranges) answer
ValidationException, as the service did. The parameters each method takes and the
``HTTPStatusCode`` it reports come from the service description (:mod:`lvkit.operations`).

Differences from the remote service, by design: StartModel and StopModel return once the
transition is complete (``wait=False`` gives the service's asynchronous behaviour); the
``Status`` they return is still the one the service answered (STARTING_HOSTING,
STOPPING_HOSTING). CreateDataset, UpdateDatasetEntries, CreateModel and
StartModelPackagingJob likewise return once their work is done, answering what the service
answered. Members nested in a structure (``Configuration.Greengrass``, ``OutputConfig``) are
checked by the service: a missing or unknown one is a ValidationException, not botocore's
``ParamValidationError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, ParamValidationError

from lvkit.catalog import source_from_wire
from lvkit.errors import API_ERRORS, LookoutVisionError
from lvkit.greengrass import GreengrassConfiguration
from lvkit.operations import operation as operation_of
from lvkit.operations import paginated
from lvkit.service import LookoutVisionService
from lvkit.shapes import tags_from_wire, tags_to_wire
from lvkit.training_jobs import output_from_wire

if TYPE_CHECKING:
    import os

    from lvkit.store import Store

__all__ = ["LookoutVisionClient", "client"]


def _check_params(operation: str, kwargs: dict[str, Any]) -> None:
    """botocore's parameter check, against the operation's members in the service description."""
    op = operation_of(operation)
    report = [f'Missing required parameter in input: "{p}"' for p in op.required if p not in kwargs]
    report += [
        f'Unknown parameter in input: "{p}", must be one of: {", ".join(op.members)}'
        for p in kwargs if p not in op.members
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
            "RequestId": str(uuid.uuid4()), "HTTPStatusCode": operation_of(operation).status,
            "HTTPHeaders": {}, "RetryAttempts": 0,
        }
        return out

    def can_paginate(self, operation_name: str) -> bool:
        return any(operation_of(name).method_name == operation_name for name in paginated())

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

    # -- datasets ---------------------------------------------------------------------------
    def create_dataset(self, **kw: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            source, version = source_from_wire(kw.get("DatasetSource"))
            d = self.service.create_dataset(kw["ProjectName"], kw["DatasetType"], source, version_id=version,
                                            client_token=kw.get("ClientToken"))
            return {"DatasetMetadata": d.to_wire(metadata=True)}

        return self._call("CreateDataset", kw, run)

    def describe_dataset(self, **kw: Any) -> dict[str, Any]:
        return self._call("DescribeDataset", kw, lambda: {"DatasetDescription": self.service.describe_dataset(
            kw["ProjectName"], kw["DatasetType"]).to_wire()})

    def list_dataset_entries(self, **kw: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            entries, token = self.service.list_dataset_entries(
                kw["ProjectName"], kw["DatasetType"], labeled=kw.get("Labeled"), anomaly_class=kw.get("AnomalyClass"),
                before=kw.get("BeforeCreationDate"), after=kw.get("AfterCreationDate"),
                source_ref_contains=kw.get("SourceRefContains"), next_token=kw.get("NextToken"),
                max_results=kw.get("MaxResults"))
            return {"DatasetEntries": entries} | ({"NextToken": token} if token else {})

        return self._call("ListDatasetEntries", kw, run)

    def update_dataset_entries(self, **kw: Any) -> dict[str, Any]:
        changes = kw.get("Changes")
        if hasattr(changes, "read"):  # boto3 accepts a file object as a blob
            kw = {**kw, "Changes": changes.read()}  # type: ignore[union-attr]  # checked by hasattr
        if isinstance(kw.get("Changes"), str):  # and a str, which it encodes
            kw = {**kw, "Changes": kw["Changes"].encode()}
        return self._call("UpdateDatasetEntries", kw, lambda: {"Status": self.service.update_dataset_entries(
            kw["ProjectName"], kw["DatasetType"], kw["Changes"], client_token=kw.get("ClientToken")).value})

    def delete_dataset(self, **kw: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            self.service.delete_dataset(kw["ProjectName"], kw["DatasetType"], client_token=kw.get("ClientToken"))
            return {}

        return self._call("DeleteDataset", kw, run)

    # -- models -----------------------------------------------------------------------------
    def create_model(self, **kw: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            m = self.service.create_model(kw["ProjectName"], output=output_from_wire(kw["OutputConfig"]),
                                          description=kw.get("Description"), kms_key_id=kw.get("KmsKeyId"),
                                          tags=tags_from_wire(kw["Tags"]) if "Tags" in kw else None,
                                          client_token=kw.get("ClientToken"))
            return {"ModelMetadata": m.to_wire(metadata=True)}

        return self._call("CreateModel", kw, run)

    def delete_model(self, **kw: Any) -> dict[str, Any]:
        return self._call("DeleteModel", kw, lambda: {"ModelArn": self.service.delete_model(
            kw["ProjectName"], kw["ModelVersion"], client_token=kw.get("ClientToken"))})

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
            max_inference_units=kw.get("MaxInferenceUnits"), client_token=kw.get("ClientToken")).value})

    def stop_model(self, **kw: Any) -> dict[str, Any]:
        return self._call("StopModel", kw, lambda: {"Status": self.service.stop_model(
            kw["ProjectName"], kw["ModelVersion"], client_token=kw.get("ClientToken")).value})

    # -- model packaging jobs -----------------------------------------------------------------
    def start_model_packaging_job(self, **kw: Any) -> dict[str, Any]:
        return self._call("StartModelPackagingJob", kw, lambda: {"JobName": self.service.start_model_packaging_job(
            kw["ProjectName"], kw["ModelVersion"], GreengrassConfiguration.from_wire(kw["Configuration"]),
            job_name=kw.get("JobName"), description=kw.get("Description"), client_token=kw.get("ClientToken"))})

    def describe_model_packaging_job(self, **kw: Any) -> dict[str, Any]:
        return self._call("DescribeModelPackagingJob", kw, lambda: {
            "ModelPackagingDescription": self.service.describe_model_packaging_job(
                kw["ProjectName"], kw["JobName"]).to_wire()})

    def list_model_packaging_jobs(self, **kw: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            page, token = self.service.list_model_packaging_jobs(kw["ProjectName"], next_token=kw.get("NextToken"),
                                                                 max_results=kw.get("MaxResults"))
            out: dict[str, Any] = {"ModelPackagingJobs": [j.to_wire(metadata=True) for j in page]}
            return out | ({"NextToken": token} if token else {})

        return self._call("ListModelPackagingJobs", kw, run)

    # -- lvkit extensions (not operations of the service) ---------------------------------------
    def attach_calibration(self, *, ProjectName: str, ModelVersion: str,  # noqa: N803 - boto3's style
                           Calibration: dict[str, Any] | None) -> dict[str, Any]:
        """An lvkit extension: serve the version through a recalibrator (``lvkit.eval``
        ``to_dict()``), or detach it with ``Calibration=None``; returns the new
        ``ModelDescription`` (its Performance is the one at the resulting operating point).

        Errors are the service's (``client.exceptions.ValidationException`` for a dict lvkit
        cannot rebuild). See :meth:`lvkit.service.LookoutVisionService.attach_calibration`.
        """
        try:
            self.service.attach_calibration(ProjectName, ModelVersion, Calibration)
            described = self.service.describe_model(ProjectName, ModelVersion)
        except LookoutVisionError as exc:
            raise exc.with_operation("AttachCalibration") from exc.__cause__
        return {"ModelDescription": described.to_wire()}

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
        return self._call("ListTagsForResource", kw, lambda: {
            "Tags": tags_to_wire(self.service.list_tags_for_resource(kw["ResourceArn"]))})

    def untag_resource(self, **kw: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            self.service.untag_resource(kw["ResourceArn"], list(kw["TagKeys"]))
            return {}

        return self._call("UntagResource", kw, run)


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
