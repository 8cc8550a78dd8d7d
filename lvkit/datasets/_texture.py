"""Source textures for the synthetic benchmark: load, resize and tint them in exact integer arithmetic.

The textures are scikit-image's bundled CC0 photographs (``skimage.data.brick``, ``gravel``,
``grass``; 512x512 grey uint8). Resizing is linear interpolation in integers and tinting an
integer colour ramp, so the pixels do not depend on any library's float rounding.

This module imports numpy, scikit-image (its data only, inside :func:`source`) and the
standard library only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["CATEGORIES", "check_category", "resize", "SIDE", "source", "SOURCE_SHA256", "tint"]

#: category -> (dark RGB, light RGB): grey 0 maps to the first, 255 to the second
CATEGORIES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "brick": ((56, 28, 24), (228, 140, 104)),
    "gravel": ((36, 34, 30), (224, 214, 196)),
    "grass": ((24, 40, 20), (156, 216, 96)),
}
#: sha256 of each source texture's uint8 pixels (scikit-image 0.26); a change means drift
SOURCE_SHA256: dict[str, str] = {
    "brick": "664a145c5253f0d66db1a12776785f0ea35a44cc7447ffc933f6d6118dc58643",
    "gravel": "3d51ad45f789cd8b98534b7af6bce774e499ead45421135afd757358c7230009",
    "grass": "b18dae4c68bf850a7a7b28a29d1846c76be890665117b57fd125fe29c4d4ede6",
}
#: the side of every source texture, in pixels
SIDE = 512


def check_category(category: str) -> None:
    """Raise ``ValueError`` unless ``category`` is one of :data:`CATEGORIES`."""
    if category not in CATEGORIES:
        raise ValueError(f"expected category one of {sorted(CATEGORIES)}, got {category!r}")


def source(category: str) -> npt.NDArray[np.uint8]:
    """Return a category's grey source texture (512x512 uint8) from ``skimage.data``.

    Examples
    --------
    >>> source("brick").shape
    (512, 512)
    """
    check_category(category)
    import skimage.data  # scikit-image data only; imported here to keep module import light

    loaders: dict[str, Callable[[], npt.ArrayLike]] = {
        "brick": skimage.data.brick,
        "gravel": skimage.data.gravel,
        "grass": skimage.data.grass,
    }
    image = np.asarray(loaders[category](), dtype=np.uint8)
    if image.shape != (SIDE, SIDE):
        raise RuntimeError(f"skimage.data.{category}() is {image.shape}, expected ({SIDE}, {SIDE})")
    return image


def _resize_axis(image: npt.NDArray[np.int64], size: int, axis: int) -> tuple[npt.NDArray[np.int64], int]:
    """Linear resampling along one axis in integers; returns values scaled by the denominator."""
    n = image.shape[axis]
    den = 2 * size
    num = (2 * np.arange(size, dtype=np.int64) + 1) * n - size  # source coordinate * den
    low = np.floor_divide(num, den)
    frac = num - low * den
    i0, i1 = np.clip(low, 0, n - 1), np.clip(low + 1, 0, n - 1)
    shape = [1, 1]
    shape[axis] = size
    w1 = frac.reshape(shape)
    out = np.take(image, i0, axis=axis) * (den - w1) + np.take(image, i1, axis=axis) * w1
    return out, den


def resize(gray: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.uint8]:
    """Resize a square grey image to ``size`` x ``size`` by linear interpolation in integers.

    Output pixel ``i`` samples source coordinate ``(i + 1/2) * n / size - 1/2`` (pixel centres
    aligned, edges clamped), with weights kept as exact fractions and the result rounded half
    up. Same size returns the input unchanged; halving averages 2x2 blocks.

    Examples
    --------
    >>> resize(np.array([[0, 10], [20, 30]], np.uint8), 1).tolist()
    [[15]]
    >>> resize(np.array([[0, 100], [100, 200]], np.uint8), 4)[0].tolist()
    [0, 25, 75, 100]
    """
    if gray.shape[0] == size:
        return gray
    rows, den_y = _resize_axis(gray.astype(np.int64), size, 0)
    both, den_x = _resize_axis(rows, size, 1)
    den = den_y * den_x
    return ((both + den // 2) // den).astype(np.uint8)


def tint(gray: npt.NDArray[np.uint8], category: str) -> npt.NDArray[np.uint8]:
    """Map a grey image to RGB along the category's colour ramp (integer arithmetic).

    Grey 0 becomes the ramp's dark colour and 255 its light colour, so every channel stays
    within the ramp (all ramps lie inside ``_defects.CHANNEL_RANGE``).

    Examples
    --------
    >>> tint(np.array([[0, 255]], np.uint8), "grass").tolist()
    [[[24, 40, 20], [156, 216, 96]]]
    """
    check_category(category)
    dark, light = (np.array(c, dtype=np.int64) for c in CATEGORIES[category])
    rgb = dark + (light - dark) * gray.astype(np.int64)[..., None] // 255
    return rgb.astype(np.uint8)
