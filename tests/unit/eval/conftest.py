"""Shared synthetic data for the lvkit.eval tests (small, seeded)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def scored(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """200 labels and overlapping scores, with ties (rounded to 2 decimals)."""
    y = rng.random(200) < 0.4
    s = np.round(np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1), 2)
    return y, s


def blob_masks(rng: np.random.Generator, n: int = 6, size: int = 32) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Masks with 0-3 rectangular regions each and noisy float32-representable maps."""
    masks, maps = [], []
    for i in range(n):
        m = np.zeros((size, size), bool)
        for _ in range(i % 4):
            r, c = rng.integers(0, size - 6, 2)
            h, w = rng.integers(2, 7, 2)
            m[r : r + h, c : c + w] = True
        amap = rng.normal(0.0, 1.0, (size, size)) + 1.5 * m
        masks.append(m)
        maps.append(amap.astype(np.float32).astype(np.float64))
    return masks, maps


class RawFake:
    """A backend with the anomalib backend's raw interface: map = brightness / 255, score = its mean.

    ``raw``, ``check_size`` and ``result`` as ``lvkit.backends.anomalib.AnomalibBackend`` has
    them, so ``run(raw=True)`` and ``throughput`` take their instrumented paths without torch.
    """

    def __init__(self, *, threshold: float = 0.5, size: tuple[int, int] = (64, 64)) -> None:
        self.threshold, self.size, self.device, self.calls = threshold, size, "cpu", 0

    def detect(self, body, content_type):
        from lvkit.images import decode_image

        rgb = decode_image(body, content_type)
        self.check_size(rgb)
        score, amap = self.raw(rgb[None])
        return self.result(rgb, float(score[0]), amap[0])

    def check_size(self, rgb) -> None:
        from lvkit.errors import ValidationException

        if (rgb.shape[1], rgb.shape[0]) != self.size:
            raise ValidationException(f"expected a {self.size} image")

    def raw(self, batch):
        self.calls += 1
        maps = (batch.mean(axis=3) / 255.0).astype(np.float32)
        return maps.mean(axis=(1, 2)).astype(np.float32), maps

    def result(self, rgb, score, amap):
        from lvkit.segmentation import build_result

        anomalous = score > self.threshold
        return build_result(anomalous, 0.5 + abs(score - self.threshold) / 2, (amap > self.threshold).astype(np.int64),
                            ["anomaly"], ["#FF0000"])


@pytest.fixture
def raw_fake() -> RawFake:
    return RawFake()


@pytest.fixture(scope="session")
def brick(tmp_path_factory: pytest.TempPathFactory):
    """A tiny generated category (64x64): 4 normal and 2 per defect type in test; read-only."""
    import lvkit

    root = lvkit.datasets.generate(tmp_path_factory.mktemp("evalbench"), categories=("brick",), n_train=2,
                                   n_test_good=4, n_test_defect_per_type=2, image_size=64)
    return lvkit.datasets.load(root / "brick").split("test")
