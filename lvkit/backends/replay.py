"""Recorded DetectAnomalies responses: a :class:`Recorder` that logs them, a :class:`ReplayBackend` that serves them.

A recording is a JSON-lines file, one response a line::

    {"image": "000.png", "sha256": "<hex of the body>",
     "request": {"ContentType": "image/png", "ProjectName": "demo", "ModelVersion": "1"},
     "DetectAnomalyResult": {... the JSON form, AnomalyMask base64 ...}}

``image`` is the original file name when the recorder was told it (else null);
``ProjectName``/``ModelVersion`` appear when the response came from a client. The
``DetectAnomalyResult`` is :meth:`~lvkit.shapes.DetectAnomalyResult.to_json`, so the mask bytes
come back identical. Lines are appended with one ``write`` each and the file is closed after
every line, so an interrupted recording keeps every finished line and several recorders may
append to one file.

Responses a team logged from the real service before it closed can be written in this form and
evaluated in the same table as new models: :func:`register_recording` makes a recording a model
version of a project in the :class:`~lvkit.store.Store`, served through ``lvkit.client()`` like
any model (backend ``"replay"``, artifact ``recordings.jsonl``).

Not emulated: the model itself. An image that was not recorded cannot be answered
(ResourceNotFoundException); the image-size rule of the recorded model is not known (any size
from 64 to 4096 pixels decodes, and an unknown image is simply not found).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvkit.backends import read_version_manifest, write_version_manifest
from lvkit.errors import ResourceNotFoundException
from lvkit.images import DEFAULT_MAX_BYTES, decode_image
from lvkit.shapes import SUFFIX_TYPES, DetectAnomalyResult

if TYPE_CHECKING:
    import os

    from lvkit.shapes import ContentType
    from lvkit.store import Store

__all__ = ["RECORDINGS", "Recorder", "ReplayBackend", "record", "register_recording"]

#: the recording's file name inside a replay model version's artifact folder
RECORDINGS = "recordings.jsonl"
_DUPLICATES = ("error", "last")


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class Recorder:
    """Wrap a backend or a client so that every successful DetectAnomalies answer is appended to ``path``.

    The recorder is itself a backend (``detect(body, content_type)``). Wrapping a client
    (anything with ``detect_anomalies``, e.g. ``lvkit.client()`` or a boto3 client), it also
    offers ``detect_anomalies(**kw)``, which returns the client's own dict; ``detect`` then
    sends ``project``/``version``. Failed calls raise as usual and are not recorded.

    Parameters
    ----------
    target : backend or client
        What answers.
    path : path-like
        The JSON-lines file to append to (created with its folder if missing).
    project : str, optional
        The project ``detect`` sends to a client target.
    version : str, default "latest"
        The model version ``detect`` sends to a client target.

    See Also
    --------
    record : Record a whole dataset.
    ReplayBackend : Serve a recording.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from lvkit.backends.fake import FakeBackend, brightness_handler
    >>> from lvkit.images import encode_png
    >>> path = Path(tempfile.mkdtemp()) / "rec.jsonl"
    >>> rec = Recorder(FakeBackend(brightness_handler(segmentation=True)), path)
    >>> body = encode_png(np.full((64, 64, 3), 200, np.uint8))
    >>> rec.detect(body, "image/png", image="bright.png").is_anomalous
    True
    >>> line = json.loads(path.read_text()); line["image"], line["request"]
    ('bright.png', {'ContentType': 'image/png'})
    """

    def __new__(cls, target: Any, path: str | os.PathLike[str], **_: Any) -> Recorder:
        if cls is Recorder and hasattr(target, "detect_anomalies"):
            cls = _ClientRecorder
        return super().__new__(cls)

    def __init__(self, target: Any, path: str | os.PathLike[str], *, project: str | None = None,
                 version: str = "latest") -> None:
        self.target = target
        self.path = Path(path)
        self.project = project
        self.version = version
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def detect(self, body: bytes, content_type: ContentType, *, image: str | None = None) -> DetectAnomalyResult:
        """Answer with the target and append the answer; ``image`` names the file in the recording."""
        result = self.target.detect(body, content_type)
        self._append(body, {"ContentType": content_type}, result, image)
        return result  # type: ignore[no-any-return]  # Backend protocol

    def _append(self, body: bytes, request: dict[str, Any], result: DetectAnomalyResult, image: str | None) -> None:
        line = json.dumps({"image": image, "sha256": _sha256(bytes(body)), "request": request,
                           "DetectAnomalyResult": result.to_json()}, separators=(",", ":"))
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")  # one write a line; closing flushes it


class _ClientRecorder(Recorder):
    """A :class:`Recorder` of a client: ``detect`` goes through ``detect_anomalies``."""

    def detect(self, body: bytes, content_type: ContentType, *, image: str | None = None) -> DetectAnomalyResult:
        if self.project is None:
            raise ValueError("project: expected a project name to record from a client, got None")
        response = self._call({"ProjectName": self.project, "ModelVersion": self.version, "Body": body,
                               "ContentType": content_type}, image)
        return DetectAnomalyResult.from_wire(response["DetectAnomalyResult"])

    def detect_anomalies(self, **kw: Any) -> dict[str, Any]:
        """The client's ``detect_anomalies(**kw)``, its answer appended to the recording."""
        return self._call(kw, None)

    def _call(self, kw: dict[str, Any], image: str | None) -> dict[str, Any]:
        body: Any = kw.get("Body")
        if hasattr(body, "read"):  # boto3 accepts a file object as a blob
            body = kw["Body"] = body.read()
        response: dict[str, Any] = self.target.detect_anomalies(**kw)
        request: dict[str, Any] = {k: kw[k] for k in ("ContentType", "ProjectName", "ModelVersion") if k in kw}
        self._append(body, request, DetectAnomalyResult.from_wire(response["DetectAnomalyResult"]), image)
        return response


