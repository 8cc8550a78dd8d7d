"""Building anomalib image models for lvkit: the table of supported models and :func:`build_model`.

This module owns what lvkit builds and how: :class:`ModelSpec` and :data:`MODELS` (each model's
backbone, default layers, options, epochs and the image sizes it takes), the ``model_kwargs``
each accepts (:func:`model_options`), and the build itself: the timm backbone and its pretrained
weights (from :mod:`lvkit.backends.anomalib.weights`), the pre-processor, the check for the files
anomalib would download (:mod:`lvkit.backends.anomalib.model_downloads`), seeding, and the recipe
(``lvkit_config``) that :func:`lvkit.backends.anomalib.models.save_model` stores and
:func:`lvkit.backends.anomalib.models.load_model` rebuilds from (:func:`build`). Running, saving
and loading a built model live in :mod:`lvkit.backends.anomalib.models`, which re-exports these
names: import them from there.

torch, timm, lightning and anomalib are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lvkit.backends.anomalib import local_dir, model_downloads, on_timm, weights
from lvkit.errors import BackendUnavailableError

if TYPE_CHECKING:
    from anomalib.models.components import AnomalibModule

__all__ = [
    "CONFIG_ATTR",
    "DEFAULT_MODEL",
    "LVKIT_OPTIONS",
    "PATH_OPTIONS",
    "MODELS",
    "ModelSpec",
    "build",
    "build_model",
    "check_image_size",
    "model_options",
    "model_spec",
    "quiet",
    "seeded",
]

#: the model attribute holding the recipe :func:`build` used (what ``save_model`` stores)
CONFIG_ATTR = "lvkit_config"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How lvkit builds and trains one anomalib image model.

    Attributes
    ----------
    backbone : {"timm", "none"}
        ``"timm"``: takes ``backbone``/``layers`` (a timm CNN); ``"none"``: its own network.
    layers : tuple of str
        Default feature layers of the EfficientNet-Lite backbones (``tf_efficientnet_lite0``-``2``).
    layer_arg : str
        Keyword the anomalib class takes the layers under (``"layer"`` for DFM, single).
    kwargs : dict
        Defaults for the anomalib class, overridable through ``build_model(**model_kwargs)``.
    epochs : int
        Default epochs (memory-bank models make one pass).
    batch_size : int
        Training batch size.
    segmentation : bool
        Whether the model produces an anomaly map (otherwise ``predict_raw`` maps are NaN).
    pretrained_arg : bool
        Whether the anomalib class takes ``pre_trained`` (Stfpm and Supersimplenet always
        load pretrained backbones; :func:`~lvkit.backends.anomalib.models.load_model` stages
        timm's random init for them).
    min_image_size : int
        Smallest ``image_size`` it trains at (SuperSimplenet's Perlin noise needs feature maps
        of 32 pixels or more: 128 with a finest layer at stride 8).
    size_multiple : int
        ``image_size`` must be a multiple of it (Reverse Distillation's decoder: 32).
    """

    backbone: Literal["timm", "none"]
    layers: tuple[str, ...] = ()
    layer_arg: str = "layers"
    kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 1
    batch_size: int = 8
    segmentation: bool = True
    pretrained_arg: bool = True
    min_image_size: int = 32
    size_multiple: int = 1


#: supported anomalib image models by lowercase name (defaults for the EfficientNet-Lite backbones)
MODELS: dict[str, ModelSpec] = {
    "patchcore": ModelSpec("timm", ("blocks.2", "blocks.4"), kwargs={"coreset_sampling_ratio": 0.1}),
    "padim": ModelSpec("timm", ("blocks.2", "blocks.4"), kwargs={"n_features": 100}),
    "stfpm": ModelSpec("timm", ("blocks.1", "blocks.2", "blocks.4"), epochs=10, pretrained_arg=False),
    "dfm": ModelSpec("timm", ("blocks.4",), layer_arg="layer"),
    "dfkde": ModelSpec("timm", ("blocks.6",), segmentation=False),
    "cflow": ModelSpec("timm", ("blocks.2", "blocks.4", "blocks.6"), epochs=5),
    "supersimplenet": ModelSpec("timm", ("blocks.2", "blocks.4"), epochs=10, pretrained_arg=False, min_image_size=128),
    "fastflow": ModelSpec("timm", ("blocks.1", "blocks.2", "blocks.4"), epochs=10),
    "reverse_distillation": ModelSpec("timm", ("blocks.1", "blocks.2", "blocks.4"), epochs=10, size_multiple=32),
    "ganomaly": ModelSpec("none", epochs=10, segmentation=False),
    "efficient_ad": ModelSpec("none", epochs=10, batch_size=1, min_image_size=256),
    "draem": ModelSpec("none", epochs=10),
}
DEFAULT_MODEL = "patchcore"


