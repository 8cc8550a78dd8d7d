"""FakeBackend: a handler function in, a DetectAnomalyResult out.

For tests that isolate the service from model code, and for demos. Decoding and the
size rules are the real ones (``lvkit.images``); only the model is a function of the pixels.

The stored form (``FakeBackend.save``/``load``) holds a brightness rule: an image whose mean
brightness exceeds ``threshold`` is anomalous, and (segmentation) its pixels brighter than
``threshold`` are the mask, labelled ``label``. Not emulated: anything learned.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.backends import read_version_manifest, write_version_manifest
from lvkit.errors import ValidationException
from lvkit.images import DEFAULT_MAX_BYTES, decode_image
from lvkit.segmentation import build_result

if TYPE_CHECKING:
    import numpy.typing as npt

    from lvkit.shapes import ContentType, DetectAnomalyResult

__all__ = ["FakeBackend", "brightness_handler"]

Handler = Callable[["npt.NDArray[np.uint8]"], "DetectAnomalyResult"]


def brightness_handler(*, threshold: float = 128.0, segmentation: bool = False,
                       label: str = "anomaly", color: str = "#FF0000") -> Handler:
    """A handler: anomalous when the mean brightness exceeds ``threshold``.

    Confidence rises from 0.5 at the threshold to 1 at 0 or 255.
    """

    def handle(rgb: npt.NDArray[np.uint8]) -> DetectAnomalyResult:
        gray = rgb.mean(axis=2)
        mean = float(gray.mean())
        is_anomalous = mean > threshold
        span = (255.0 - threshold) if is_anomalous else threshold
        confidence = 0.5 + 0.5 * min(1.0, abs(mean - threshold) / max(span, 1e-9))
        label_map = (gray > threshold).astype(np.int64) if segmentation else None
        return build_result(is_anomalous, confidence, label_map, [label], [color])

    return handle


class FakeBackend:
    """A backend whose model is ``handler(rgb) -> DetectAnomalyResult``.

    Parameters
    ----------
    handler : callable
        Takes the decoded RGB uint8 (H, W, 3) image.
    image_size : (width, height) or None
        When given, images of another size are refused as a real model would refuse them.
    max_bytes : int
        The request body limit.
    """

    def __init__(self, handler: Handler, *, image_size: tuple[int, int] | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.handler = handler
        self.image_size = image_size
        self.max_bytes = max_bytes

    def detect(self, body: bytes, content_type: ContentType) -> DetectAnomalyResult:
        rgb = decode_image(body, content_type, max_bytes=self.max_bytes)
        if self.image_size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(self.image_size):
            w, h = self.image_size
            raise ValidationException(
                f"the image is {rgb.shape[1]}x{rgb.shape[0]} pixels but the model was trained on "
                f"{w}x{h} images"
            )
        return self.handler(rgb)

    @staticmethod
    def save(artifact_dir: Path, *, threshold: float = 128.0, segmentation: bool = False,
             image_size: tuple[int, int] | None = None, label: str = "anomaly", color: str = "#FF0000") -> None:
        """Write a brightness-rule model version into ``artifact_dir``."""
        write_version_manifest(artifact_dir, {
            "backend": "fake", "threshold": threshold, "segmentation": segmentation,
            "image_size": list(image_size) if image_size else None, "label": label, "color": color,
        })

    @classmethod
    def load(cls, artifact_dir: Path, **options: Any) -> FakeBackend:
        m = read_version_manifest(artifact_dir)
        handler = brightness_handler(threshold=m["threshold"], segmentation=m["segmentation"],
                                     label=m["label"], color=m["color"])
        size = tuple(m["image_size"]) if m.get("image_size") else None
        return cls(handler, image_size=size, max_bytes=options.get("max_bytes", DEFAULT_MAX_BYTES))
