"""The backend contract: one method, ``detect(body, content_type) -> DetectAnomalyResult``.

A backend answers DetectAnomalies for one model. A backend that can run several images at
once also has ``detect_many`` (:class:`BatchBackend`); a hosted model's workers use it to
batch concurrent requests (``lvkit.hosting``) and call ``detect`` one by one otherwise.
Backends are found by name in
:data:`BACKENDS`; each entry loads a model version from its artifact folder
(``load(artifact_dir, device=...)``). The conformance suite in
``tests/unit/backends/test_conformance.py`` runs against every registered backend.

Heavy dependencies (torch, anomalib, boto3) are imported inside the backend modules that
need them, not here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from lvkit.shapes import ContentType, DetectAnomalyResult

__all__ = ["BACKENDS", "Backend", "BatchBackend", "RawBackend", "get_backend", "load_backend", "read_version_manifest",
           "write_version_manifest"]

#: the file in every artifact folder that names its backend and options (a model version's
#: manifest; not a dataset's Ground Truth manifest, :func:`lvkit.datasets.write_manifest`)
MANIFEST = "lvkit.json"


@runtime_checkable
class Backend(Protocol):
    """Anything that answers DetectAnomalies for one model."""

    def detect(self, body: bytes, content_type: ContentType) -> DetectAnomalyResult:
        """Validate and decode ``body``, run the model, return the result.

        Raises ``ValidationException`` for a bad image, ``InternalServerException`` when the
        model fails.
        """
        ...


@runtime_checkable
class BatchBackend(Backend, Protocol):
    """A backend that also runs a batch of requests at once (optional; see ``lvkit.hosting``)."""

    def detect_many(self, items: Sequence[tuple[bytes, ContentType]]) -> list[DetectAnomalyResult | Exception]:
        """One result per ``(body, content_type)``, in order; a bad image gives its exception in place.

        Must agree with ``detect`` image by image: batching is an optimisation, never a
        change of answer. An exception raised by the call itself fails the whole batch.
        """
        ...


@runtime_checkable
class RawBackend(Backend, Protocol):
    """A backend whose answer can be taken in its three steps, keeping the raw score and anomaly
    map (``lvkit.eval.run(raw=True)``, heat maps in ``lvkit detect``); the anomalib backend is one.

    ``detect(body, ct)`` must equal ``result(rgb, scores[0], maps[0])`` where ``rgb`` is the
    decoded image (after ``check_size``) and ``scores, maps = raw(rgb[None])``.
    """

    def raw(self, batch: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Raw anomaly scores (B,) and anomaly maps (B, H, W) of decoded RGB images (B, H, W, 3)."""
        ...

    def check_size(self, rgb: npt.NDArray[np.uint8]) -> None:
        """ValidationException for an image size the model does not accept."""
        ...

    def result(
        self, rgb: npt.NDArray[np.uint8], score: float, amap: npt.NDArray[np.floating[Any]]
    ) -> DetectAnomalyResult:
        """The DetectAnomalyResult of one decoded image from its raw score and map."""
        ...


Loader = Callable[..., Backend]


def _load_fake(artifact_dir: Path, **options: Any) -> Backend:
    from lvkit.backends.fake import FakeBackend

    return FakeBackend.load(artifact_dir, **options)


def _load_anomalib(artifact_dir: Path, **options: Any) -> Backend:
    from lvkit.backends.anomalib import AnomalibBackend

    return AnomalibBackend.load(artifact_dir, **options)


def _load_openvino(artifact_dir: Path, **options: Any) -> Backend:
    from lvkit.backends.anomalib.exported import OpenVINOBackend

    return OpenVINOBackend.load(artifact_dir, **options)


def _load_onnx(artifact_dir: Path, **options: Any) -> Backend:
    from lvkit.backends.anomalib.exported import OnnxBackend

    return OnnxBackend.load(artifact_dir, **options)


def _load_replay(artifact_dir: Path, **options: Any) -> Backend:
    from lvkit.backends.replay import ReplayBackend

    return ReplayBackend.load(artifact_dir, **options)


def _load_service(artifact_dir: Path, **options: Any) -> Backend:
    from lvkit.backends.service import ServiceBackend

    return ServiceBackend.load(artifact_dir, **options)


#: registry: backend name -> loader of a model version's artifact folder
BACKENDS: dict[str, Loader] = {
    "anomalib": _load_anomalib,
    "fake": _load_fake,
    "onnx": _load_onnx,
    "openvino": _load_openvino,
    "replay": _load_replay,
    "service": _load_service,
}


def get_backend(name: str) -> Loader:
    """The loader registered as ``name``; a clear error listing the valid names otherwise."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(BACKENDS)}") from None


def read_version_manifest(artifact_dir: Path) -> dict[str, Any]:
    """The ``lvkit.json`` of a model version's artifact folder (its backend and options)."""
    return dict(json.loads((Path(artifact_dir) / MANIFEST).read_text()))


def write_version_manifest(artifact_dir: Path, manifest: dict[str, Any]) -> None:
    """Write a model version's ``lvkit.json`` (the folder itself is made atomic by the store)."""
    (Path(artifact_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))




def load_backend(artifact_dir: Path, **options: Any) -> Backend:
    """Load the model version in ``artifact_dir`` with the backend its manifest names."""
    manifest = read_version_manifest(artifact_dir)
    return get_backend(manifest["backend"])(Path(artifact_dir), **options)
