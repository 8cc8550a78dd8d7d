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
