"""timm *local-dir* folders: where lvkit stages backbone weights for ``timm.create_model`` to load.

A staged folder holds ``pytorch_model.bin`` (a state dict under timm's key names), ``config.json``
(the architecture and pretrained config timm's ``local-dir:`` source reads) and
``lvkit-weights.json``, a marker naming the source and the weights' checksum, written last so its
presence means the folder is complete. This module owns that format: writing a folder
(:func:`write_folder`), checking one (:func:`valid_folder`), the name that makes timm load it
(:func:`timm_name`), and the file helpers it and the model files use (:func:`atomic_write`,
:func:`sha256`). What goes into a folder is :mod:`lvkit.backends.anomalib.weights`' concern,
which re-exports these names.

It imports nothing from lvkit; torch and timm are imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "MARKER_NAME",
    "WEIGHTS_NAME",
    "atomic_write",
    "sha256",
    "timm_config",
    "timm_name",
    "valid_folder",
    "write_folder",
    "write_json",
]

#: name timm's local-dir loader looks for first (``timm.models._hub._PREFERRED_FILES``)
WEIGHTS_NAME = "pytorch_model.bin"
#: the marker written last into a staged folder
MARKER_NAME = "lvkit-weights.json"
#: version of the marker's format
FORMAT_VERSION = 1


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through a temporary file in the same folder and ``os.replace``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def valid_folder(folder: Path, expected: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a complete conversion made from the same source."""
    marker = folder / MARKER_NAME
    weights = folder / WEIGHTS_NAME
    if not (marker.is_file() and weights.is_file() and (folder / "config.json").is_file()):
        return False
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if any(record.get(key) != value for key, value in expected.items()):
        return False
    return bool(record.get("weights_sha256") == sha256(weights))


def timm_config(architecture: str, num_classes: int | None) -> dict[str, Any]:
    """The ``config.json`` timm's ``local-dir:`` source reads: architecture + pretrained cfg."""
    import timm

    cfg = timm.models.get_pretrained_cfg(architecture)
    pretrained_cfg = {} if cfg is None else dataclasses.asdict(cfg)
    for key in ("url", "hf_hub_id", "hf_hub_filename", "file", "source", "state_dict", "tag"):
        pretrained_cfg.pop(key, None)
    pretrained_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in pretrained_cfg.items() if v is not None}
    pretrained_cfg["architecture"] = architecture
    config: dict[str, Any] = {"architecture": architecture, "pretrained_cfg": pretrained_cfg}
    if num_classes is not None:
        config["num_classes"] = num_classes
        pretrained_cfg["num_classes"] = num_classes
    return config


def write_folder(folder: Path, state_dict: dict[str, Any], config: dict[str, Any], marker: dict[str, Any]) -> None:
    """Write a staged folder: the weights, ``config.json``, then the marker with their checksum."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: torch.save(state_dict, tmp))
    write_json(folder / "config.json", config)
    marker = {**marker, "weights_sha256": sha256(folder / WEIGHTS_NAME)}
    write_json(folder / MARKER_NAME, marker)  # last: its presence means the folder is complete


def timm_name(weights_file: str | os.PathLike[str]) -> str:
    """The backbone name that makes ``timm.create_model`` load ``weights_file``'s folder.

    anomalib's ``TimmFeatureExtractor`` switches to its transformer mode when the name contains
    ``"vit"``; a staged folder whose path does so is refused here rather than mis-built.
    """
    folder = Path(weights_file).parent
    name = f"local-dir:{folder}"
    if "vit" in str(folder).lower():
        msg = (
            f"the weights folder {folder} contains 'vit', which anomalib reads as a vision transformer "
            "backbone; choose a weights_dir whose path does not contain 'vit'"
        )
        raise ValueError(msg)
    return name