#: ``model_kwargs`` lvkit takes itself, beside the anomalib class's parameters
LVKIT_OPTIONS: dict[str, tuple[str, ...]] = {"efficient_ad": ("teacher_weights",)}
#: the anomalib class parameters lvkit sets (``backbone=``, ``layers=`` and its own pre- and post-processing),
#: and ``build_model``'s own parameters: never model options
_SET_BY_LVKIT = frozenset({"backbone", "layers", "layer", "pre_trained", "pre_processor", "post_processor",
                           "evaluator", "visualizer", "name", "image_size", "weights_dir", "pretrained",
                           "backbone_weights", "seed", "mean_std"})
#: model options whose value names a file or folder the training reads (made absolute before it starts)
PATH_OPTIONS = frozenset({"teacher_weights", "imagenet_dir", "dtd_dir"})

def _anomalib_classes() -> dict[str, type[AnomalibModule]]:
    with warnings.catch_warnings():  # third-party import noise (timm/anomalib FutureWarnings)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from anomalib import models as m
        except ImportError as exc:
            raise BackendUnavailableError(f"anomalib is not installed: pip install 'lvkit[anomalib]' ({exc})") from exc
    return {
        "patchcore": m.Patchcore,
        "padim": m.Padim,
        "stfpm": m.Stfpm,
        "dfm": m.Dfm,
        "dfkde": m.Dfkde,
        "cflow": m.Cflow,
        "supersimplenet": m.Supersimplenet,
        "fastflow": m.Fastflow,
        "reverse_distillation": m.ReverseDistillation,
        "ganomaly": m.Ganomaly,
        "efficient_ad": m.EfficientAd,
        "draem": m.Draem,
    }


