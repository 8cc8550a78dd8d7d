"""Ground-truth masks: read binary and colour masks as per-label boolean arrays, and paint colour masks.

This module owns the pixel meaning of mask files. It imports numpy, PIL, the standard library
and ``lvkit.errors`` only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from lvkit.datasets._records import Sample, normalize_hex
from lvkit.errors import DatasetError

__all__ = ["BACKGROUND_HEX", "color_mask", "read_label_masks"]

#: the background colour of Lookout for Vision colour masks
BACKGROUND_HEX = "#ffffff"


def _rgb_code(hex_color: str) -> int:
    return int(hex_color[1:], 16)


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read mask {path}: {exc}") from exc


def read_label_masks(
    sample: Sample, *, shape: tuple[int, int] | None = None
) -> dict[str, npt.NDArray[np.bool_]]:
    """Read a sample's ground truth as one boolean mask per anomaly label.

    A binary mask (``sample.mask_colors`` empty, the MVTec and folder layouts) marks
    ``sample.defect_type`` wherever a pixel is nonzero in any channel (palette images are
    converted to RGB first, alpha is ignored). A colour mask (a manifest's ``anomaly-mask-ref``)
    is converted to RGB whatever its storage (palette ``P``, ``RGBA``, ``RGB``, grey), and each
    pixel whose colour is exactly one of ``sample.mask_colors`` belongs to that label. Every other
    colour counts as background: white (the colour map's BACKGROUND entry) and also colours that
    are not in the map at all, such as the blended pixels an anti-aliasing paint tool leaves
    along edges.

    Parameters
    ----------
    sample : Sample
        The sample whose mask to read.
    shape : tuple of (int, int), optional
        The expected ``(H, W)``. By default the image file's own size, read from its header.

    Returns
    -------
    dict of str to ndarray of shape (H, W), dtype bool
        Label -> mask. Empty for a sample without a mask (normal images, classification data).
        A colour mask gives an entry for every label of ``sample.mask_colors``, even one with no
        pixels.

    Raises
    ------
    DatasetError
        If the mask cannot be read or its size differs from ``shape`` (the image's size).

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> rgb = np.full((64, 64, 3), 255, np.uint8); rgb[10:20, 10:20] = (44, 160, 44)
    >>> Image.fromarray(rgb).save(folder / "m.png")
    >>> s = Sample(folder / "i.png", 1, "test", "scratch", folder / "m.png", (("#2ca02c", "scratch"),))
    >>> {label: int(m.sum()) for label, m in read_label_masks(s, shape=(64, 64)).items()}
    {'scratch': 100}
    """
    if sample.mask_path is None:
        return {}
    img = _open(sample.mask_path)
    if shape is None:
        shape = image_shape(sample.image_path)
    if (img.height, img.width) != tuple(shape):
        raise DatasetError(
            f"mask {sample.mask_path} is {img.width}x{img.height} but its image {sample.image_path} "
            f"is {shape[1]}x{shape[0]}: a mask must have its image's size"
        )
    if not sample.mask_colors:
        return {sample.defect_type or "anomaly": _nonzero(img)}
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint32)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    masks: dict[str, npt.NDArray[np.bool_]] = {}
    for color, label in sample.mask_colors:
        hit = codes == _rgb_code(normalize_hex(color))
        masks[label] = masks[label] | hit if label in masks else hit
    return masks


def image_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image file, read from its header; DatasetError if it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def _nonzero(img: Image.Image) -> npt.NDArray[np.bool_]:
    if img.mode in ("P", "PA"):
        img = img.convert("RGB")
    elif img.mode in ("RGBA", "LA"):
        img = img.convert(img.mode[:-1])
    arr = np.asarray(img)
    if arr.ndim == 3:
        return np.asarray(arr.any(axis=2), dtype=np.bool_)
    return np.asarray(arr != 0, dtype=np.bool_)


def color_mask(
    masks: Mapping[str, npt.NDArray[np.bool_]], colors: Mapping[str, str], shape: tuple[int, int]
) -> npt.NDArray[np.uint8]:
    """Paint per-label boolean masks as a Lookout for Vision colour mask (white background).

    Parameters
    ----------
    masks : mapping of str to ndarray of shape (H, W), dtype bool
        Label -> mask. Where masks overlap, the later label wins.
    colors : mapping of str to str
        Label -> ``#rrggbb``; must cover every label of ``masks``.
    shape : tuple of (int, int)
        ``(H, W)`` of the result.

    Returns
    -------
    ndarray of shape (H, W, 3), dtype uint8
        RGB image: white background, each label in its colour.

    Examples
    --------
    >>> m = np.zeros((2, 2), bool); m[0, 0] = True
    >>> color_mask({"hole": m}, {"hole": "#1f77b4"}, (2, 2))[:, :, 0].tolist()
    [[31, 255], [255, 255]]
    """
    out = np.full((*shape, 3), 255, dtype=np.uint8)
    for label, mask in masks.items():
        code = _rgb_code(normalize_hex(colors[label]))
        out[mask] = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
    return out


def union_mask(masks: Mapping[str, npt.NDArray[np.bool_]], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """Every label of a :func:`read_label_masks` result together, as one bool mask of ``shape``.

    Examples
    --------
    >>> a = np.zeros((2, 2), bool); a[0, 0] = True
    >>> union_mask({"hole": a, "scratch": a.T}, (2, 2)).sum()
    np.int64(1)
    """
    out = np.zeros(shape, bool)
    for m in masks.values():
        out |= m
    return out
