"""anomalib image models behind a numpy-in, numpy-out core: build, fit, predict, save, load.

This layer knows torch and anomalib and nothing of the Lookout for Vision contract: it returns
*raw* anomaly scores and maps (anomalib's post-processing, evaluator and visualizer are
disabled), and callers put thresholds, confidence and masks on top.

This module runs, saves and loads a built model: the device (:func:`resolve_device`), images
to tensors, :func:`predict_raw`, :func:`save_model` and :func:`load_model`. Building one (the
:data:`MODELS` table, :func:`model_options`, :func:`build_model`) lives in
:mod:`lvkit.backends.anomalib.construction`, and training in :mod:`lvkit.backends.anomalib.fit`;
this module re-exports the names of the first, so callers import the whole core from here.

What is not emulated or supported:

- Models that need a timm backbone take any timm CNN; the EfficientNet-Lite0 (default), Lite1
  and Lite2 have weights that ship offline (see :mod:`lvkit.backends.anomalib.weights`), others
  load from timm's caches or a local file (``backbone_weights``).
- FastFlow and Reverse Distillation hard-code ResNet backbones in anomalib: lvkit builds them on
  a timm backbone of its own (:mod:`lvkit.backends.anomalib.on_timm`, which says what changes).
  CFA, CS-Flow and U-Flow, which do the same, are left out.
- ``efficient_ad`` and ``draem`` need downloads anomalib makes on first use (a distilled teacher
  and Imagenette; the DTD textures); :func:`build_model` checks for them and fails at once with
  the paths to fill instead. EfficientAd's teacher can be any local file (``teacher_weights``).
- PatchCore's coreset selection needs the allocator setting of
  :mod:`lvkit.backends.anomalib.worker`; train it through :func:`lvkit.backends.anomalib.worker.train_in_subprocess`.

torch, lightning and anomalib are imported inside the functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

# the build side of the core, re-exported (``X as X``: for mypy's explicit re-export) so that
# callers import the whole core from this module
from lvkit.backends.anomalib.construction import CONFIG_ATTR as CONFIG_ATTR
from lvkit.backends.anomalib.construction import DEFAULT_MODEL as DEFAULT_MODEL
from lvkit.backends.anomalib.construction import (
    LVKIT_OPTIONS,
    MODELS,
    ModelSpec,
    build,
    build_model,
    check_image_size,
    model_options,
)
from lvkit.backends.anomalib.construction import _anomalib_classes as _anomalib_classes
from lvkit.backends.anomalib.construction import model_spec as model_spec
from lvkit.backends.anomalib.construction import quiet as quiet
from lvkit.backends.anomalib.construction import seeded as seeded
from lvkit.backends.anomalib.local_dir import atomic_write

if TYPE_CHECKING:
    import torch
    from anomalib.models.components import AnomalibModule

__all__ = [
    "LVKIT_OPTIONS",
    "MODELS",
    "ModelSpec",
    "build_model",
    "check_image_size",
    "load_model",
    "model_options",
    "predict_raw",
    "resolve_device",
    "save_model",
]

Progress = Callable[[str, float], None]
CONFIG_NAME = "config.json"
STATE_NAME = "model.pt"
FORMAT = "lvkit-anomalib-model"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- device


def resolve_device(device: str | torch.device = "auto") -> str:
    """The device string to run on: ``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``.

    Raises
    ------
    ValueError
        Not ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``, or CUDA requested but unavailable.
    """
    import torch

    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not (device == "cuda" or device.startswith("cuda:")):
        raise ValueError(f"expected device 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device


# --------------------------------------------------------------------------- arrays


def to_tensors(
    images: npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]], *, same_size: bool
) -> list[torch.Tensor]:
    """uint8 (H, W, 3) images -> float (3, H, W) tensors in [0, 1]."""
    import torch

    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise ValueError(f"expected images of shape (B, H, W, 3), got {images.shape}")
    out = []
    for i, image in enumerate(images):
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected image {i} as uint8 (H, W, 3), got {array.dtype} {array.shape}")
        out.append(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0))
    if not out:
        raise ValueError("expected at least one image, got none")
    if same_size and len({tuple(t.shape) for t in out}) > 1:
        raise ValueError(f"expected images of one size, got {sorted({tuple(t.shape[1:]) for t in out})}")
    return out


def resize_batch(tensors: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Stack (3, H, W) tensors resized to (size, size), bilinear with antialiasing.

    Training and prediction both resize here: anomalib resizes with antialiasing in training
    (its ``PreProcessor`` callback) but without it in ``forward`` (its exportable transform),
    which skews the scores of images larger than ``size``. The model's own resize is then a no-op.
    """
    import torch
    from torchvision.transforms.v2 import functional as tf

    return torch.stack([tf.resize(t, [size, size], antialias=True) for t in tensors])


