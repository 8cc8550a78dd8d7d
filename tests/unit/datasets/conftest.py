"""Fixtures for the dataset tests: one tiny generated benchmark per session, PNG helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lvkit.datasets.synthetic import generate

#: the small benchmark every loader test reads (and whose pixel hash is pinned)
SMALL: dict[str, Any] = {
    "n_train": 4,
    "n_test_good": 2,
    "n_test_defect_per_type": 2,
    "image_size": 64,
    "seed": 0,
}


@pytest.fixture(scope="session")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All three categories at the SMALL settings; treat as read-only."""
    return generate(tmp_path_factory.mktemp("bench"), **SMALL)


def save_png(path: Path, pixels: np.ndarray, *, mode: str | None = None) -> Path:
    """Write ``pixels`` as an image file (PNG unless the suffix says JPEG), optionally converted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels)
    if mode is not None:
        img = img.convert(mode)
    img.save(path)
    return path


def gray(value: int = 128, size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def write_lines(path: Path, records: list[Any]) -> Path:
    """Write a manifest: dicts are JSON-encoded, strings written as they are."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path
