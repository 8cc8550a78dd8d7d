"""Frozen records for the API shapes, and their wire forms.

The only place (with ``lvkit.server``) where the service's PascalCase keys appear.
``to_wire()`` returns what boto3 returns to its caller: mask PNG bytes as ``bytes``;
base64 appears only when the server writes JSON text. ``from_wire()`` takes that form back
(it also accepts a base64 ``str`` mask, as found in JSON text).

Imports only ``lvkit.errors``.
"""

from __future__ import annotations

import base64
import enum
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lvkit.errors import ValidationException

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10: what 3.11's enum.StrEnum does for lvkit's use
    class StrEnum(str, enum.Enum):
        """Members are their string values (``str()``, ``format()``, ``==``, JSON)."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str(self.value).__format__(spec)


__all__ = [
    "Anomaly",
    "ContentType",
    "DatasetDescription",
    "DatasetStatus",
    "anomaly_name",
    "DetectAnomalyResult",
    "ModelDescription",
    "ModelPerformance",
    "ModelPackagingJob",
    "ModelStatus",
    "PackagingJobStatus",
    "ProjectDescription",
    "CONTENT_TYPES",
    "SUFFIX_TYPES",
    "BACKGROUND",
    "BACKGROUND_COLOR",
    "tags_from_wire",
    "tags_to_wire",
]

ContentType = Literal["image/png", "image/jpeg"]
CONTENT_TYPES: tuple[str, ...] = ("image/png", "image/jpeg")
#: the ContentType of an image file, by its lower-case suffix
SUFFIX_TYPES: dict[str, ContentType] = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

#: the first entry of ``Anomalies``, inserted by the service
BACKGROUND = "background"
BACKGROUND_COLOR = "#FFFFFF"


class ModelStatus(StrEnum):
    """A model version's ``Status`` (the API's ModelStatus), in the description's order.

    Members are ``str``: ``ModelStatus.HOSTED == "HOSTED"``, and they serialise (JSON, f-strings,
    ``str()``) as the bare name. StartModel and StopModel answer one of the ModelHostingStatus
    subset (STARTING_HOSTING, HOSTED, HOSTING_FAILED, STOPPING_HOSTING, SYSTEM_UPDATING).

    >>> ModelStatus("HOSTED") is ModelStatus.HOSTED, f"{ModelStatus.TRAINED}"
    (True, 'TRAINED')
    """

    TRAINING = "TRAINING"
    TRAINED = "TRAINED"
    TRAINING_FAILED = "TRAINING_FAILED"
    STARTING_HOSTING = "STARTING_HOSTING"
    HOSTED = "HOSTED"
    HOSTING_FAILED = "HOSTING_FAILED"
    STOPPING_HOSTING = "STOPPING_HOSTING"
    SYSTEM_UPDATING = "SYSTEM_UPDATING"
    DELETING = "DELETING"


class DatasetStatus(StrEnum):
    """A dataset's ``Status`` (the API's DatasetStatus), in the description's order.

    lvkit uses CREATE_IN_PROGRESS/COMPLETE/FAILED and UPDATE_IN_PROGRESS/COMPLETE/
    FAILED_ROLLBACK_COMPLETE (an update is applied in one transaction, so its rollback never
    shows as in progress); DeleteDataset removes the dataset before it answers, so the
    DELETE_* statuses are never seen.
    """

    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    CREATE_COMPLETE = "CREATE_COMPLETE"
    CREATE_FAILED = "CREATE_FAILED"
    UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"
    UPDATE_COMPLETE = "UPDATE_COMPLETE"
    UPDATE_FAILED_ROLLBACK_IN_PROGRESS = "UPDATE_FAILED_ROLLBACK_IN_PROGRESS"
    UPDATE_FAILED_ROLLBACK_COMPLETE = "UPDATE_FAILED_ROLLBACK_COMPLETE"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    DELETE_COMPLETE = "DELETE_COMPLETE"
    DELETE_FAILED = "DELETE_FAILED"


class PackagingJobStatus(StrEnum):
    """A model packaging job's ``Status`` (the API's ModelPackagingJobStatus), in the description's order.

    >>> PackagingJobStatus("RUNNING") is PackagingJobStatus.RUNNING, f"{PackagingJobStatus.SUCCEEDED}"
    (True, 'SUCCEEDED')
    """

    CREATED = "CREATED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class ModelPackagingJob:
    """``ModelPackagingDescription`` / ``ModelPackagingJobMetadata`` of one model packaging job.

    ``configuration`` and ``output_details`` are already in wire form (the API's
    ModelPackagingConfiguration and ModelPackagingOutputDetails, :mod:`lvkit.packaging`);
    ``package_uri`` (where the package was written) is lvkit's own and never on the wire.
    """

    job_name: str
    project_name: str
    model_version: str
    creation_timestamp: float
    last_updated_timestamp: float
    status: PackagingJobStatus
    status_message: str
    packaging_method: str
    configuration: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    output_details: dict[str, Any] | None = None
    package_uri: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", PackagingJobStatus(self.status))

    def to_wire(self, *, metadata: bool = False) -> dict[str, Any]:
        """``ModelPackagingDescription`` (default) or the ``ModelPackagingJobMetadata`` of ListModelPackagingJobs.

        >>> job = ModelPackagingJob("j", "p", "1", 1.0, 2.0, "RUNNING", "packaging", "lvkit")
        >>> job.to_wire(metadata=True)["Status"], "ModelPackagingConfiguration" in job.to_wire(metadata=True)
        ('RUNNING', False)
        """
        out: dict[str, Any] = {"JobName": self.job_name, "ProjectName": self.project_name,
                               "ModelVersion": self.model_version}
        if not metadata:
            out["ModelPackagingConfiguration"] = self.configuration
        if self.description is not None:
            out["ModelPackagingJobDescription"] = self.description
        out["ModelPackagingMethod"] = self.packaging_method
        if not metadata and self.output_details is not None:
            out["ModelPackagingOutputDetails"] = self.output_details
        out |= {"Status": self.status.value, "StatusMessage": self.status_message,
                "CreationTimestamp": self.creation_timestamp, "LastUpdatedTimestamp": self.last_updated_timestamp}
        return out


@dataclass(frozen=True, slots=True)
class DatasetDescription:
    """``DatasetDescription`` / ``DatasetMetadata`` of a project's train or test dataset."""

    project_name: str
    dataset_type: str
    creation_timestamp: float
    last_updated_timestamp: float
    status: DatasetStatus
    status_message: str
    total: int = 0
    labeled: int = 0
    normal: int = 0
    anomaly: int = 0

    def to_wire(self, *, metadata: bool = False) -> dict[str, Any]:
        """``DatasetDescription`` (default) or the ``DatasetMetadata`` of CreateDataset and DescribeProject."""
        out: dict[str, Any] = {"DatasetType": self.dataset_type, "CreationTimestamp": self.creation_timestamp,
                               "Status": DatasetStatus(self.status).value, "StatusMessage": self.status_message}
        if metadata:
            return out
        return {"ProjectName": self.project_name, **out, "LastUpdatedTimestamp": self.last_updated_timestamp,
                "ImageStats": {"Total": self.total, "Labeled": self.labeled, "Normal": self.normal,
                               "Anomaly": self.anomaly}}


_HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")
_NAME = re.compile(r"^[a-zA-Z0-9]*$")


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One entry of ``Anomalies``: an anomaly type and the fraction of the image it covers.

    ``total_percentage_area`` is a fraction in [0, 1], despite the wire name.
    """

    name: str
    total_percentage_area: float
    color: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.name) <= 256 or not _NAME.match(self.name):
            raise ValueError(f"expected an anomaly name of 1-256 chars [a-zA-Z0-9], got {self.name!r}")
        if not 0.0 <= self.total_percentage_area <= 1.0:
            raise ValueError(f"expected TotalPercentageArea in [0, 1], got {self.total_percentage_area!r}")
        if not _HEX.match(self.color):
            raise ValueError(f"expected a colour '#RRGGBB', got {self.color!r}")

    def to_wire(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "PixelAnomaly": {"TotalPercentageArea": self.total_percentage_area, "Color": self.color},
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Anomaly:
        pixel = d.get("PixelAnomaly", {})
        return cls(d["Name"], float(pixel["TotalPercentageArea"]), pixel["Color"])


@dataclass(frozen=True, slots=True)
class DetectAnomalyResult:
    """The result of DetectAnomalies, as every backend returns it.

    Parameters
    ----------
    is_anomalous : bool
        The verdict.
    confidence : float
        Confidence in [0, 1] in the verdict (top-label), not the probability of an anomaly.
    anomalies : tuple of Anomaly or None
        Segmentation models only: ``background`` first, then one entry per anomaly type found.
    anomaly_mask : bytes or None
        Segmentation models only: an RGB PNG of the input's size.

    Examples
    --------
    >>> r = DetectAnomalyResult(is_anomalous=False, confidence=0.99)
    >>> r.to_wire()
    {'Source': {'Type': 'direct'}, 'IsAnomalous': False, 'Confidence': 0.99}
    >>> DetectAnomalyResult.from_wire(r.to_wire()) == r
    True
    """

    is_anomalous: bool
    confidence: float
    anomalies: tuple[Anomaly, ...] | None = None
    anomaly_mask: bytes | None = field(default=None, repr=False)
    source_type: str = "direct"

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"expected Confidence in [0, 1], got {self.confidence!r}")
        if (self.anomalies is None) != (self.anomaly_mask is None):
            raise ValueError("Anomalies and AnomalyMask come together (segmentation) or not at all")
        if self.anomalies is not None:
            if not self.anomalies or self.anomalies[0].name != BACKGROUND:
                raise ValueError("the first entry of Anomalies must be 'background'")
            if len({a.name for a in self.anomalies}) != len(self.anomalies):
                raise ValueError("Anomalies must hold one entry per anomaly type")
        if self.anomaly_mask is not None and not 1 <= len(self.anomaly_mask) <= 5_242_880:
            raise ValueError(f"expected an AnomalyMask of 1 to 5,242,880 bytes, got {len(self.anomaly_mask)}")

    @property
    def is_segmentation(self) -> bool:
        return self.anomalies is not None

    def to_wire(self) -> dict[str, Any]:
        """The ``DetectAnomalyResult`` member exactly as boto3 returns it (mask as bytes)."""
        out: dict[str, Any] = {
            "Source": {"Type": self.source_type},
            "IsAnomalous": self.is_anomalous,
            "Confidence": self.confidence,
        }
        if self.anomalies is not None:
            out["Anomalies"] = [a.to_wire() for a in self.anomalies]
            out["AnomalyMask"] = self.anomaly_mask
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON-text form: as :meth:`to_wire` but the mask base64-encoded."""
        out = self.to_wire()
        if self.anomaly_mask is not None:
            out["AnomalyMask"] = base64.b64encode(self.anomaly_mask).decode("ascii")
        return out

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> DetectAnomalyResult:
        """Build from boto3's form (mask bytes) or the JSON-text form (mask base64 text)."""
        mask = d.get("AnomalyMask")
        if isinstance(mask, str):
            mask = base64.b64decode(mask)
        anomalies = d.get("Anomalies")
        return cls(
            is_anomalous=bool(d["IsAnomalous"]),
            confidence=float(d["Confidence"]),
            anomalies=None if anomalies is None else tuple(Anomaly.from_wire(a) for a in anomalies),
            anomaly_mask=mask,
            source_type=d.get("Source", {}).get("Type", "direct"),
        )


