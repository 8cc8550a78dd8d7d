"""Lookout for Vision manifests: read and write the JSON-lines dataset format.

A manifest has one JSON object a line (SageMaker Ground Truth style)::

    {"source-ref": "train/good/000.png", "anomaly-label": 0,
     "anomaly-label-metadata": {"class-name": "normal", "type": "groundtruth/image-classification",
                                "human-annotated": "yes", "confidence": 1.0}}

and segmentation lines add ``anomaly-mask-ref`` (a colour PNG) with
``anomaly-mask-ref-metadata.internal-color-map`` (``{"0": {"class-name": "BACKGROUND",
"hex-color": "#ffffff"}, "1": {"class-name": "scratch", "hex-color": "#2ca02c"}}``).

This module owns that format. It imports numpy, PIL, the standard library, ``lvkit.errors``
and its sibling dataset modules only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from PIL import Image

from lvkit.datasets._masks import BACKGROUND_HEX, color_mask, read_label_masks
from lvkit.datasets._records import SPLITS, Dataset, Sample, make_dataset, normalize_hex
from lvkit.errors import DatasetError

__all__ = ["check_line", "load_manifest", "load_manifests", "MANIFEST_SUFFIXES", "ManifestLine", "ManifestLineError",
           "write_manifest"]

#: file suffixes read as manifests
MANIFEST_SUFFIXES: frozenset[str] = frozenset({".manifest", ".jsonl"})

_CLASSIFICATION = "groundtruth/image-classification"
_SEGMENTATION = "groundtruth/semantic-segmentation"


class _LineError(Exception):
    """A problem with one manifest line; :func:`_parse` adds the file and line number."""


def _resolve(ref: Any, base: Path, field: str) -> Path:
    if not isinstance(ref, str) or not ref:
        raise _LineError(f"{field} must be a non-empty string, got {ref!r}")
    parsed = urlparse(ref)
    scheme = parsed.scheme.lower()
    if scheme == "s3":
        raise _LineError(
            f"{field} {ref!r} is an S3 URI; lvkit cannot fetch S3 objects: download them "
            "(aws s3 sync) and point the manifest at local paths or file:// URIs"
        )
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise _LineError(f"{field} {ref!r} names a remote host; only local file:// URIs are read")
        path = Path(url2pathname(parsed.path))
    elif len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise _LineError(
            f"{field} {ref!r} has unsupported scheme {parsed.scheme!r}: use a local path or file:// URI"
        )
    else:
        path = Path(ref)
    if not path.is_absolute():
        path = base / path
    path = Path(os.path.normpath(path.absolute()))
    if not path.is_file():
        raise _LineError(f"{field} {ref!r}: no such file {path}")
    return path


def _color_map(meta: Any) -> list[tuple[str, str]]:
    """Return ``[(hex, label), ...]`` of a mask's colour map in key order, background left out."""
    if not isinstance(meta, dict) or not isinstance(meta.get("internal-color-map"), dict):
        raise _LineError("anomaly-mask-ref-metadata must be an object with an internal-color-map object")
    entries = meta["internal-color-map"]
    order = sorted(entries, key=lambda k: (0, int(k), k) if k.isdigit() else (1, 0, k))
    pairs: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for key in order:
        entry = entries[key]
        if not isinstance(entry, dict):
            raise _LineError(f"internal-color-map entry {key!r} must be an object, got {entry!r}")
        name, color = entry.get("class-name"), entry.get("hex-color")
        if not isinstance(name, str) or not name:
            raise _LineError(f"internal-color-map entry {key!r} has no class-name")
        if color is None:
            raise _LineError(f"internal-color-map entry {key!r} ({name}) has no hex-color")
        try:
            color = normalize_hex(color)
        except ValueError as exc:
            raise _LineError(f"internal-color-map entry {key!r} ({name}): {exc}") from None
        if color in seen and seen[color] != name:
            raise _LineError(f"internal-color-map gives {color} to both {seen[color]!r} and {name!r}")
        seen[color] = name
        if name.lower() != "background":
            pairs.append((color, name))
    return pairs