# --------------------------------------------------------------------------- predict


def predict_raw(
    model: AnomalibModule,
    images: npt.NDArray[np.uint8] | Sequence[npt.NDArray[np.uint8]],
    *,
    device: str | torch.device = "auto",
    batch_size: int = 8,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Raw anomaly scores and maps of a trained model.

    Parameters
    ----------
    model : AnomalibModule
        Trained by :func:`fit` or loaded by :func:`load_model`.
    images : array of shape (B, H, W, 3) or sequence of (H, W, 3), dtype uint8
        RGB images of one size.
    device : str, default "auto"
        See :func:`resolve_device`.
    batch_size : int, default 8

    Returns
    -------
    scores : ndarray of shape (B,), dtype float32
        The model's raw image scores (higher is more anomalous; unbounded).
    maps : ndarray of shape (B, H, W), dtype float32
        Raw anomaly maps resized bilinearly to the input resolution; NaN for models without
        maps (``MODELS[name].segmentation`` is False).
    """
    import torch
    import torch.nn.functional as F

    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise ValueError("expected a model from build_model or load_model (it has no lvkit_config)")
    tensors = to_tensors(images, same_size=True)
    height, width = tensors[0].shape[1:]
    target = torch.device(resolve_device(device))
    model.to(target).eval()
    scores, maps = [], []
    with torch.inference_mode():
        for start in range(0, len(tensors), batch_size):
            batch = resize_batch(tensors[start : start + batch_size], config["image_size"]).to(target)
            out = model(batch)
            score = out.pred_score.reshape(len(batch)).float()
            if out.anomaly_map is None:
                amap = torch.full((len(batch), height, width), float("nan"))
            else:
                amap = out.anomaly_map.float().reshape(len(batch), 1, *out.anomaly_map.shape[-2:])
                if amap.shape[-2:] != (height, width):
                    amap = F.interpolate(amap, size=(height, width), mode="bilinear", align_corners=False)
                amap = amap[:, 0]
            scores.append(score.cpu().numpy())
            maps.append(amap.cpu().numpy())
    return np.concatenate(scores).astype(np.float32), np.concatenate(maps).astype(np.float32)


# --------------------------------------------------------------------------- save / load


def save_model(model: AnomalibModule, path_dir: str | os.PathLike[str]) -> Path:
    """Write ``model.pt`` (the state dict) and ``config.json`` (the recipe) into ``path_dir``.

    Each file is written to a temporary name and moved into place; the config goes last, so a
    folder with a config is complete. Returns the folder.
    """
    import torch

    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise ValueError("expected a model from build_model or load_model (it has no lvkit_config)")
    folder = Path(path_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / STATE_NAME, lambda tmp: torch.save(state, tmp))
    import anomalib

    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "anomalib": anomalib.__version__, **config}
    atomic_write(folder / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    return folder


def load_model(path_dir: str | os.PathLike[str], *, device: str | torch.device = "auto") -> AnomalibModule:
    """Rebuild a model saved by :func:`save_model` (no pretrained weights needed) and load its state.

    Buffers whose size depends on training (PatchCore's memory bank, PaDiM's Gaussian, ...)
    are resized to the saved shapes before loading, then the state dict loads strictly.

    Raises
    ------
    FileNotFoundError
        ``path_dir`` lacks ``config.json`` or ``model.pt``.
    ValueError
        The folder is not an lvkit model, or the state does not fit the rebuilt module.
    """
    import torch

    folder = Path(path_dir)
    config = json.loads((folder / CONFIG_NAME).read_text())
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder} is not an lvkit anomalib model (format {config.get('format')!r})")
    state = torch.load(folder / STATE_NAME, map_location="cpu", weights_only=True)
    mean_std = (config["mean"], config["std"]) if config.get("mean") is not None else None
    model = build(
        config["name"],
        backbone=config["backbone"],
        layers=config["layers"],
        image_size=config["image_size"],
        weights_dir=None,
        pretrained=False,
        backbone_weights=None,
        seed=0,
        model_kwargs=dict(config["kwargs"]),
        mean_std=mean_std,
    )
    _resize_buffers(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{folder / STATE_NAME} does not fit a rebuilt {config['name']}: {exc}") from exc
    return model.to(resolve_device(device)).eval()


def _resize_buffers(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    import torch

    for key, value in state.items():
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        current = owner._buffers.get(attr)
        if attr in owner._buffers and (current is None or current.shape != value.shape):
            owner._buffers[attr] = torch.empty_like(value)