def model_options(name: str) -> frozenset[str]:
    """The ``model_kwargs`` names model ``name`` takes: its anomalib class's keyword parameters but
    those lvkit sets (the backbone, its layers, pre- and post-processing, ``build_model``'s own),
    and lvkit's own (:data:`LVKIT_OPTIONS`). A class's ``**kwargs`` adds none: only named
    parameters pass."""
    import inspect

    params = inspect.signature(_anomalib_classes()[name].__init__).parameters.values()
    names = {p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return frozenset((names - _SET_BY_LVKIT) | set(LVKIT_OPTIONS.get(name, ())))


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of model ``name``; ValueError naming the known models otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None


def check_image_size(name: str, image_size: int) -> None:
    """ValueError when model ``name`` cannot take ``image_size`` (:attr:`ModelSpec.min_image_size`, ...)."""
    spec = model_spec(name)
    if image_size < spec.min_image_size:
        raise ValueError(f"{name} needs an image_size of at least {spec.min_image_size}, got {image_size}")
    if image_size % spec.size_multiple:
        raise ValueError(f"{name} needs an image_size that is a multiple of {spec.size_multiple}, got {image_size}")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch for the block and restore their states afterwards."""
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


# --------------------------------------------------------------------------- build


def _pre_processor(mean: Sequence[float], std: Sequence[float], image_size: int) -> Any:
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    size = (image_size, image_size)
    return PreProcessor(transform=Compose([Resize(size, antialias=True), Normalize(mean=list(mean), std=list(std))]))


def build_model(
    name: str = DEFAULT_MODEL,
    *,
    backbone: str | None = None,
    layers: Sequence[str] | None = None,
    image_size: int = 256,
    weights_dir: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    backbone_weights: str | os.PathLike[str] | None = None,
    seed: int = 0,
    **model_kwargs: Any,
) -> AnomalibModule:
    """Build an anomalib model with raw outputs (no post-processing, evaluator or visualizer).

    Parameters
    ----------
    name : str, default "patchcore"
        A key of :data:`MODELS`.
    backbone : str, optional
        timm backbone of ``"timm"`` models; default ``tf_efficientnet_lite0``. It and
        ``tf_efficientnet_lite1``/``lite2`` have offline ImageNet weights
        (:data:`~lvkit.backends.anomalib.weights.OFFLINE_BACKBONES`). Other names load pretrained
        weights from timm's caches or the hub, or from ``backbone_weights``.
    layers : sequence of str, optional
        Feature layers; default :attr:`ModelSpec.layers` (defined for the EfficientNet-Lite backbones only).
    image_size : int, default 256
        Square size images are resized to before the network.
    weights_dir : path-like, optional
        Cache folder for staged backbone weights; required when ``pretrained`` and the weights
        come from a local file (always the case for the default backbone).
    pretrained : bool, default True
        ``False`` builds an untrained module to load a saved state into: nothing is read or
        downloaded, and the resource checks of ``draem``/``efficient_ad`` are skipped.
    backbone_weights : path-like, optional
        A local timm state dict for ``backbone`` (see :func:`lvkit.backends.anomalib.weights.local_backbone_weights`).
    seed : int, default 0
        Seeds random initialisation (PaDiM's feature subset, student and decoder networks).
    **model_kwargs
        Passed to the anomalib class, over :attr:`ModelSpec.kwargs`; must be JSON-serialisable.
        lvkit's own: ``teacher_weights`` (``efficient_ad``), a local file of its distilled
        teacher (``pretrained_teacher_small.pth`` from anomalib's release) instead of anomalib's cache.

    Returns
    -------
    anomalib.models.AnomalibModule
        Its attribute ``lvkit_config`` holds the recipe
        :func:`~lvkit.backends.anomalib.models.save_model` stores.

    Raises
    ------
    ValueError
        Unknown model; backbone/layers given to a model with its own network; missing
        ``weights_dir``; options that are not JSON-serialisable; an ``image_size`` the model
        cannot take (:func:`check_image_size`); a teacher file of the wrong shape.
    lvkit.errors.BackendUnavailableError
        Weights or data the model needs are missing; the message says how to provide them.

    Examples
    --------
    Skipped: it imports anomalib (about 8 s).

    >>> model = build_model("padim", image_size=64, weights_dir="/tmp/w")  # doctest: +SKIP
    >>> fit(model, images, device="cpu")  # doctest: +SKIP
    >>> scores, maps = predict_raw(model, images, device="cpu")  # doctest: +SKIP
    """
    return build(
        name,
        backbone=backbone,
        layers=layers,
        image_size=image_size,
        weights_dir=weights_dir,
        pretrained=pretrained,
        backbone_weights=backbone_weights,
        seed=seed,
        model_kwargs=model_kwargs,
    )


def build(
    name: str,
    *,
    backbone: str | None,
    layers: Sequence[str] | None,
    image_size: int,
    weights_dir: str | os.PathLike[str] | None,
    pretrained: bool,
    backbone_weights: str | os.PathLike[str] | None,
    seed: int,
    model_kwargs: dict[str, Any],
    mean_std: tuple[Sequence[float], Sequence[float]] | None = None,
) -> AnomalibModule:
    """:func:`build_model` with every option explicit, plus the normalisation ``mean_std`` of a
    saved recipe (``load_model`` passes it; otherwise it comes from the backbone's config)."""
    spec = model_spec(name)
    cls = _anomalib_classes()[name]
    kwargs: dict[str, Any] = {**spec.kwargs, **model_kwargs}
    config: dict[str, Any] = {"name": name, "image_size": int(image_size), "backbone": None, "layers": None}
    config["kwargs"] = dict(kwargs)
    config["mean"] = config["std"] = None
    _check_json(config)
    check_image_size(name, int(image_size))
    size = (int(image_size), int(image_size))
    swap: dict[str, Any] | None = None  # FastFlow, Reverse Distillation: the backbone lvkit puts in
    if spec.backbone == "none":
        if backbone is not None or layers is not None or backbone_weights is not None:
            raise ValueError(f"model {name!r} has its own network; it takes no backbone, layers or backbone_weights")
        pre_processor = cls.configure_pre_processor(image_size=size)
    else:
        arch = backbone or weights.DEFAULT_BACKBONE
        if layers is None and arch not in weights.OFFLINE_BACKBONES:
            known = ", ".join(weights.OFFLINE_BACKBONES)
            raise ValueError(f"layers must be given for backbone {arch!r} (defaults exist for {known})")
        chosen = [str(layer) for layer in (layers if layers is not None else spec.layers)]
        timm_arch = arch
        if pretrained and (arch in weights.OFFLINE_BACKBONES or backbone_weights is not None):
            if weights_dir is None:
                raise ValueError(f"weights_dir is required to stage the pretrained weights of {arch!r}")
            if backbone_weights is None:
                weights_file = weights.offline_backbone_weights(arch, weights_dir)
            else:
                weights_file = weights.local_backbone_weights(arch, backbone_weights, weights_dir)
            timm_arch = local_dir.timm_name(weights_file)
        mean, std = mean_std if mean_std is not None else weights.backbone_mean_std(timm_arch)
        if name in on_timm.MODELS:
            swap = {"backbone": timm_arch, "layers": chosen, "pretrained": pretrained, "image_size": int(image_size)}
            kwargs.update(on_timm.PLACEHOLDER[name])
        else:
            kwargs["backbone"] = timm_arch
            if spec.pretrained_arg:
                kwargs["pre_trained"] = pretrained
            kwargs[spec.layer_arg] = chosen[0] if spec.layer_arg == "layer" else chosen
        config.update(backbone=arch, layers=chosen, mean=list(mean), std=list(std))
        pre_processor = _pre_processor(mean, std, int(image_size))
    if pretrained:
        model_downloads.check_downloads(name, kwargs)
    teacher = kwargs.pop("teacher_weights", None)  # lvkit's option, not the class's

    def construct() -> AnomalibModule:
        with seeded(seed), quiet():
            module = cls(**kwargs, pre_processor=pre_processor, post_processor=False, evaluator=False, visualizer=False)
            if swap is not None:
                on_timm.rebuild(module, name, **swap)
        return module

    with contextlib.ExitStack() as stack:
        if spec.backbone == "timm" and not pretrained and not spec.pretrained_arg:
            # the class always asks timm for pretrained weights: give it timm's own random
            # initialisation from a temporary local-dir (the saved state replaces it)
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="lvkit-backbone-"))
            kwargs["backbone"] = local_dir.timm_name(weights.placeholder_backbone(str(config["backbone"]), folder))
        if name == "draem" and not pretrained:  # no anomaly sources needed to predict
            kwargs["dtd_dir"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="lvkit-dtd-"))
        backbone_name = str(swap["backbone"] if swap is not None else kwargs.get("backbone"))
        if spec.backbone == "timm" and pretrained and not backbone_name.startswith("local-dir:"):
            model = weights.with_pretrained_download(construct, backbone=backbone_name, what=f"for {name}")
        else:
            model = construct()
    if teacher is not None and pretrained:
        model_downloads.load_teacher(model, teacher)
    setattr(model, CONFIG_ATTR, config)  # the recipe save_model stores
    return model


def _check_json(config: dict[str, Any]) -> None:
    try:
        json.dumps(config)
    except TypeError as exc:
        raise ValueError(f"model options must be JSON-serialisable to save the model: {exc}") from exc


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence third-party warnings and timm's expected-keys log inside anomalib/timm/lightning calls."""
    # timm logs "Unexpected keys ..." when features_only drops the head; Lightning logs tips
    loggers = [logging.getLogger(name) for name in ("timm.models._builder", "lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)

