"""A manifest's lines into a dataset's entries: check each line, copy its image and mask, check them.

Used by :mod:`lvkit.catalog` for CreateDataset (a manifest at an ``s3://`` URI, a ``file://``
URI or a local path) and UpdateDatasetEntries (JSON lines sent in the request). Each line is
checked by the one definition of the format (:func:`lvkit.datasets.manifest.check_line`,
unlabeled lines allowed); its ``source-ref`` and ``anomaly-mask-ref`` are resolved against the
manifest's location (:func:`lvkit.storage.resolve`) and copied, one file at a time, into the
dataset's folder under their content's SHA-256 (``objects/<sha256>.<ext>``): the service kept
its own copy of each image too, so a dataset does not change when its source objects do.
Nothing holds more than one image in memory; the entries themselves (a line of text each) are
collected before they are committed in one transaction.

Checks on each image, as the service made them: PNG or JPEG (by content, not name), 64 to 4096
pixels a side; a mask is a PNG of its image's size. That all images of a dataset share one size
is checked when a model is trained (the service did the same).

Imports ``lvkit.errors``, ``lvkit.storage`` and ``lvkit.datasets.manifest`` only (PIL for headers).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lvkit import storage
from lvkit.datasets.manifest import ManifestLineError, check_line

__all__ = ["MAX_ENTRY_CHARS", "MAX_FILE_BYTES", "Entry", "Ingest"]

#: the longest line a dataset entry may be (the API's DatasetEntry shape)
MAX_ENTRY_CHARS = 8192
#: the largest image or mask file copied into a dataset (our limit; the public material gives none
#: for dataset images: a 4096 x 4096 RGB PNG without compression is 48 MiB)
MAX_FILE_BYTES = 64 * 1024 * 1024
#: how many problems a failure message lists (it says how many there were)
SHOWN_PROBLEMS = 5
_FORMATS = {"PNG": ".png", "JPEG": ".jpg"}
_MIN_SIDE, _MAX_SIDE = 64, 4096


@dataclass(frozen=True, slots=True)
class Entry:
    """One dataset entry: the line as given and where its copies are.

    Parameters
    ----------
    source_ref : str
        The line's ``source-ref`` as written (entries are keyed by it).
    line : str
        The JSON line, as ListDatasetEntries returns it.
    label : int or None
        0, 1, or None for an unlabeled line.
    image, mask : str, str or None
        File names of the copies under the dataset folder's ``objects/``.
    """

    source_ref: str
    line: str
    label: int | None
    image: str
    mask: str | None


@dataclass
class Ingest:
    """Check lines and copy their files into ``folder/objects``; collect entries and problems.

    Parameters
    ----------
    folder : Path
        The dataset's folder (:meth:`lvkit.store.Store.dataset_dir`).
    owner : str
        The store owner id; temporary files are named ``.tmp-<owner>-*`` so a crash leaves
        nothing that recovery does not remove.
    base : str or None
        The manifest's location, against which relative references resolve (None: an update's
        lines, where references must be absolute).
    stop : threading.Event, optional
        Set to stop at the next line (the ingest then fails).
    local_files : bool or Path, default True
        Which local files references may name: any (True, in process), none (False: a server
        reads S3 only, so a remote client cannot make it copy its own files), or those under a
        folder. Either way only regular files are read (never a FIFO or a device).
    """

    folder: Path
    owner: str
    base: str | None = None
    stop: threading.Event | None = None
    local_files: bool | Path = True
    entries: dict[str, Entry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def add_lines(self, lines: Iterable[tuple[int, str]]) -> None:
        """Check and copy each ``(line number, text)``; a source-ref given again replaces its earlier line."""
        (self.folder / "objects").mkdir(parents=True, exist_ok=True)
        for number, text in lines:
            if self.stop is not None and self.stop.is_set():
                self.problem_count += 1
                self.problems.append(f"stopped at line {number}: the service was closed")
                return
            try:
                entry = self._entry(text.strip())
            except (ManifestLineError, storage.StorageError, _FileError) as exc:
                self.problem_count += 1
                if len(self.problems) < SHOWN_PROBLEMS:
                    self.problems.append(f"line {number}: {exc}")
                continue
            self.entries.pop(entry.source_ref, None)  # keeps the order of the last occurrence
            self.entries[entry.source_ref] = entry

    def failure(self) -> str | None:
        """The status message of a failed ingest (None when every line was good)."""
        if not self.problem_count:
            return None
        more = self.problem_count - len(self.problems)
        tail = f"; and {more} more" if more else ""
        return f"{self.problem_count} manifest line(s) failed: " + "; ".join(self.problems) + tail

    def _entry(self, text: str) -> Entry:
        if len(text) > MAX_ENTRY_CHARS:
            raise ManifestLineError(f"the line has {len(text):,} characters; an entry has at most {MAX_ENTRY_CHARS:,}")
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestLineError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        line = check_line(record, labeled=False)
        image_uri = storage.resolve(line.source_ref, self.base)
        image, size = self._copy(image_uri, "source-ref", masks=False)
        mask = None
        if line.mask_ref is not None:
            mask, mask_size = self._copy(storage.resolve(line.mask_ref, self.base), "anomaly-mask-ref", masks=True)
            if mask_size != size:
                raise _FileError(f"anomaly-mask-ref {line.mask_ref!r} is {mask_size[0]}x{mask_size[1]} but its image "
                                 f"is {size[0]}x{size[1]}; a mask has its image's size")
        return Entry(line.source_ref, text, line.label, image, mask)

    def _copy(self, uri: str, field_name: str, *, masks: bool) -> tuple[str, tuple[int, int]]:
        """Copy ``uri`` into objects/ under its content hash; its name there and its size."""
        if not storage.is_s3(uri):
            self._check_local(uri, field_name)
        tmp = self.folder / f".tmp-{self.owner}-{uuid.uuid4().hex[:8]}"
        try:
            storage.download(uri, tmp, max_bytes=MAX_FILE_BYTES)
            size, suffix = _check_image(tmp, field_name, uri, png_only=masks)
            digest = hashlib.sha256()
            with tmp.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            name = digest.hexdigest() + suffix
            os.replace(tmp, self.folder / "objects" / name)
            return name, size
        finally:
            tmp.unlink(missing_ok=True)


    def _check_local(self, path: str, field_name: str) -> None:
        if self.local_files is False:
            raise _FileError(f"{field_name} {path!r} is a local file: this server reads s3:// references only "
                             "(lvkit serve --local-files DIR allows a folder)")
        real = Path(os.path.realpath(path))
        if self.local_files is not True and not real.is_relative_to(os.path.realpath(self.local_files)):
            raise _FileError(f"{field_name} {path!r} is outside the folder this server reads local files from")
        try:
            regular = stat.S_ISREG(real.stat().st_mode)
        except OSError:
            regular = True  # missing: the download says so
        if not regular:
            raise _FileError(f"{field_name} {path!r} is not a regular file")


class _FileError(Exception):
    """An image or mask that is not one the service accepted."""


def _check_image(path: Path, field_name: str, uri: str, *, png_only: bool) -> tuple[tuple[int, int], str]:
    try:
        with Image.open(path) as img:
            fmt, size = img.format, img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise _FileError(f"{field_name} {uri!r} is not a PNG or JPEG image") from None
    allowed = {"PNG"} if png_only else set(_FORMATS)
    if fmt not in allowed:
        raise _FileError(f"{field_name} {uri!r} is {fmt}; {' or '.join(sorted(allowed))} only")
    if not all(_MIN_SIDE <= side <= _MAX_SIDE for side in size) and not png_only:
        raise _FileError(f"{field_name} {uri!r} is {size[0]}x{size[1]}; images are {_MIN_SIDE} to {_MAX_SIDE} "
                         "pixels a side")
    return size, _FORMATS[str(fmt)]