def record(target: Any, samples: Iterable[Any], path: str | os.PathLike[str], *, project: str | None = None,
           version: str = "latest") -> int:
    """Send every image of a dataset to ``target`` and append the answers to ``path``.

    Parameters
    ----------
    target : backend or client
        As :class:`Recorder`.
    samples : Dataset, or iterable of Sample or path
        The images (PNG or JPEG by file extension); each line's ``image`` is the file name.
    path : path-like
        The recording (appended to).
    project : str, optional
        Required for a client target.
    version : str, default "latest"
        The model version for a client target.

    Returns
    -------
    int
        The number of lines appended.

    Raises
    ------
    LookoutVisionError
        What the target raised for an image (the lines before it are kept).

    Examples
    --------
    >>> import tempfile, lvkit
    >>> from lvkit.backends.fake import FakeBackend, brightness_handler
    >>> root = lvkit.datasets.generate(tempfile.mkdtemp(), categories=("brick",), n_train=2,
    ...                                n_test_good=1, n_test_defect_per_type=1, image_size=64)
    >>> test = lvkit.datasets.load(root / "brick").split("test")
    >>> record(FakeBackend(brightness_handler()), test, root / "rec.jsonl")
    4
    """
    recorder = Recorder(target, path, project=project, version=version)
    n = 0
    for item in getattr(samples, "samples", samples):
        file = Path(getattr(item, "image_path", item))
        recorder.detect(file.read_bytes(), SUFFIX_TYPES.get(file.suffix.lower(), "image/png"), image=file.name)
        n += 1
    return n


def _read(path: Path, duplicates: str) -> dict[str, DetectAnomalyResult]:
    """sha256 -> result of every line; a malformed line raises ValueError naming it."""
    results: dict[str, DetectAnomalyResult] = {}
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            where = f"{path}, line {number}"
            try:
                line = json.loads(text)
                sha = line["sha256"]
                result = DetectAnomalyResult.from_wire(line["DetectAnomalyResult"])
            except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
                raise ValueError(f"{where}: not a recorded response ({type(exc).__name__}: {exc})") from exc
            if not isinstance(sha, str) or len(sha) != 64:
                raise ValueError(f"{where}: expected a sha256 of 64 hex digits, got {sha!r}")
            sha = sha.lower()
            if sha in results and results[sha] != result and duplicates == "error":
                raise ValueError(
                    f"{where}: image {sha[:12]}... was recorded with a different result on line {first_line[sha]}; "
                    "pass duplicates='last' to let the later line win"
                )
            results[sha] = result
            first_line.setdefault(sha, number)
    return results


