"""Datasets: loaders that turn folders and manifests into plain records, and the embedded benchmark.

Loaders return :class:`Sample`/:class:`Dataset` records, never framework objects (adapters to
anomalib live with its backend). Layouts: MVTec AD, ``normal/``+``anomaly/`` folders, and Lookout
for Vision manifests; :func:`load` detects which. :mod:`lvkit.datasets.synthetic` writes the
seeded texture benchmark that every loader reads.

This package imports numpy, PIL, scikit-image (data only, lazily), the standard library and
``lvkit.errors`` only. The generator's names are imported on first use, so ``python -m
lvkit.datasets.synthetic`` runs cleanly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lvkit.datasets._masks import color_mask, image_shape, read_label_masks, union_mask
from lvkit.datasets._records import PALETTE, Dataset, Sample, assign_colors
from lvkit.datasets.folder import load, load_folder, load_mvtec
from lvkit.datasets.manifest import load_manifest, write_manifest

if TYPE_CHECKING:
    from lvkit.datasets.synthetic import generate, pixel_hash

__all__ = [
    "assign_colors",
    "color_mask",
    "Dataset",
    "generate",
    "image_shape",
    "load",
    "load_folder",
    "load_manifest",
    "load_mvtec",
    "PALETTE",
    "pixel_hash",
    "read_label_masks",
    "Sample",
    "union_mask",
    "write_manifest",
]

_LAZY = {"generate", "pixel_hash"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lvkit.datasets import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
