"""Loaders for image folders: the MVTec AD layout, the normal/anomaly layout, and layout autodetection.

This module owns how folders on disk become :class:`~lvkit.datasets.Sample` records. It reads
directory listings only (never pixels) and imports the standard library, ``lvkit.errors`` and
the sibling dataset modules only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from lvkit.datasets._records import Dataset, Sample, is_image_file, make_dataset
from lvkit.datasets.manifest import MANIFEST_SUFFIXES, load_manifest, load_manifests
from lvkit.errors import DatasetError

__all__ = ["LAYOUTS", "load", "load_folder", "load_mvtec"]

#: the layouts :func:`load` understands
LAYOUTS: tuple[str, ...] = ("mvtec", "folder", "manifest")

_UNDERSTOOD = (
    "lvkit understands: MVTec AD (train/good/, test/<defect>/, ground_truth/<defect>/<stem>_mask.png); "
    "folders (normal/ and anomaly/, optionally under train/ and test/); "
    "Lookout for Vision manifests (a .manifest or .jsonl file, or a folder holding train.manifest "
    "and/or test.manifest)"
)


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.normpath(Path(path).absolute()))


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def _by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in _images(folder):
        found.setdefault(path.stem, path)
    return found


def require_normal_train(samples: Iterable[Sample], where: Path) -> None:
    """Raise :class:`DatasetError` unless some sample is a normal training image."""
    if not any(s.split == "train" and s.label == 0 for s in samples):
        raise DatasetError(f"no normal images found under {where}: training needs at least one")


def load_mvtec(root: str | os.PathLike[str]) -> Dataset:
    """Load a dataset in the MVTec AD layout.

    The layout is ``root/train/good/`` (normal training images), ``root/test/good/`` (normal test
    images), ``root/test/<defect>/`` (anomalies, ``defect_type`` = the folder name) and
    ``root/ground_truth/<defect>/<stem>_mask.png`` (binary masks; ``<stem>.png`` is accepted too).
    Images are ``.png``, ``.jpg`` or ``.jpeg`` in any case; hidden files and other folders under
    ``train/`` are ignored. An anomaly without a mask file gets ``mask_path=None`` and keeps
    label 1.

    Parameters
    ----------
    root : str or path-like
        The category folder (the one holding ``train/``).

    Returns
    -------
    Dataset
        ``layout="mvtec"``; samples sorted by ``(split, path)``.

    Raises
    ------
    DatasetError
        If ``root/train/good/`` is missing or holds no image.

    See Also
    --------
    load : detects the layout.

    Examples
    --------
    >>> import tempfile
    >>> from lvkit.datasets.synthetic import generate
    >>> root = generate(tempfile.mkdtemp(), categories=("brick",), n_train=2, n_test_good=1,
    ...                 n_test_defect_per_type=1, image_size=64)
    >>> ds = load_mvtec(root / "brick")
    >>> len(ds.samples), ds.labels, ds.is_segmentation
    (6, ('hole', 'scratch', 'stain'), True)
    """
    root = _absolute(root)
    if not (root / "train" / "good").is_dir():
        raise DatasetError(f"{root} is not in the MVTec AD layout: it has no train/good/ folder")
    samples = [Sample(p, 0, "train", None, None) for p in _images(root / "train" / "good")]
    test = root / "test"
    defects = sorted(p for p in test.iterdir() if p.is_dir()) if test.is_dir() else []
    for folder in defects:
        if folder.name == "good":
            samples.extend(Sample(p, 0, "test", None, None) for p in _images(folder))
            continue
        masks = _by_stem(root / "ground_truth" / folder.name)
        for path in _images(folder):
            mask = masks.get(path.stem + "_mask", masks.get(path.stem))
            samples.append(Sample(path, 1, "test", folder.name, mask))
    require_normal_train(samples, root / "train" / "good")
    return make_dataset(root, samples, "mvtec")


def _has_folder_layout(base: Path) -> bool:
    return (base / "normal").is_dir() or (base / "anomaly").is_dir()


def load_folder(root: str | os.PathLike[str]) -> Dataset:
    """Load a dataset of ``normal/`` and ``anomaly/`` folders, as the AWS example programs use.

    Either ``root/normal/`` and ``root/anomaly/`` (every image in split ``"train"``), or the same
    two folders under ``root/train/`` and ``root/test/``. Only images directly inside ``normal/``
    and ``anomaly/`` count; anomalies get ``defect_type="anomaly"``. Optional binary masks (black
    background, any nonzero pixel = anomaly) are looked up by image stem, first in
    ``anomaly/masks/`` and then in a ``masks/`` folder beside ``anomaly/``, with any image suffix
    (so ``anomaly/a.jpg`` may have ``anomaly/masks/a.png``). An anomaly without one gets
    ``mask_path=None``.

    Parameters
    ----------
    root : str or path-like
        The folder holding ``normal/`` and ``anomaly/``, or ``train/`` and ``test/``.

    Returns
    -------
    Dataset
        ``layout="folder"``; samples sorted by ``(split, path)``.

    Raises
    ------
    DatasetError
        If neither layout is there, or the train split has no normal image.

    See Also
    --------
    load : detects the layout.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("normal/a.png", "normal/b.png", "anomaly/c.png"):
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     Image.new("RGB", (64, 64)).save(root / name)
    >>> [(s.image_path.name, s.label, s.split, s.defect_type) for s in load_folder(root).samples]
    [('c.png', 1, 'train', 'anomaly'), ('a.png', 0, 'train', None), ('b.png', 0, 'train', None)]
    """
    root = _absolute(root)
    if _has_folder_layout(root):
        bases = [("train", root)]
    elif _has_folder_layout(root / "train") or _has_folder_layout(root / "test"):
        bases = [("train", root / "train"), ("test", root / "test")]
    else:
        raise DatasetError(f"{root} has no normal/ or anomaly/ folder (nor under train/ or test/)")
    samples: list[Sample] = []
    for split, base in bases:
        samples.extend(Sample(p, 0, split, None, None) for p in _images(base / "normal"))
        masks = {**_by_stem(base / "masks"), **_by_stem(base / "anomaly" / "masks")}
        samples.extend(Sample(p, 1, split, "anomaly", masks.get(p.stem)) for p in _images(base / "anomaly"))
    require_normal_train(samples, bases[0][1] / "normal")
    return make_dataset(root, samples, "folder")


def _detect(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            return "manifest"
        raise DatasetError(f"{path} is a file but not a .manifest or .jsonl manifest; {_UNDERSTOOD}")
    if (path / "train" / "good").is_dir():
        return "mvtec"
    if _has_folder_layout(path) or _has_folder_layout(path / "train") or _has_folder_layout(path / "test"):
        return "folder"
    if any(p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES for p in path.iterdir()):
        return "manifest"
    raise DatasetError(f"cannot tell the dataset layout of {path}; {_UNDERSTOOD}")


def load(path: str | os.PathLike[str], *, layout: str | None = None) -> Dataset:
    """Load a dataset, detecting its layout.

    Detection, in order: a ``.manifest``/``.jsonl`` file is a manifest (split ``"test"`` when its
    name starts with ``test``, else ``"train"``); a folder with ``train/good/`` is MVTec AD; a
    folder with ``normal/`` or ``anomaly/`` (directly or under ``train/``/``test/``) is the folder
    layout; a folder holding manifests loads each of them, split by the same naming rule
    (``train.manifest`` and ``test.manifest``). A folder matching several layouts (the synthetic
    benchmark writes MVTec folders and manifests side by side) loads as the first; pass
    ``layout`` to choose.

    Parameters
    ----------
    path : str or path-like
        A dataset folder or a manifest file.
    layout : {"mvtec", "folder", "manifest"}, optional
        Skip detection and use this layout.

    Returns
    -------
    Dataset
        Samples sorted by ``(split, path)``.

    Raises
    ------
    DatasetError
        If the path does not exist, matches no layout (the message lists the layouts lvkit
        understands), is malformed, or its train split has no normal image.
    ValueError
        If ``layout`` is not one of :data:`LAYOUTS`.

    See Also
    --------
    load_mvtec, load_folder, load_manifest

    Examples
    --------
    >>> import tempfile
    >>> from lvkit.datasets.synthetic import generate
    >>> root = generate(tempfile.mkdtemp(), categories=("grass",), n_train=2, n_test_good=1,
    ...                 n_test_defect_per_type=1, image_size=64)
    >>> load(root / "grass").layout, load(root / "grass", layout="manifest").layout
    ('mvtec', 'manifest')
    >>> [s.defect_type for s in load(root / "grass" / "test.manifest").samples]
    [None, 'hole', 'scratch', 'stain']
    """
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"expected layout one of {LAYOUTS}, got {layout!r}")
    target = _absolute(path)
    if not target.exists():
        raise DatasetError(f"no such dataset file or folder: {target}")
    layout = layout or _detect(target)
    if layout == "mvtec":
        return load_mvtec(target)
    if layout == "folder":
        return load_folder(target)
    if target.is_file():
        return load_manifest(target, split=_manifest_split(target))
    manifests = sorted(p for p in target.iterdir() if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES)
    if not manifests:
        raise DatasetError(f"no .manifest or .jsonl file in {target}")
    return load_manifests(target, [(p, _manifest_split(p)) for p in manifests])


def _manifest_split(path: Path) -> str:
    return "test" if path.name.lower().startswith("test") else "train"