@dataclass(frozen=True, slots=True)
class ModelPerformance:
    """F1 score, recall and precision of a model version on its test images."""

    f1_score: float | None = None
    recall: float | None = None
    precision: float | None = None

    def to_wire(self) -> dict[str, Any]:
        out = {"F1Score": self.f1_score, "Recall": self.recall, "Precision": self.precision}
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """``ModelDescription`` / ``ModelMetadata`` of one model version."""

    model_version: str
    model_arn: str
    creation_timestamp: float
    status: ModelStatus
    status_message: str
    description: str | None = None
    performance: ModelPerformance | None = None
    evaluation_end_timestamp: float | None = None
    min_inference_units: int | None = None
    max_inference_units: int | None = None
    kms_key_id: str | None = None
    #: ``s3://`` URIs: the OutputConfig location, and the evaluation manifest and result written there
    output_uri: str | None = None
    evaluation_manifest_uri: str | None = None
    evaluation_result_uri: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", ModelStatus(self.status))  # a bare "TRAINED" is accepted too

    def to_wire(self, *, metadata: bool = False) -> dict[str, Any]:
        """``ModelDescription`` (default) or the shorter ``ModelMetadata`` of ListModels."""
        out: dict[str, Any] = {
            "ModelVersion": self.model_version,
            "ModelArn": self.model_arn,
            "CreationTimestamp": self.creation_timestamp,
            "Status": self.status.value,
            "StatusMessage": self.status_message,
        }
        if self.description is not None:
            out["Description"] = self.description
        if self.performance is not None:
            out["Performance"] = self.performance.to_wire()
        if metadata:
            return out
        if self.evaluation_end_timestamp is not None:
            out["EvaluationEndTimestamp"] = self.evaluation_end_timestamp
        if self.min_inference_units is not None:
            out["MinInferenceUnits"] = self.min_inference_units
        if self.max_inference_units is not None:
            out["MaxInferenceUnits"] = self.max_inference_units
        if self.kms_key_id is not None:
            out["KmsKeyId"] = self.kms_key_id
        if self.output_uri is not None and (location := _s3(self.output_uri)) is not None:
            out["OutputConfig"] = {"S3Location": {"Bucket": location[0], "Prefix": location[1]}}
        for name, uri in (("EvaluationManifest", self.evaluation_manifest_uri),
                          ("EvaluationResult", self.evaluation_result_uri)):
            if uri is not None and (location := _s3(uri)) is not None:
                out[name] = {"Bucket": location[0], "Key": location[1]}
        return out


