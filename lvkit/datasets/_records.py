"""Dataset records: :class:`Sample`, :class:`Dataset`, the label colour :data:`PALETTE`.

This module owns the plain, frozen records every loader returns and the colour assignment
shared by loaders, the manifest writer and (for predicted masks) the rest of lvkit. It imports
only the standard library and ``lvkit.errors``: no numpy, no PIL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["assign_colors", "Dataset", "normalize_hex", "PALETTE", "Sample", "SPLITS"]

#: the two dataset types of a Lookout for Vision project, in the order they are trained/tested
SPLITS: tuple[str, ...] = ("train", "test")

#: label colours, lowercase ``#rrggbb``; never black (``#000000``) or white (``#ffffff``, the
#: background of Lookout for Vision colour masks). Matplotlib's ``tab10`` then the light half of
#: ``tab20``: 20 colours that stay distinct from each other and on textured images.
PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)

_HEX = re.compile(r"#[0-9a-fA-F]{6}")
_RESERVED = frozenset({"#000000", "#ffffff"})


def normalize_hex(color: str) -> str:
    """Return ``color`` as lowercase ``#rrggbb``.

    Parameters
    ----------
    color : str
        A ``#rrggbb`` colour in either case.

    Returns
    -------
    str
        The same colour in lowercase.

    Raises
    ------
    ValueError
        If ``color`` is not ``#`` followed by six hex digits.

    Examples
    --------
    >>> normalize_hex("#2CA02C")
    '#2ca02c'
    """
    if not isinstance(color, str) or not _HEX.fullmatch(color):
        raise ValueError(f"expected a colour like '#2ca02c', got {color!r}")
    return color.lower()


def assign_colors(labels: Iterable[str], fixed: Mapping[str, str] | None = None) -> dict[str, str]:
    """Give every label a distinct colour: ``fixed`` ones first, then :data:`PALETTE` in sorted-label order.

    Labels without a fixed colour take the next :data:`PALETTE` colour not already used; past the
    palette, further distinct colours are derived deterministically (never black or white).

    Parameters
    ----------
    labels : iterable of str
        The label names to colour.
    fixed : mapping of str to str, optional
        Colours that must be kept (for example from a manifest's colour map).

    Returns
    -------
    dict of str to str
        Label -> lowercase ``#rrggbb``, in sorted-label order.

    Examples
    --------
    >>> assign_colors(["stain", "hole"])
    {'hole': '#1f77b4', 'stain': '#ff7f0e'}
    >>> assign_colors(["hole", "scratch"], {"hole": "#FF7F0E"})
    {'hole': '#ff7f0e', 'scratch': '#1f77b4'}
    """
    fixed = {label: normalize_hex(color) for label, color in (fixed or {}).items()}
    used = set(fixed.values())
    colors: dict[str, str] = {}
    spare = iter(_spare_colors())
    for label in sorted(set(labels) | set(fixed)):
        if label in fixed:
            colors[label] = fixed[label]
            continue
        color = next(spare)
        while color in used:
            color = next(spare)
        used.add(color)
        colors[label] = color
    return colors


def _spare_colors() -> Iterable[str]:
    yield from PALETTE
    value = 0
    for _ in range(1 << 24):  # a full cycle of an odd step visits every 24-bit colour once
        value = (value + 0x9E3779) % (1 << 24)
        color = f"#{value:06x}"
        if color not in _RESERVED and color not in PALETTE:
            yield color


@dataclass(frozen=True, slots=True)
class Sample:
    """One image of a dataset, with its label and (optionally) its ground-truth mask.

    Parameters
    ----------
    image_path : Path
        The image file (PNG or JPEG).
    label : int
        0 for a normal image, 1 for an anomaly.
    split : str
        ``"train"`` or ``"test"``.
    defect_type : str or None
        None for normal images; for anomalies the MVTec defect folder name, or the manifest's
        anomaly label (``"anomaly"`` when the dataset only classifies).
    mask_path : Path or None
        The ground-truth mask, None when there is none (normal images, classification datasets).
    mask_colors : tuple of (str, str), default ()
        ``(hex colour, label)`` pairs of a colour mask (Lookout for Vision manifests), lowercase
        ``#rrggbb``, background excluded. Empty for a binary mask, where any nonzero pixel is
        ``defect_type``.

    Raises
    ------
    ValueError
        If ``label`` or ``split`` is out of range, or a normal sample carries a defect type or mask.

    Examples
    --------
    >>> s = Sample(Path("a.png"), 1, "test", "scratch", Path("a_mask.png"))
    >>> s.label, s.defect_type, s.mask_colors
    (1, 'scratch', ())
    """

    image_path: Path
    label: int
    split: str
    defect_type: str | None
    mask_path: Path | None
    mask_colors: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.label not in (0, 1) or isinstance(self.label, bool):
            raise ValueError(f"expected label 0 or 1, got {self.label!r}")
        if self.split not in SPLITS:
            raise ValueError(f"expected split 'train' or 'test', got {self.split!r}")
        if self.label == 0 and (self.defect_type is not None or self.mask_path is not None):
            raise ValueError(f"a normal sample has no defect type or mask: {self.image_path}")
        if self.label == 1 and not self.defect_type:
            raise ValueError(f"an anomalous sample needs a defect type: {self.image_path}")


@dataclass(frozen=True, slots=True)
class Dataset:
    """A loaded dataset: samples in a deterministic order plus its labels and their colours.

    Parameters
    ----------
    root : Path
        The folder the dataset was loaded from (a manifest's folder for manifests).
    samples : tuple of Sample
        Sorted by ``(split, image path)``.
    layout : str
        ``"mvtec"``, ``"folder"`` or ``"manifest"``.
    labels : tuple of str
        The anomaly label names found, sorted.
    colors : dict of str to str
        Label -> lowercase ``#rrggbb``: from the manifest colour maps when there are any, else
        from :data:`PALETTE` in sorted-label order (see :func:`assign_colors`).

    Examples
    --------
    >>> ds = Dataset(Path("."), (Sample(Path("n.png"), 0, "train", None, None),), "folder", (), {})
    >>> len(ds.split("train").samples), len(ds.split("test").samples), ds.is_segmentation
    (1, 0, False)
    """

    root: Path
    samples: tuple[Sample, ...]
    layout: str
    labels: tuple[str, ...]
    colors: dict[str, str]

    def split(self, name: str) -> Dataset:
        """Return the dataset restricted to one split, with the same labels and colours.

        Parameters
        ----------
        name : str
            ``"train"`` or ``"test"``.

        Returns
        -------
        Dataset
            The samples of that split (possibly none).

        Raises
        ------
        ValueError
            If ``name`` is not a split.
        """
        if name not in SPLITS:
            raise ValueError(f"expected split 'train' or 'test', got {name!r}")
        return replace(self, samples=tuple(s for s in self.samples if s.split == name))

    @property
    def is_segmentation(self) -> bool:
        """True when any sample has a ground-truth mask."""
        return any(s.mask_path is not None for s in self.samples)


def make_dataset(
    root: Path,
    samples: Iterable[Sample],
    layout: str,
    *,
    fixed_colors: Mapping[str, str] | None = None,
) -> Dataset:
    """Sort ``samples``, collect their labels and colour them (internal helper of the loaders)."""
    ordered = tuple(sorted(samples, key=lambda s: (s.split, s.image_path.as_posix())))
    labels = {s.defect_type for s in ordered if s.defect_type is not None}
    labels.update(label for s in ordered for _, label in s.mask_colors)
    colors = assign_colors(labels, fixed_colors)
    return Dataset(root, ordered, layout, tuple(sorted(labels)), colors)


def is_image_file(path: Path) -> bool:
    """True for a visible ``.png``, ``.jpg`` or ``.jpeg`` file (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


#: the image file suffixes loaders accept, lowercase
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})
