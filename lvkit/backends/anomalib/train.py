"""AnomalibTrainer: what ``lvkit.train`` runs to turn a checked dataset into an anomalib version.

:mod:`lvkit.training` checks the dataset and plans the splits (for any backend); this module
does the anomalib part:

1. trains the model in a child process (:mod:`~lvkit.backends.anomalib.worker`), which also
   scores the validation and evaluation images;
2. fits the decision on the validation split (:func:`fit_served_decision`: image threshold,
   confidence slope, pixel threshold (:mod:`~lvkit.backends.anomalib.decision`) and, for a
   segmentation dataset, the labeller of predicted regions (:mod:`~lvkit.backends.anomalib.regions`));
   ``lvkit export`` re-fits the same on an int8 or fp16 network's outputs;
3. returns the manifest fields :class:`~lvkit.backends.anomalib.backend.AnomalibBackend` loads,
   and the verdicts on the evaluation split (``lvkit.training`` turns them into Performance).

Progress is shown per stage with the time each took (see :class:`StageProgress`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from lvkit.backends.anomalib.decision import Decision, fit_decision, fit_pixel_threshold
from lvkit.backends.anomalib.regions import RegionLabeler, predicted_regions
from lvkit.datasets import read_label_masks, union_mask
from lvkit.errors import ValidationException
from lvkit.images import MAX_SIDE, read_rgb
from lvkit.progress import StageProgress
from lvkit.shapes import anomaly_name

if TYPE_CHECKING:
    import numpy.typing as npt

    from lvkit.datasets import Sample
    from lvkit.training import TrainedVersion, TrainingPlan

__all__ = ["AnomalibTrainer", "check_options", "fit_served_decision"]


def check_options(*, model: str, device: str, image_size: object, epochs: object) -> None:
    """ValidationException for an option lvkit cannot train with, before anything is created."""
    from lvkit.backends.anomalib.models import MODELS, check_image_size, resolve_device

    if model not in MODELS:
        close = difflib.get_close_matches(model, list(MODELS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValidationException(f"model {model!r} is not one lvkit trains{hint} Choose one of: {', '.join(MODELS)}")
    try:
        resolve_device(device)
    except ValueError as exc:
        raise ValidationException(str(exc)) from None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 32 <= image_size <= MAX_SIDE:
        raise ValidationException(f"image_size must be an integer from 32 to {MAX_SIDE}, got {image_size!r}")
    try:
        check_image_size(model, image_size)
    except ValueError as exc:
        raise ValidationException(str(exc)) from None
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValidationException(f"epochs must be a positive integer, got {epochs!r}")


#: stage costs for :meth:`AnomalibTrainer.stage_weights` (seconds, one CPU core, 256 px)
_BUILD_S, _EXTRACT_S_PER_IMAGE, _PATCHCORE_FIT_S_PER_IMAGE = 20.0, 0.25, 1.5


def _resized(mask: npt.NDArray[np.bool_], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """A mask at ``shape`` (nearest neighbour), as its image is resized to the model's maps."""
    if mask.shape == tuple(shape):
        return mask
    return np.asarray(Image.fromarray(mask).resize((shape[1], shape[0]), Image.Resampling.NEAREST), dtype=bool)