def _s3(uri: str) -> tuple[str, str] | None:
    """``s3://bucket/key`` -> (bucket, key); None for a local location (an in-process extension)."""
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


@dataclass(frozen=True, slots=True)
class ProjectDescription:
    """``ProjectDescription`` / ``ProjectMetadata``."""

    project_name: str
    project_arn: str
    creation_timestamp: float
    datasets: tuple[dict[str, Any], ...] = ()

    def to_wire(self, *, metadata: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ProjectArn": self.project_arn,
            "ProjectName": self.project_name,
            "CreationTimestamp": self.creation_timestamp,
        }
        if not metadata:
            out["Datasets"] = list(self.datasets)
        return out


def anomaly_name(label: str) -> str:
    """The Anomalies ``Name`` lvkit gives a dataset label: its ASCII letters and digits.

    >>> anomaly_name("oil_stain"), anomaly_name("__")
    ('oilstain', 'anomaly')
    """
    return re.sub(r"[^a-zA-Z0-9]", "", label)[:256] or "anomaly"


def tags_from_wire(tags: object) -> dict[str, str]:
    """``Tags`` as the API carries them, ``[{"Key": k, "Value": v}, ...]``, -> ``{k: v}``.

    ValidationException when malformed (the tag rules themselves are
    :func:`lvkit.validation.check_tags`').

    >>> tags_from_wire([{"Key": "team", "Value": "qa"}])
    {'team': 'qa'}
    """
    if not isinstance(tags, list) or not all(
            isinstance(t, dict) and set(t) == {"Key", "Value"} for t in tags):
        raise ValidationException('Tags must be a list of {"Key": ..., "Value": ...}')
    return {t["Key"]: t["Value"] for t in tags}


def tags_to_wire(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """``{k: v}`` -> ``Tags`` as the API carries them (ListTagsForResource).

    >>> tags_to_wire({"team": "qa"})
    [{'Key': 'team', 'Value': 'qa'}]
    """
    return [{"Key": k, "Value": v} for k, v in tags.items()]
