"""Planning and rendering of the benchmark's images: crop windows, transforms, defects.

A :class:`Crop` says where an image is cut from its texture, how it is turned and which defect
seed it gets; :func:`plan` draws them from frozen ``RandomState`` streams and :func:`render`
turns one into pixels with integer arithmetic only. :mod:`lvkit.datasets.synthetic` writes the
results to disk.

This module imports numpy, the standard library and its sibling dataset modules only.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lvkit.datasets._defects import DEFECT_TYPES, apply_defect, randint
from lvkit.datasets._texture import SIDE, check_category, resize, source, tint

__all__ = ["check_size", "Crop", "plan", "render", "render_clean", "WINDOW"]

#: side of the square window cut from the texture (source pixels) before resizing to image_size
WINDOW = 128
_HALF = {"train": 0, "test": SIDE // 2}  # train windows in texture rows [0, 256), test in [256, 512)


@dataclass(frozen=True, slots=True)
class Crop:
    """One planned image: where it is cut from the texture and which defect it gets.

    Parameters
    ----------
    category : str
        Texture name.
    split : str
        ``"train"`` or ``"test"``.
    defect_type : str or None
        None for a normal image.
    name : str
        File stem (``"000"``, ``"001"``, ...).
    top, left : int
        Window corner in texture pixels; ``top`` is in the split's half.
    transform : int
        0-3 rotate by 90 degrees that many times, 4-7 the same after a left-right flip.
    seed : int
        Seed of the defect's own stream (unused for normal images).
    """

    category: str
    split: str
    defect_type: str | None
    name: str
    top: int
    left: int
    transform: int
    seed: int

    @property
    def rows(self) -> tuple[int, int]:
        """The texture rows ``[start, stop)`` the window covers."""
        return self.top, self.top + WINDOW


def _stream(seed: int, category: str, group: str) -> np.random.RandomState:
    return np.random.RandomState([seed, zlib.crc32(category.encode()), zlib.crc32(group.encode())])


def plan(
    category: str,
    *,
    n_train: int = 40,
    n_test_good: int = 24,
    n_test_defect_per_type: int = 12,
    seed: int = 0,
) -> tuple[Crop, ...]:
    """Plan a category's images: crop windows, transforms and defect seeds, without any pixels.

    Training windows lie in texture rows 0-255 and test windows in rows 256-511, so the two
    splits are disjoint by construction. Each folder (``train/good``, ``test/good``,
    ``test/<defect>``) has its own stream, so smaller counts give a prefix of the same plan.

    Parameters
    ----------
    category : {"brick", "gravel", "grass"}
        The texture.
    n_train, n_test_good, n_test_defect_per_type : int
        Images per folder; see :func:`generate`.
    seed : int, default 0
        Benchmark seed, 0 to 2**32 - 1.

    Returns
    -------
    tuple of Crop
        Train images, normal test images, then each defect type's in :data:`DEFECT_TYPES` order.

    Examples
    --------
    >>> crops = plan("brick", n_train=2, n_test_good=1, n_test_defect_per_type=1)
    >>> [(c.split, c.defect_type, c.name) for c in crops][:3]
    [('train', None, '000'), ('train', None, '001'), ('test', None, '000')]
    >>> all(c.rows[1] <= 256 for c in crops if c.split == "train")
    True
    """
    check_category(category)
    _check_counts(n_train, n_test_good, n_test_defect_per_type, seed)
    groups: list[tuple[str, str | None, int]] = [("train", None, n_train), ("test", None, n_test_good)]
    groups += [("test", t, n_test_defect_per_type) for t in DEFECT_TYPES]
    crops: list[Crop] = []
    for split, defect, count in groups:
        rs = _stream(seed, category, f"{split}/{defect or 'good'}")
        width = max(3, len(str(count - 1)))
        for index in range(count):
            top = _HALF[split] + randint(rs, 0, SIDE // 2 - WINDOW)
            left = randint(rs, 0, SIDE - WINDOW)
            transform = randint(rs, 0, 7)
            crop_seed = randint(rs, 0, 2**32 - 1)
            crops.append(Crop(category, split, defect, f"{index:0{width}d}", top, left, transform, crop_seed))
    return tuple(crops)


def _check_counts(n_train: int, n_test_good: int, n_defect: int, seed: int) -> None:
    if n_train < 1:
        raise ValueError(f"expected n_train >= 1, got {n_train!r}")
    if n_test_good < 0 or n_defect < 0:
        raise ValueError(f"expected test counts >= 0, got {n_test_good!r} and {n_defect!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"expected seed in 0..2**32-1, got {seed!r}")


def render_clean(
    crop: Crop, *, image_size: int = 128, texture: npt.NDArray[np.uint8] | None = None
) -> npt.NDArray[np.uint8]:
    """Render a crop without its defect: window, rotation/flip, integer resize, colour ramp.

    Parameters
    ----------
    crop : Crop
        From :func:`plan`.
    image_size : int, default 128
        Output side, 64 to 512.
    texture : ndarray of shape (512, 512), dtype uint8, optional
        The category's :func:`source` (pass it to avoid reloading it).

    Returns
    -------
    ndarray of shape (image_size, image_size, 3), dtype uint8
        Every channel within ``_defects.CHANNEL_RANGE``.
    """
    check_size(image_size)
    gray = source(crop.category) if texture is None else texture
    window = gray[crop.top : crop.top + WINDOW, crop.left : crop.left + WINDOW]
    if crop.transform >= 4:
        window = window[:, ::-1]
    window = resize(np.ascontiguousarray(np.rot90(window, crop.transform % 4)), image_size)
    return tint(window, crop.category)


def render(
    crop: Crop, *, image_size: int = 128, texture: npt.NDArray[np.uint8] | None = None
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_] | None]:
    """Render a crop with its defect, and the defect's mask (None for a normal crop).

    The mask is exactly the set of pixels that differ from :func:`render_clean`.

    Examples
    --------
    >>> crop = plan("grass", n_train=1, n_test_good=0, n_test_defect_per_type=1)[1]
    >>> image, mask = render(crop, image_size=64)
    >>> changed = (image != render_clean(crop, image_size=64)).any(axis=2)
    >>> crop.defect_type, image.shape, bool((changed == mask).all())
    ('hole', (64, 64, 3), True)
    """
    clean = render_clean(crop, image_size=image_size, texture=texture)
    if crop.defect_type is None:
        return clean, None
    return apply_defect(clean, crop.defect_type, seed=crop.seed)


def check_size(image_size: int) -> None:
    """Raise ``ValueError`` unless ``image_size`` is an int in 64..512."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 64 <= image_size <= 512:
        raise ValueError(f"expected image_size an int in 64..512, got {image_size!r}")
