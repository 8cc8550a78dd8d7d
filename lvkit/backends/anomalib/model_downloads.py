"""The downloads anomalib models make on first training, checked before anomalib tries them.

``draem`` needs the Describable Textures Dataset as anomaly sources; ``efficient_ad`` its
distilled teacher and Imagenette. anomalib fetches them on first use into its cache or the
working directory, retrying when offline. :func:`check_downloads` finds them on disk first (or
fails at once naming each missing file, where to get it and where to put it) and passes their
resolved paths on; :func:`load_teacher` loads EfficientAd's teacher from any local file instead
of anomalib's cache. Backbone weights are :mod:`lvkit.backends.anomalib.weights`' concern, which
re-exports these names.

This module never writes a file. It imports nothing from lvkit but :mod:`lvkit.errors`; torch and
platformdirs are imported inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lvkit.errors import BackendUnavailableError

__all__ = ["check_downloads", "load_teacher"]


def _anomalib_cache() -> Path:
    import platformdirs  # an anomalib dependency

    return Path(platformdirs.user_cache_path("anomalib"))


def _has_images(folder: Path) -> bool:
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
    return folder.is_dir() and any(p.suffix.lower() in exts for p in folder.rglob("*"))


def check_downloads(name: str, kwargs: dict[str, Any]) -> None:
    """Check the files anomalib would download when ``name`` first trains; fail at once if missing.

    ``draem`` needs the DTD textures (``dtd_dir``, default anomalib's cache), ``efficient_ad``
    its distilled teacher (``teacher_weights``: a local file, default anomalib's cache) and
    Imagenette (``imagenet_dir``). Resolved paths are written back into ``kwargs`` so anomalib
    never falls back to the working directory. Other models need nothing.

    Raises
    ------
    lvkit.errors.BackendUnavailableError
        Naming each missing file or folder, where to get it and where to put it.
    """
    if name == "draem":
        dtd = Path(kwargs.get("dtd_dir") or _anomalib_cache() / "datasets" / "dtd").expanduser()
        if not _has_images(dtd):
            msg = (
                f"draem needs the Describable Textures Dataset (DTD) as anomaly sources, and {dtd} holds no images. "
                "Download https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz, extract it and pass "
                "dtd_dir=<folder with the texture images> (or extract it to that path)."
            )
            raise BackendUnavailableError(msg)
        kwargs["dtd_dir"] = str(dtd.resolve())
    elif name == "efficient_ad":
        size = str(kwargs.get("model_size", "small")).lower().split(".")[-1]
        size = {"s": "small", "m": "medium"}.get(size, size)  # EfficientAdModelSize values name the file
        given = kwargs.get("teacher_weights")
        cached = _anomalib_cache() / "pre_trained" / "efficientad_pretrained_weights" / f"pretrained_teacher_{size}.pth"
        teacher = Path(given).expanduser() if given else cached
        problems = []
        if not teacher.is_file():
            what = f"teacher_weights={given!r} is not a file" if given else (
                f"its distilled teacher {teacher} is missing"
            )
            problems.append(
                f"{what} (download https://github.com/open-edge-platform/anomalib/releases/download/"
                f"efficientad_pretrained_weights/efficientad_pretrained_weights.zip, which holds "
                f"pretrained_teacher_{size}.pth, and pass model_kwargs={{'teacher_weights': <that file>}}, "
                f"or extract the zip into {cached.parent.parent})"
            )
        else:
            kwargs["teacher_weights"] = str(teacher.resolve())
        imagenet = kwargs.get("imagenet_dir")
        folder = Path(imagenet).expanduser() if imagenet else None
        if folder is None or not folder.is_dir() or not any(_has_images(d) for d in folder.iterdir() if d.is_dir()):
            problems.append(
                f"imagenet_dir={imagenet!r} holds no class folders of images (download https://s3.amazonaws.com/"
                "fast-ai-imageclas/imagenette2.tgz, extract it and pass imagenet_dir=<its train folder>)"
            )
        else:
            kwargs["imagenet_dir"] = str(folder.resolve())
        if problems:
            raise BackendUnavailableError("efficient_ad cannot train offline: " + "; ".join(problems))


def load_teacher(model: Any, path: str | os.PathLike[str]) -> None:
    """Load an ``efficient_ad`` model's distilled teacher from ``path`` (checked by :func:`check_downloads`).

    anomalib's ``prepare_pretrained_model``, which training calls and which reads (or downloads
    into) anomalib's cache, is replaced on this instance by a no-op.

    Raises
    ------
    ValueError
        The file does not hold a teacher of the model's size.
    """
    import torch

    try:
        model.model.teacher.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} does not hold the teacher of this efficient_ad model_size: {exc}") from exc

    def loaded() -> None:
        return None

    model.prepare_pretrained_model = loaded