class ReplayBackend:
    """Serve recorded DetectAnomalies responses by the image's content (sha256 of the body).

    The request is validated as every backend validates it: the ContentType must be
    ``image/png`` or ``image/jpeg`` and the body must really be a complete image of that type
    (64 to 4096 pixels a side), else ValidationException. Then the body's sha256 is looked up:
    the recorded result comes back identical (mask bytes included).

    An image that was not recorded raises ResourceNotFoundException with ``resource_type
    "MODEL"`` and ``resource_id`` the recording's path: the recorded model has no answer for it.
    Two lines for the same image with different results raise ValueError at load
    (``duplicates="error"``, the default: silently picking one would bias an evaluation), or
    the later line wins (``duplicates="last"``). Identical duplicates are always fine.

    Parameters
    ----------
    path : path-like
        The recording (JSON lines, see the module docstring).
    duplicates : {"error", "last"}, default "error"
        Conflicting lines for one image: refuse the recording, or keep the last.
    max_bytes : int, default 8 MiB
        Request body limit.

    Raises
    ------
    ValueError
        If a line is malformed (the message names the file and line) or conflicting duplicates
        are refused.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from lvkit.backends.fake import FakeBackend, brightness_handler
    >>> from lvkit.images import encode_png
    >>> path = Path(tempfile.mkdtemp()) / "rec.jsonl"
    >>> body = encode_png(np.full((64, 64, 3), 200, np.uint8))
    >>> recorded = Recorder(FakeBackend(brightness_handler(segmentation=True)), path).detect(body, "image/png")
    >>> ReplayBackend(path).detect(body, "image/png") == recorded
    True
    >>> ReplayBackend(path).detect(encode_png(np.zeros((64, 64, 3), np.uint8)), "image/png")
    Traceback (most recent call last):
    ...
    lvkit.errors.ResourceNotFoundException: ... no recorded response for this image ...
    """

    def __init__(self, path: str | os.PathLike[str], *, duplicates: str = "error",
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if duplicates not in _DUPLICATES:
            raise ValueError(f"duplicates: expected one of {list(_DUPLICATES)!r}, got {duplicates!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.results = _read(self.path, duplicates)

    def __len__(self) -> int:
        return len(self.results)

    @classmethod
    def load(cls, artifact_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, **_: Any) -> ReplayBackend:
        """The recording ``recordings.jsonl`` of a model version's artifact folder (``device`` is ignored)."""
        manifest = read_version_manifest(artifact_dir)
        return cls(Path(artifact_dir) / RECORDINGS, duplicates=manifest.get("duplicates", "error"),
                   max_bytes=max_bytes)

    def detect(self, body: bytes, content_type: ContentType) -> DetectAnomalyResult:
        decode_image(body, content_type, max_bytes=self.max_bytes)  # type, sniffing, a complete image
        sha = _sha256(body)
        result = self.results.get(sha)
        if result is None:
            raise ResourceNotFoundException(
                f"no recorded response for this image (sha256 {sha[:16]}...) in the recording {self.path}; "
                "a replay model answers only the images recorded there",
                resource_id=str(self.path), resource_type="MODEL",
            )
        return result


def register_recording(store_or_home: Store | str | os.PathLike[str] | None, project: str,
                       path: str | os.PathLike[str], *, duplicates: str = "error",
                       description: str | None = None) -> str:
    """Add a recording to a project as a new model version served by the replay backend.

    The recording is checked first (a malformed one adds nothing), the project is created if
    it does not exist, and the new version's folder gets ``lvkit.json`` (``{"backend":
    "replay", ...}``) and a copy of the file as ``recordings.jsonl``. Start it and call
    DetectAnomalies through ``lvkit.client()`` like any model version.

    Parameters
    ----------
    store_or_home : Store, path-like or None
        The store, or its home folder (None: ``$LVKIT_HOME``).
    project : str
        The project name.
    path : path-like
        The recording.
    duplicates : {"error", "last"}, default "error"
        As :class:`ReplayBackend`.
    description : str, optional
        The version's description (default names the file).

    Returns
    -------
    str
        The new model version.

    Raises
    ------
    ValueError
        If the recording is malformed.

    Examples
    --------
    >>> import tempfile, numpy as np, lvkit
    >>> from lvkit.backends.fake import FakeBackend, brightness_handler
    >>> from lvkit.images import encode_png
    >>> home = Path(tempfile.mkdtemp())
    >>> body = encode_png(np.full((64, 64, 3), 200, np.uint8))
    >>> _ = Recorder(FakeBackend(brightness_handler()), home / "rec.jsonl").detect(body, "image/png")
    >>> version = register_recording(home / "lv", "logged", home / "rec.jsonl")
    >>> lv = lvkit.client(home / "lv")
    >>> lv.start_model(ProjectName="logged", ModelVersion=version, MinInferenceUnits=1)["Status"]
    'STARTING_HOSTING'
    >>> lv.detect_anomalies(ProjectName="logged", ModelVersion=version, Body=body,
    ...                     ContentType="image/png")["DetectAnomalyResult"]["IsAnomalous"]
    True
    """
    from lvkit.store import Store

    source = Path(path)
    n = len(ReplayBackend(source, duplicates=duplicates))
    store = store_or_home if isinstance(store_or_home, Store) else Store(store_or_home)
    try:
        try:
            store.get_project(project)
        except ResourceNotFoundException:
            store.create_project(project)

        def build(folder: Path) -> None:
            shutil.copyfile(source, folder / RECORDINGS)
            write_version_manifest(folder, {"backend": "replay", "duplicates": duplicates, "recordings": n,
                                    "source": source.name})

        rec = store.add_model(project, backend="replay", build=build,
                              description=description or f"recorded responses from {source.name}")
        return str(rec.version)
    finally:
        if store is not store_or_home:
            store.close()