class ManifestLineError(DatasetError):
    """One manifest line breaks the format; the message says what (without file or line number)."""


@dataclass(frozen=True, slots=True)
class ManifestLine:
    """What one manifest line says, its references not yet resolved (:func:`check_line`).

    Parameters
    ----------
    source_ref : str
        The image reference as written.
    label : int or None
        0 normal, 1 anomaly, None for an unlabeled line (no ``anomaly-label``).
    mask_ref : str or None
        An anomalous line's ``anomaly-mask-ref``; None otherwise (a normal image's mask is ignored).
    colors : tuple of (str, str)
        The mask's ``(hex colour, label)`` pairs in key order, background left out.
    """

    source_ref: str
    label: int | None
    mask_ref: str | None = None
    colors: tuple[tuple[str, str], ...] = ()


def check_line(record: Any, *, labeled: bool = True) -> ManifestLine:
    """The rules of one manifest line, the one definition every reader uses.

    Parameters
    ----------
    record : object
        The line's parsed JSON.
    labeled : bool, default True
        Whether ``anomaly-label`` is required; with False an unlabeled line is accepted
        (datasets of the API hold those; training skips them).

    Raises
    ------
    ManifestLineError
        Naming what is wrong with the line.

    Examples
    --------
    >>> check_line({"source-ref": "s3://b/a.png", "anomaly-label": 1})
    ManifestLine(source_ref='s3://b/a.png', label=1, mask_ref=None, colors=())
    >>> check_line({"source-ref": "a.png"}, labeled=False).label is None
    True
    """
    if not isinstance(record, dict):
        raise ManifestLineError(f"expected a JSON object, got {type(record).__name__}")
    ref = record.get("source-ref")
    if "source-ref" not in record:
        raise ManifestLineError("missing source-ref")
    if not isinstance(ref, str) or not ref:
        raise ManifestLineError(f"source-ref must be a non-empty string, got {ref!r}")
    if "anomaly-label" not in record:
        if labeled:
            raise ManifestLineError("missing anomaly-label")
        return ManifestLine(ref, None)
    label = record["anomaly-label"]
    if isinstance(label, bool) or label not in (0, 1):
        raise ManifestLineError(f"anomaly-label must be 0 or 1, got {label!r}")
    meta = record.get("anomaly-label-metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ManifestLineError(f"anomaly-label-metadata must be an object, got {meta!r}")
    if label == 0 or "anomaly-mask-ref" not in record:
        # a normal image has no anomalous pixels, whatever mask it may carry
        return ManifestLine(ref, int(label))
    mask_ref = record["anomaly-mask-ref"]
    if not isinstance(mask_ref, str) or not mask_ref:
        raise ManifestLineError(f"anomaly-mask-ref must be a non-empty string, got {mask_ref!r}")
    try:
        colors = _color_map(record.get("anomaly-mask-ref-metadata"))
    except _LineError as exc:
        raise ManifestLineError(str(exc)) from None
    if not colors:
        raise ManifestLineError("an anomalous image's internal-color-map lists no anomaly label besides BACKGROUND")
    return ManifestLine(ref, 1, mask_ref, tuple(colors))


def _sample(record: Any, base: Path, split: str) -> Sample:
    try:
        line = check_line(record)
    except ManifestLineError as exc:
        raise _LineError(str(exc)) from None
    image = _resolve(line.source_ref, base, "source-ref")
    if line.mask_ref is None:
        return Sample(image, int(line.label or 0), split, "anomaly" if line.label else None, None)
    mask = _resolve(line.mask_ref, base, "anomaly-mask-ref")
    return Sample(image, 1, split, line.colors[0][1], mask, line.colors)


def _parse(path: Path, split: str) -> list[tuple[int, Sample]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read manifest {path}: {exc}") from exc
    found: list[tuple[int, Sample]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _LineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            found.append((number, _sample(record, path.parent, split)))
        except _LineError as exc:
            raise DatasetError(f"{path}, line {number}: {exc}") from None
    return found


def load_manifests(
    root: str | os.PathLike[str], manifests: Sequence[tuple[str | os.PathLike[str], str]]
) -> Dataset:
    """Load several manifests, each with its split, into one dataset rooted at ``root``.

    Parameters
    ----------
    root : str or path-like
        The dataset's root (usually the folder holding the manifests).
    manifests : sequence of (path, split)
        Each manifest file and the split its lines belong to.

    Returns
    -------
    Dataset
        ``layout="manifest"``; colours from the manifests' colour maps.

    Raises
    ------
    DatasetError
        As :func:`load_manifest`, or when a label has two colours (or two labels one colour)
        across lines; the message names the file and line.

    See Also
    --------
    load_manifest : one manifest.
    """
    colors: dict[str, str] = {}
    owner: dict[str, str] = {}
    samples: list[Sample] = []
    has_train = False
    for manifest, split in manifests:
        path = Path(os.path.normpath(Path(manifest).absolute()))
        if split not in SPLITS:
            raise ValueError(f"expected split 'train' or 'test', got {split!r}")
        has_train = has_train or split == "train"
        for number, sample in _parse(path, split):
            for color, label in sample.mask_colors:
                if colors.setdefault(label, color) != color:
                    raise DatasetError(
                        f"{path}, line {number}: label {label!r} is {color} here but {colors[label]} "
                        "on an earlier line; a label keeps one colour"
                    )
                if owner.setdefault(color, label) != label:
                    raise DatasetError(
                        f"{path}, line {number}: colour {color} is {label!r} here but {owner[color]!r} "
                        "on an earlier line; a colour names one label"
                    )
            samples.append(sample)
    if has_train and not any(s.split == "train" and s.label == 0 for s in samples):
        train = [str(m) for m, split in manifests if split == "train"]
        raise DatasetError(f"no normal images found under {', '.join(train)}: training needs at least one")
    return make_dataset(
        Path(os.path.normpath(Path(root).absolute())), samples, "manifest", fixed_colors=colors
    )


def load_manifest(path: str | os.PathLike[str], *, split: str = "train") -> Dataset:
    """Load a Lookout for Vision manifest (JSON lines, one image a line).

    ``source-ref`` and ``anomaly-mask-ref`` may be paths relative to the manifest's folder,
    absolute paths or ``file://`` URIs; S3 URIs are refused (lvkit cannot fetch S3). Blank lines
    are skipped. ``anomaly-label`` must be the number 0 or 1. The colour map's background is the
    entry whose class-name is ``BACKGROUND`` (any case, under any key); colours are normalised to
    lowercase. An anomalous line's ``defect_type`` is its colour map's one anomaly label, or, when
    the map lists several, the first in key order (``"1"`` before ``"2"``); a line without a mask
    (classification) gets ``"anomaly"``. A normal line's mask, if any, is ignored
    (``mask_path=None``): normal images have no anomalous pixels.

    Parameters
    ----------
    path : str or path-like
        The manifest file.
    split : {"train", "test"}, default "train"
        The split of every line.

    Returns
    -------
    Dataset
        ``layout="manifest"``, rooted at the manifest's folder.

    Raises
    ------
    DatasetError
        For a line that is not JSON, lacks ``source-ref`` or ``anomaly-label``, has a label other
        than 0/1, a colour map entry without ``class-name`` or ``hex-color``, an S3 URI, or names
        a file that does not exist; the message gives the file, the 1-based line number and what
        was wrong. Also when ``split="train"`` and no line is a normal image.

    See Also
    --------
    load : detects the layout; loads ``train.manifest`` and ``test.manifest`` of a folder together.
    write_manifest : the inverse.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (64, 64)).save(folder / "ok.png")
    >>> _ = (folder / "train.manifest").write_text('{"source-ref": "ok.png", "anomaly-label": 0}\\n')
    >>> [(s.image_path.name, s.label, s.split) for s in load_manifest(folder / "train.manifest").samples]
    [('ok.png', 0, 'train')]
    """
    path = Path(path)
    return load_manifests(Path(os.path.normpath(path.absolute())).parent, [(path, split)])


def _ref(target: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(target, base)).as_posix()
    except ValueError:  # another drive on Windows
        return target.absolute().as_uri()


def _label_metadata(label: int) -> dict[str, Any]:
    return {
        "class-name": "anomaly" if label else "normal",
        "confidence": 1.0,
        "human-annotated": "yes",
        "type": _CLASSIFICATION,
    }


def _mask_metadata(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    color_map: dict[str, Any] = {
        "0": {"class-name": "BACKGROUND", "hex-color": BACKGROUND_HEX, "confidence": 0.0}
    }
    for key, (color, label) in enumerate(pairs, start=1):
        color_map[str(key)] = {"class-name": label, "hex-color": color, "confidence": 1.0}
    return {"internal-color-map": color_map, "human-annotated": "yes", "type": _SEGMENTATION}


def write_manifest(
    dataset: Dataset,
    path: str | os.PathLike[str],
    *,
    split: str,
    mask_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write one split of a dataset as a Lookout for Vision manifest that :func:`load_manifest` reads back.

    Each line carries ``source-ref`` (relative to the manifest's folder), ``anomaly-label`` and
    ``anomaly-label-metadata`` (``class-name``, ``type``, ``human-annotated``, ``confidence``).
    A sample with a mask also gets ``anomaly-mask-ref`` and its colour map: a colour mask is
    referenced as it is, with its own colours; a binary mask is painted as a colour PNG (white
    background, ``dataset.colors[defect_type]``) under ``mask_dir``, at the image's path
    relative to ``dataset.root``.

    Parameters
    ----------
    dataset : Dataset
        The dataset to write.
    path : str or path-like
        The manifest file to write (overwritten).
    split : {"train", "test"}
        Which samples to write.
    mask_dir : str or path-like, optional
        Where painted colour masks go; default ``masks/`` beside the manifest.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``split`` is not a split.
    DatasetError
        If a mask cannot be read.

    See Also
    --------
    load_manifest : the inverse.
    lvkit.backends.write_version_manifest : a model version's ``lvkit.json``, an unrelated file.

    Examples
    --------
    >>> import tempfile
    >>> from lvkit.datasets import generate, load_mvtec
    >>> root = generate(tempfile.mkdtemp(), categories=("gravel",), n_train=2, n_test_good=1,
    ...                 n_test_defect_per_type=1, image_size=64)
    >>> ds = load_mvtec(root / "gravel")
    >>> out = write_manifest(ds, root / "copy" / "test.manifest", split="test")
    >>> back = load_manifest(out, split="test")
    >>> [s.defect_type for s in back.samples] == [s.defect_type for s in ds.split("test").samples]
    True
    """
    if split not in SPLITS:
        raise ValueError(f"expected split 'train' or 'test', got {split!r}")
    path = Path(os.path.normpath(Path(path).absolute()))
    base = path.parent
    masks_root = Path(os.path.normpath(Path(mask_dir).absolute())) if mask_dir is not None else base / "masks"
    lines: list[str] = []
    for sample in dataset.split(split).samples:
        record: dict[str, Any] = {
            "source-ref": _ref(sample.image_path, base),
            "anomaly-label": sample.label,
            "anomaly-label-metadata": _label_metadata(sample.label),
        }
        if sample.mask_path is not None:
            if sample.mask_colors:
                mask_path, pairs = sample.mask_path, list(sample.mask_colors)
            else:
                mask_path, pairs = _paint(dataset, sample, masks_root)
            record["anomaly-mask-ref"] = _ref(mask_path, base)
            record["anomaly-mask-ref-metadata"] = _mask_metadata(pairs)
        lines.append(json.dumps(record, sort_keys=False))
    base.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _paint(dataset: Dataset, sample: Sample, masks_root: Path) -> tuple[Path, list[tuple[str, str]]]:
    masks = read_label_masks(sample)
    shape = next(iter(masks.values())).shape
    try:
        relative = sample.image_path.relative_to(dataset.root)
    except ValueError:
        relative = Path(sample.split) / sample.image_path.name
    target = (masks_root / relative).with_suffix(".png")
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(color_mask(masks, dataset.colors, (shape[0], shape[1]))).save(target)
    return target, [(dataset.colors[label], label) for label in masks]