@dataclass
class AnomalibTrainer:
    """Train an anomalib image model (see :func:`lvkit.train` for the options)."""

    model: str = "patchcore"
    backbone: str | None = None
    layers: list[str] | None = None
    image_size: int = 256
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    device: str = "auto"

    #: the backend (``lvkit.backends.BACKENDS``) that serves what this trainer makes
    backend = "anomalib"

    def check(self) -> None:
        """ValidationException for an option lvkit cannot train with."""
        check_options(model=self.model, device=self.device, image_size=self.image_size, epochs=self.epochs)
        from lvkit.backends.anomalib.models import MODELS
        from lvkit.backends.anomalib.weights import OFFLINE_BACKBONES

        if MODELS[self.model].backbone == "none" and (self.backbone is not None or self.layers is not None):
            raise ValidationException(f"model {self.model!r} has its own network; it takes no backbone or layers")
        if self.backbone not in (None, *OFFLINE_BACKBONES) and self.layers is None:
            raise ValidationException(f"layers must be given for backbone {self.backbone!r} (defaults exist for "
                                      f"{', '.join(OFFLINE_BACKBONES)})")
        if self.model_kwargs:  # a mistyped option fails here, not in the training process after the version exists
            from lvkit.backends.anomalib.construction import PATH_OPTIONS, model_options

            known = model_options(self.model)
            unknown = sorted(set(self.model_kwargs) - known)
            if unknown:
                raise ValidationException(f"model {self.model!r} takes no option {unknown[0]!r}; its options: "
                                          f"{', '.join(sorted(known)) or 'none'} (the backbone and its "
                                          "layers are options of their own)")
            empty = sorted(k for k in PATH_OPTIONS & set(self.model_kwargs) if not str(self.model_kwargs[k]))
            if empty:
                raise ValidationException(f"option {empty[0]} names a file or folder: it cannot be empty")

    def _model_kwargs(self, n_fit: int) -> dict[str, Any]:
        from lvkit.backends.anomalib.construction import PATH_OPTIONS

        kwargs = dict(self.model_kwargs)
        for name in PATH_OPTIONS & set(kwargs):  # the training process starts in a folder of its own
            kwargs[name] = os.path.realpath(os.path.expanduser(str(kwargs[name])))
        if self.model == "patchcore" and "coreset_sampling_ratio" not in kwargs:
            patches = n_fit * (self.image_size // 8) ** 2  # the default layers' finest stride is 8
            kwargs["coreset_sampling_ratio"] = round(min(0.1, max(0.01, 1000 / patches)), 4)
        if self.model == "dfkde" and "n_pca_components" not in kwargs:  # fewer than its images: an invertible KDE
            kwargs["n_pca_components"] = max(1, min(16, n_fit - 1))
        return kwargs

    def stage_weights(self, n_fit: int, n_scored: int) -> dict[str, float]:
        """Expected seconds of each stage: the progress bar's shares, not a promise (no overall
        ETA is shown). Measured on the bundled brick category at 256 px (32 fit and 68 scored
        images, 2 busy cores): build 22 s (importing anomalib), extract 8.7 s, PatchCore's
        coreset 51 s, save 1.6 s, predict 15 s."""
        area = (self.image_size / 256) ** 2
        memory_bank = self.model in ("patchcore", "padim", "dfm", "dfkde")
        fit = {"patchcore": _PATCHCORE_FIT_S_PER_IMAGE * n_fit * area}.get(self.model, 0.05 * n_fit)
        return {
            "load": 0.005 * n_fit, "build": _BUILD_S,
            "extract": _EXTRACT_S_PER_IMAGE * n_fit * area if memory_bank else 0.0,
            "fit": fit if memory_bank else 0.0,
            "train": 0.0 if memory_bank else _EXTRACT_S_PER_IMAGE * 3 * n_fit * area * (self.epochs or 10),
            "save": 1.5, "predict": _EXTRACT_S_PER_IMAGE * n_scored * area, "decide": 0.02 * n_scored,
        }

    def build(self, plan: TrainingPlan, folder: Path, *, weights_dir: Path, progress: bool | str) -> TrainedVersion:
        """Train into ``folder`` (the version's artifact folder being made)."""
        from lvkit.backends.anomalib.worker import train_in_subprocess
        from lvkit.training import TrainedVersion

        splits = plan.splits
        scored = splits["validation"] + splits["evaluation"]
        model_kwargs = self._model_kwargs(len(splits["fit"]))
        work = folder / "work"
        config = {
            "model": self.model, "backbone": self.backbone, "layers": self.layers, "image_size": self.image_size,
            "epochs": self.epochs, "seed": plan.seed, "device": self.device, "model_kwargs": model_kwargs,
            "train_images": [str(s.image_path) for s in splits["fit"]],
            "predict_images": [str(s.image_path) for s in scored],
            "weights_dir": str(weights_dir),
            "output_dir": str(folder / "model"),
            "predictions": str(work / "predictions.npz"),
        }
        work.mkdir()
        weights = self.stage_weights(len(splits["fit"]), len(scored))
        with StageProgress(f"train {self.model}", weights, progress=progress) as bar:
            train_in_subprocess(config, on_progress=bar.update)
            with np.load(work / "predictions.npz") as pred:
                scores, maps = pred["scores"].astype(np.float64), pred["maps"].astype(np.float32)
            bar.update({"stage": "decide", "progress": 0.0})
            decision, labeler = fit_served_decision(splits["validation"], plan.labels, scores, maps)
            bar.update({"stage": "decide", "progress": 1.0})
        (work / "predictions.npz").unlink()
        work.rmdir()
        nv = len(splits["validation"])
        return TrainedVersion(
            manifest={
                "model": self.model, "backbone": self.backbone, "layers": self.layers,
                "model_image_size": self.image_size, "model_kwargs": model_kwargs,
                "decision": decision.to_dict(), "labeler": labeler.to_dict() if labeler else None,
            },
            evaluation_anomalous=scores[nv:] > decision.image_threshold,
            evaluation_p_anomaly=np.array([decision.probability(float(x)) for x in scores[nv:]]),
        )


def fit_served_decision(validation: Sequence[Sample], labels: Sequence[str], scores: npt.ArrayLike,
                        maps: npt.NDArray[np.floating]) -> tuple[Decision, RegionLabeler | None]:
    """The decision (and region labeller) fitted on the validation images' raw scores and maps.

    What training fits and ``lvkit export`` re-fits for an exported network whose outputs moved
    (int8): the image threshold and confidence slope (:func:`~lvkit.backends.anomalib.decision.fit_decision`),
    and for a segmentation version (``labels`` not empty) the pixel threshold
    (:func:`~lvkit.backends.anomalib.decision.fit_pixel_threshold`) and the labeller of predicted regions.

    Parameters
    ----------
    validation : sequence of Sample
        The version's validation images, in the order of ``scores`` and ``maps``.
    labels : sequence of str
        The version's anomaly labels as the API names them (empty: classification).
    scores : array-like of shape (N,)
        Raw anomaly scores; entries past ``len(validation)`` are ignored.
    maps : ndarray of shape (N, H, W)
        Raw anomaly maps, one size (the masks are resized to it); unused without ``labels``.

    Returns
    -------
    decision : Decision
    labeler : RegionLabeler or None
        None without ``labels``.
    """
    nv = len(validation)
    decision = fit_decision(np.asarray(scores, np.float64)[:nv], np.array([s.label for s in validation]))
    if not labels:
        return decision, None
    shape = maps.shape[1:]
    # each sample's masks read once, at the maps' size (nearest neighbour commutes with the union)
    truths = [{anomaly_name(k): _resized(v, shape) for k, v in read_label_masks(s).items()} for s in validation]
    true = np.stack([union_mask(t, shape) for t in truths])
    pixel_threshold = fit_pixel_threshold(maps[:nv], true)
    decision = replace(decision, pixel_threshold=pixel_threshold)
    examples = []
    for i, s in enumerate(validation):
        if s.label == 1:
            truth = truths[i]
            pred = predicted_regions(maps[i] > pixel_threshold, truth)
            rgb = read_rgb(s.image_path)
            if rgb.shape[:2] != shape:  # the labeller reads colours where the regions are
                rgb = np.asarray(Image.fromarray(rgb).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
            examples.append((rgb, pred))
            examples += [(rgb, {k: v}) for k, v in truth.items() if k not in pred]  # missed: the truth
    return decision, RegionLabeler.fit(labels, examples)
