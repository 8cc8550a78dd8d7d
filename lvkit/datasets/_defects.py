"""Synthetic defects in exact integer arithmetic: scratch, hole, stain.

Every shape is a set of pixels decided by integer comparisons on a sub-pixel grid (``Q`` units
per pixel, pixel centres at ``Q*i + Q/2``), and every colour change is integer arithmetic, so
the result is the same to the bit on every platform and numpy version: no trigonometry, no
float rounding, no drawing library. Randomness comes only from ``RandomState.randint`` with an
explicit ``dtype=np.int64`` (the legacy stream NEP 19 freezes; the dtype pins the same draws on
platforms whose C ``long`` is 32 bits).

The mask of a defect is exactly the set of pixels it changes: the effects below strictly move
every channel of an in-mask pixel whose value lies in :data:`CHANNEL_RANGE`, which the
synthetic textures guarantee, and leave every other pixel alone.

This module imports numpy and the standard library only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["apply_defect", "AREA_RANGE", "CHANNEL_RANGE", "defect_mask", "DEFECT_TYPES", "Q", "randint"]

#: sub-pixel units per pixel
Q = 8
#: the defect types, sorted
DEFECT_TYPES: tuple[str, ...] = ("hole", "scratch", "stain")
#: a defect covers between these fractions of the image (inclusive): (numerator, denominator) pairs
AREA_RANGE: tuple[tuple[int, int], tuple[int, int]] = ((5, 1000), (60, 1000))
#: the channel values (inclusive) the effects are guaranteed to change
CHANNEL_RANGE: tuple[int, int] = (16, 239)
#: stain colours: each has a zero channel, so blending always lowers that channel
STAIN_COLORS: tuple[tuple[int, int, int], ...] = ((196, 72, 0), (0, 72, 196), (156, 0, 120))

Mask = npt.NDArray[np.bool_]
Image = npt.NDArray[np.uint8]
Effect = Callable[[Image, Mask], Image]


def randint(rs: np.random.RandomState, low: int, high: int) -> int:
    """Draw an int in ``[low, high]`` (inclusive) from the frozen legacy stream, platform-independently.

    Examples
    --------
    >>> randint(np.random.RandomState(0), 1, 6)
    5
    """
    return int(rs.randint(low, high + 1, dtype=np.int64))


def _grid(size: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    centres = np.arange(size, dtype=np.int64) * Q + Q // 2
    return centres[:, None], centres[None, :]


def _scratch(rs: np.random.RandomState, size: int) -> tuple[Mask, Effect]:
    span = size * Q
    margin = span // 8
    lo, hi = span * 35 // 100, span * 65 // 100
    while True:
        y0, x0 = randint(rs, margin, span - margin), randint(rs, margin, span - margin)
        vy, vx = randint(rs, -hi, hi), randint(rs, -hi, hi)
        if (
            lo * lo <= vy * vy + vx * vx <= hi * hi
            and margin <= y0 + vy <= span - margin
            and margin <= x0 + vx <= span - margin
        ):
            break
    width = randint(rs, max(12, span // 48), max(20, span // 32))
    bright = randint(rs, 0, 1) == 1
    ys, xs = _grid(size)
    dy, dx = ys - y0, xs - x0
    length2 = vy * vy + vx * vx
    along = dy * vy + dx * vx
    cross = dy * vx - dx * vy
    band = (along >= 0) & (along <= length2) & (4 * cross * cross <= width * width * length2)
    cap0 = 4 * (dy * dy + dx * dx) <= width * width
    cap1 = 4 * ((dy - vy) ** 2 + (dx - vx) ** 2) <= width * width

    def effect(image: Image, mask: Mask) -> Image:
        c = image.astype(np.int64)
        changed = c + (255 - c) * 3 // 4 if bright else c // 4
        return np.where(mask[..., None], changed, c).astype(np.uint8)

    return band | cap0 | cap1, effect


def _hole(rs: np.random.RandomState, size: int) -> tuple[Mask, Effect]:
    span = size * Q
    margin = span // 5
    cy, cx = randint(rs, margin, span - margin), randint(rs, margin, span - margin)
    a_axis, b_axis = (randint(rs, span * 5 // 100, span * 10 // 100) for _ in range(2))
    uy, ux = 0, 0
    while uy == 0 and ux == 0:
        uy, ux = randint(rs, -16, 16), randint(rs, -16, 16)
    ys, xs = _grid(size)
    dy, dx = ys - cy, xs - cx
    along, across = dy * uy + dx * ux, dy * ux - dx * uy
    norm = uy * uy + ux * ux
    radius = along * along * (b_axis * b_axis) + across * across * (a_axis * a_axis)
    limit = a_axis * a_axis * b_axis * b_axis * norm
    mask = radius <= limit
    shade = 3 + np.minimum(radius * 16 // limit, 16) // 4  # 3/16 in the middle .. 7/16 at the rim

    def effect(image: Image, mask: Mask) -> Image:
        c = image.astype(np.int64)
        return np.where(mask[..., None], c * shade[..., None] // 16, c).astype(np.uint8)

    return mask, effect


def _stain(rs: np.random.RandomState, size: int) -> tuple[Mask, Effect]:
    span = size * Q
    margin = span // 5
    cy, cx = randint(rs, margin, span - margin), randint(rs, margin, span - margin)
    ys, xs = _grid(size)
    mask = np.zeros((size, size), dtype=np.bool_)
    spread = span * 6 // 100
    for _ in range(randint(rs, 3, 5)):
        oy, ox = cy + randint(rs, -spread, spread), cx + randint(rs, -spread, spread)
        r = randint(rs, span * 4 // 100, span * 8 // 100)
        mask |= (ys - oy) ** 2 + (xs - ox) ** 2 <= r * r
    color = np.array(STAIN_COLORS[randint(rs, 0, len(STAIN_COLORS) - 1)], dtype=np.int64)
    alpha = randint(rs, 6, 9)

    def effect(image: Image, mask: Mask) -> Image:
        c = image.astype(np.int64)
        return np.where(mask[..., None], (c * (16 - alpha) + color * alpha) // 16, c).astype(np.uint8)

    return mask, effect


_MAKERS: dict[str, Callable[[np.random.RandomState, int], tuple[Mask, Effect]]] = {
    "hole": _hole,
    "scratch": _scratch,
    "stain": _stain,
}


def _draw(defect_type: str, size: int, seed: int) -> tuple[Mask, Effect]:
    if defect_type not in _MAKERS:
        raise ValueError(f"expected defect_type one of {DEFECT_TYPES}, got {defect_type!r}")
    rs = np.random.RandomState(seed)
    (lo_num, lo_den), (hi_num, hi_den) = AREA_RANGE
    while True:  # redraw until the area is in range: deterministic, and rarely more than once
        mask, effect = _MAKERS[defect_type](rs, size)
        area = int(mask.sum())
        if area * lo_den >= lo_num * size * size and area * hi_den <= hi_num * size * size:
            return mask, effect


def defect_mask(defect_type: str, size: int, *, seed: int) -> Mask:
    """The pixels a defect covers on a ``size`` x ``size`` image, as :func:`apply_defect` draws it.

    Parameters
    ----------
    defect_type : {"hole", "scratch", "stain"}
        The defect.
    size : int
        The image side in pixels.
    seed : int
        Seed of the defect's own ``RandomState``.

    Returns
    -------
    ndarray of shape (size, size), dtype bool

    Examples
    --------
    >>> m = defect_mask("hole", 64, seed=3)
    >>> bool(0.005 <= m.mean() <= 0.06)
    True
    """
    return _draw(defect_type, size, seed)[0]


def apply_defect(image: Image, defect_type: str, *, seed: int) -> tuple[Image, Mask]:
    """Add one defect to a square RGB image; return the new image and the exact mask of changed pixels.

    ``scratch`` is a thin straight line (from max(1.5 px, side/48) to max(2.5 px, side/32) wide,
    35% to 65% of the side long, any direction) either lightened three quarters of the way to
    white or darkened to a quarter;
    ``hole`` is a dark rotated ellipse (semi-axes 5% to 10% of the side), darkest in the middle;
    ``stain`` is a translucent irregular blob (3 to 5 overlapping discs) of rust, ink or wine
    colour blended at 6/16 to 9/16. Each covers 0.5% to 6% of the image.

    Parameters
    ----------
    image : ndarray of shape (S, S, 3), dtype uint8
        The defect-free image; channels in :data:`CHANNEL_RANGE` guarantee that every pixel of
        the mask changes.
    defect_type : {"hole", "scratch", "stain"}
        The defect to add.
    seed : int
        Seed of the defect's own ``RandomState`` (position, size, shape, colour).

    Returns
    -------
    image : ndarray of shape (S, S, 3), dtype uint8
        A new image with the defect.
    mask : ndarray of shape (S, S), dtype bool
        The pixels the defect covers.

    Raises
    ------
    ValueError
        If ``defect_type`` is unknown or the image is not square RGB.

    Examples
    --------
    >>> clean = np.full((64, 64, 3), 128, np.uint8)
    >>> dirty, mask = apply_defect(clean, "stain", seed=0)
    >>> bool(((dirty != clean).any(axis=2) == mask).all())
    True
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1] or image.dtype != np.uint8:
        raise ValueError(f"expected a square uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    mask, effect = _draw(defect_type, image.shape[0], seed)
    return effect(image, mask), mask
