"""AnomalibBackend: a trained anomalib image model answering DetectAnomalies.

A model version's artifact folder holds the anomalib model (``model/``, see
``models.save_model``) and ``lvkit.json``: the training image size, whether other sizes
are resized, the decision (``decision.Decision``: image and pixel thresholds, confidence
slope), the anomaly labels with their colours and the region labeller. torch and anomalib are
imported when a model is loaded, not before.

Not emulated: the service's own models; edge packaging.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.backends import read_version_manifest
from lvkit.backends.anomalib.decision import Decision
from lvkit.backends.anomalib.regions import RegionLabeler
from lvkit.errors import BackendUnavailableError, ValidationException
from lvkit.images import DEFAULT_MAX_BYTES, decode_image
from lvkit.segmentation import build_result

if TYPE_CHECKING:
    import numpy.typing as npt

    from lvkit.shapes import ContentType, DetectAnomalyResult

__all__ = ["AnomalibBackend"]


def _core() -> Any:
    try:
        from lvkit.backends.anomalib import models
    except ImportError as exc:  # torch/anomalib missing
        raise BackendUnavailableError(
            f"the anomalib backend needs torch, torchvision and anomalib ({exc}); "
            "install them with: pip install torch==2.14.1 torchvision==0.29.1 'lvkit[anomalib]'"
        ) from exc
    return models


class AnomalibBackend:
    """A loaded anomalib model version.

    Parameters
    ----------
    model
        The anomalib model (post-processing disabled: raw scores and maps).
    manifest : dict
        The version's ``lvkit.json``.
    device : str
        Where the model runs.
    max_bytes : int
        Request body limit.

    A recalibrator attached to the version wraps this backend where the service loads it
    (``lvkit.backends.recalibrated``).
    """

    def __init__(
        self, model: Any, manifest: dict[str, Any], *, device: str, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.model = model
        self.manifest = manifest
        self.device = device
        self.max_bytes = max_bytes
        self.decision = Decision.from_dict(manifest["decision"])
        width, height = manifest["image_size"]
        self.image_size: tuple[int, int] = (int(width), int(height))
        self.resize = bool(manifest.get("resize", False))
        self.labels: list[str] = list(manifest.get("labels", []))
        self.colors: list[str] = list(manifest.get("colors", []))
        self.segmentation = bool(manifest.get("segmentation", False))
        self.labeler = RegionLabeler.from_dict(manifest["labeler"]) if manifest.get("labeler") else None

    @classmethod
    def load(cls, artifact_dir: Path, *, device: str = "auto", max_bytes: int = DEFAULT_MAX_BYTES,
             **_: Any) -> AnomalibBackend:
        core = _core()
        device = core.resolve_device(device)
        model = core.load_model(Path(artifact_dir) / "model", device=device)
        return cls(model, read_version_manifest(artifact_dir), device=device, max_bytes=max_bytes)

    # -- the contract -------------------------------------------------------------------------
    def detect(self, body: bytes, content_type: ContentType) -> DetectAnomalyResult:
        rgb = decode_image(body, content_type, max_bytes=self.max_bytes)
        self.check_size(rgb)
        score, amap = self.raw(rgb[None])
        return self.result(rgb, float(score[0]), amap[0])

    def detect_many(self, items: Sequence[tuple[bytes, ContentType]]) -> list[DetectAnomalyResult | Exception]:
        """Batched ``detect``: images of one size go through the model together.

        A bad image gives its ValidationException in its place; the others are unaffected.
        Scores do not depend on the batch (the models run in eval mode), so the answers are
        those of ``detect``.
        """
        out: list[DetectAnomalyResult | Exception | None] = [None] * len(items)
        decoded: dict[tuple[int, ...], list[tuple[int, npt.NDArray[np.uint8]]]] = {}
        for i, (body, content_type) in enumerate(items):
            try:
                rgb = decode_image(body, content_type, max_bytes=self.max_bytes)
                self.check_size(rgb)
            except ValidationException as exc:
                out[i] = exc
                continue
            decoded.setdefault(rgb.shape, []).append((i, rgb))
        for group in decoded.values():
            scores, maps = self.raw(np.stack([rgb for _, rgb in group]))
            for (i, rgb), score, amap in zip(group, scores, maps):
                out[i] = self.result(rgb, float(score), amap)
        return [r for r in out if r is not None]

    def check_size(self, rgb: npt.NDArray[np.uint8]) -> None:
        w, h = self.image_size
        if not self.resize and (rgb.shape[1], rgb.shape[0]) != (w, h):
            raise ValidationException(
                f"the image is {rgb.shape[1]}x{rgb.shape[0]} pixels but model was trained on {w}x{h} images "
                "(train with resize enabled to accept other sizes)"
            )

    def raw(self, batch: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Raw anomaly scores (B,) and anomaly maps (B, H, W) of decoded RGB images (B, H, W, 3)."""
        scores, maps = _core().predict_raw(self.model, batch, device=self.device)
        return scores, maps

    def result(self, rgb: npt.NDArray[np.uint8], score: float, amap: npt.NDArray[np.floating]) -> DetectAnomalyResult:
        """The DetectAnomalyResult of one image from its raw score and map."""
        is_anomalous, confidence = self.decision.verdict(score)
        label_map = None
        if self.segmentation and self.decision.pixel_threshold is not None and self.labeler is not None:
            label_map = self.labeler.label_map(rgb, amap > self.decision.pixel_threshold)
        return build_result(is_anomalous, confidence, label_map, self.labels, self.colors)
