"""lvkit: Amazon Lookout for Vision's DetectAnomalies contract on open anomalib models.

``lvkit.client()`` has the methods of ``boto3.client("lookoutvision")``; ``lvkit.train``
makes model versions; ``lvkit.datasets`` loads and generates datasets; ``lvkit.eval``
measures any backend; ``lvkit serve`` (``lvkit.server``) answers the same API over HTTP,
``lvkit.serving()`` runs it in the background, and ``lvkit.boto3_client()`` is today's boto3
client for it. Heavy dependencies (torch, anomalib, boto3, the HTTP server) load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lvkit import datasets
from lvkit.backends import BACKENDS, Backend, BatchBackend, get_backend
from lvkit.boto import boto3_client, register_boto3
from lvkit.client import LookoutVisionClient, client
from lvkit.errors import (
    AccessDeniedException,
    BackendUnavailableError,
    ConflictException,
    DatasetError,
    FailedImagesWarning,
    InternalServerException,
    LookoutVisionError,
    LvkitError,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    StoreNotWritableError,
    ThrottlingException,
    UndefinedMetricWarning,
    ValidationException,
)
from lvkit.hosting import HostingOptions
from lvkit.service import LookoutVisionService
from lvkit.shapes import Anomaly, DetectAnomalyResult, ModelDescription, ModelStatus, ProjectDescription
from lvkit.store import Store
from lvkit.training import train

if TYPE_CHECKING:
    from lvkit.server.background import BackgroundServer, serving

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "AccessDeniedException",
    "Anomaly",
    "Backend",
    "BACKENDS",
    "BackendUnavailableError",
    "BackgroundServer",
    "BatchBackend",
    "boto3_client",
    "client",
    "ConflictException",
    "DatasetError",
    "datasets",
    "DetectAnomalyResult",
    "FailedImagesWarning",
    "get_backend",
    "HostingOptions",
    "InternalServerException",
    "LookoutVisionClient",
    "LookoutVisionError",
    "LookoutVisionService",
    "LvkitError",
    "ModelDescription",
    "ModelStatus",
    "ProjectDescription",
    "register_boto3",
    "ResourceNotFoundException",
    "ServiceQuotaExceededException",
    "serving",
    "Store",
    "StoreNotWritableError",
    "ThrottlingException",
    "train",
    "UndefinedMetricWarning",
    "ValidationException",
]

#: names that load ``lvkit.server`` (Starlette, the service) on first use, not with ``import lvkit``
_LAZY = {"BackgroundServer", "serving"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lvkit.server import background

        return getattr(background, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
