"""``lvkit.train``: a new model version of a project from a dataset.

Splits (seeded, recorded in the version's ``lvkit.json``):

* **fit**: the train split's normal images, less a held-out fifth (at least 2) for validation.
* **validation** (chooses thresholds, confidence slope and the region labeller; see
  ``backends._decision``): the held-out normals, plus the train split's anomalous images;
  when the train split has none, a stratified seeded half of the test split is borrowed.
* **evaluation**: the test images not used for validation. ``Performance`` (F1, precision,
  recall at the model's decision) and the evaluation result are computed on them.

A dataset with no test split (a flat ``normal/`` + ``anomaly/`` folder, one manifest) is split
first, as the service split a project that had only a training dataset. The public material
does not say how; lvkit moves a seeded, stratified part to the test split: a fifth of the
normal images (at least 2) and half of the anomalous ones. Such a dataset needs at least 20
normal images, as the service required.

Service limits mirrored: at least 10 normal training images; every image the same size
(unless ``resize=True``); PNG or JPEG, 64..4096 px.

Nothing is created before everything that can be checked without training is: the options
(model, device, image size, epochs), the dataset's layout, images and masks, the splits and the
labels. A bad option or a broken dataset raises before the project or a version exists. Masks
are resized with their images (nearest neighbour) wherever images of several sizes meet one
model (``resize=True``).

The model trains in a child process (``backends._train_worker``) with glibc's
``MALLOC_MMAP_THRESHOLD_`` set, which keeps PatchCore's coreset selection near 1 GB instead of
growing to 24 GB; serving processes run without it (it halves their speed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from lvkit.backends import write_manifest
from lvkit.backends._decision import fit_decision, fit_pixel_threshold
from lvkit.backends._regions import RegionLabeler, predicted_regions
from lvkit.datasets import Dataset, Sample, load, read_label_masks, union_mask
from lvkit.errors import DatasetError, ResourceNotFoundException, ValidationException
from lvkit.images import MAX_SIDE, MIN_SIDE, to_rgb
from lvkit.shapes import anomaly_name
from lvkit.store import Store
from lvkit.validation import check_project_name

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["MIN_NORMAL_IMAGES", "MIN_NORMAL_SINGLE_DATASET", "check_options", "plan_splits", "train"]

MIN_NORMAL_IMAGES = 10


def _read_rgb(path: Path) -> npt.NDArray[np.uint8]:
    with Image.open(path) as im:
        return to_rgb(im)


#: normal images a dataset without a test split needs (the service's rule for a single dataset)
MIN_NORMAL_SINGLE_DATASET = 20


def _auto_test_split(samples: list[Sample], rng: np.random.RandomState) -> tuple[list[Sample], list[Sample]]:
    """(train, test) of a dataset that has no test split: a fifth of the normals (at least 2) and
    half of the anomalies go to test, seeded and stratified."""
    test: list[Sample] = []
    for label, share in ((0, 5), (1, 2)):
        group = [s for s in samples if s.label == label]
        n = max(2, len(group) // share) if label == 0 else len(group) // share
        test += [group[i] for i in sorted(rng.permutation(len(group))[:n])]
    chosen = {id(s) for s in test}
    return [s for s in samples if id(s) not in chosen], test


def plan_splits(ds: Dataset, *, seed: int = 0, min_normal: int = MIN_NORMAL_IMAGES) -> dict[str, list[Sample]]:
    """The fit / validation / evaluation samples of a dataset (see module docstring)."""
    rng = np.random.RandomState(seed)
    train = [s for s in ds.samples if s.split == "train"]
    test = [s for s in ds.samples if s.split == "test"]
    if not test:  # one dataset: split it as the service did
        n_normal = sum(s.label == 0 for s in train)
        if n_normal < MIN_NORMAL_SINGLE_DATASET:
            raise DatasetError(f"{ds.root}: a dataset without a test split needs at least "
                               f"{MIN_NORMAL_SINGLE_DATASET} normal images (lvkit splits it into train and test, "
                               f"as the service did), found {n_normal}")
        train, test = _auto_test_split(train, rng)
    normals = [s for s in train if s.label == 0]
    if len(normals) < min_normal:
        raise DatasetError(
            f"{ds.root}: training needs at least {min_normal} normal images in the train split, found {len(normals)}"
        )
    n_hold = max(2, len(normals) // 5)
    order = rng.permutation(len(normals))
    held = [normals[i] for i in sorted(order[:n_hold])]
    fit = [normals[i] for i in sorted(order[n_hold:])]
    validation = held + [s for s in train if s.label == 1]
    evaluation = list(test)
    if not any(s.label == 1 for s in validation) and any(s.label == 1 for s in test):
        borrowed: list[Sample] = []
        for label in (0, 1):
            group = [s for s in test if s.label == label]
            pick = rng.permutation(len(group))[: len(group) // 2]
            borrowed += [group[i] for i in sorted(pick)]
        validation += borrowed
        evaluation = [s for s in test if s not in borrowed]
    return {"fit": fit, "validation": validation, "evaluation": evaluation}


def check_options(*, model: str, device: str, image_size: object, epochs: object) -> None:
    """ValidationException for an option lvkit cannot train with, before anything is created."""
    import difflib

    from lvkit.backends._anomalib_core import MODELS, resolve_device

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
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValidationException(f"epochs must be a positive integer, got {epochs!r}")


def _resized(mask: npt.NDArray[np.bool_], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """A mask at ``shape`` (nearest neighbour), as its image is resized to the model's maps."""
    if mask.shape == tuple(shape):
        return mask
    return np.asarray(Image.fromarray(mask).resize((shape[1], shape[0]), Image.Resampling.NEAREST), dtype=bool)


def _check_masks(samples: list[Sample]) -> None:
    """Read every mask now (``read_label_masks`` checks colours and sizes): a broken mask fails
    before training, not after it."""
    for s in samples:
        if s.label == 1:
            read_label_masks(s)


def _image_size(samples: list[Sample], *, resize: bool) -> tuple[int, int]:
    sizes: dict[tuple[int, int], Path] = {}
    for s in samples:
        try:
            with Image.open(s.image_path) as im:
                if im.format not in ("PNG", "JPEG"):
                    raise DatasetError(f"{s.image_path}: {im.format} image; only PNG and JPEG are supported")
                sizes.setdefault(im.size, s.image_path)
        except OSError as exc:
            raise DatasetError(f"{s.image_path}: cannot read image ({exc})") from exc
    for (w, h), path in sizes.items():
        if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
            raise DatasetError(f"{path}: {w}x{h} pixels; images must be {MIN_SIDE} to {MAX_SIDE} pixels per side")
    if len(sizes) > 1 and not resize:
        listed = ", ".join(f"{w}x{h} ({p.name})" for (w, h), p in list(sizes.items())[:4])
        raise DatasetError(f"images of a dataset must all have the same size, found {listed}; "
                           "or train with resize=True")
    return next(iter(sizes))


def train(
    project: str,
    dataset: str | os.PathLike[str] | Dataset,
    *,
    model: str = "patchcore",
    backbone: str | None = None,
    layers: list[str] | None = None,
    image_size: int = 256,
    model_kwargs: dict[str, Any] | None = None,
    epochs: int | None = None,
    resize: bool = False,
    device: str = "auto",
    seed: int = 0,
    description: str | None = None,
    home: str | os.PathLike[str] | Store | None = None,
    progress: bool = True,
) -> str:
    """Train a new model version of ``project`` (created if missing) on ``dataset``.

    Parameters
    ----------
    project : str
        Project name (the API's rules).
    dataset : path or Dataset
        Any layout :func:`lvkit.datasets.load` reads (MVTec, normal/anomaly folders, manifests).
    model : str, default "patchcore"
        An anomalib image model (see ``lvkit.backends._anomalib_core.MODELS``).
    backbone, layers : optional
        A timm backbone and its feature layers; default the offline EfficientNet-Lite0.
    image_size : int, default 256
        The model's input side (images are resized to it inside the model). Smaller images
        are upsampled: on the bundled 128 px benchmark, 256 doubles PatchCore's mean mask IoU
        (0.28 -> 0.51) for about 3x the training time.
    model_kwargs : dict, optional
        Options of the anomalib model class. PatchCore's ``coreset_sampling_ratio`` defaults to
        what keeps its memory bank near 1,000 patches (between 0.01 and 0.1): the coreset
        selection's time grows with patches x bank size.
    epochs : int, optional
        For models trained by gradient descent (Stfpm, ...); model default otherwise.
    resize : bool, default False
        Accept DetectAnomalies images of any size (resized inside the model); otherwise only
        the training images' size is accepted, as the service did.
    device : {"auto", "cpu", "cuda"}
    seed : int
        Seeds the splits and the model.
    home : path-like or Store, optional
        Where state lives.
    progress : bool
        Show a progress bar per stage.

    Returns
    -------
    str
        The new model version.
    """
    check_project_name(project)
    check_options(model=model, device=device, image_size=image_size, epochs=epochs)
    ds = dataset if isinstance(dataset, Dataset) else load(dataset)
    splits = plan_splits(ds, seed=seed)
    size = _image_size(list(ds.samples), resize=resize)
    labels = [anomaly_name(n) for n in ds.labels] if ds.is_segmentation else []
    if len(set(labels)) != len(labels):
        raise DatasetError(f"anomaly labels {list(ds.labels)} are not distinct once reduced to [a-zA-Z0-9]")
    colors = [ds.colors[n] for n in ds.labels] if ds.is_segmentation else []
    if labels:
        _check_masks(splits["validation"])
    store = home if isinstance(home, Store) else Store(home)
    model_kwargs = dict(model_kwargs or {})
    if model == "patchcore" and "coreset_sampling_ratio" not in model_kwargs:
        patches = len(splits["fit"]) * (image_size // 8) ** 2  # the default layers' finest stride is 8
        model_kwargs["coreset_sampling_ratio"] = round(min(0.1, max(0.01, 1000 / patches)), 4)
    try:
        store.get_project(project)
    except ResourceNotFoundException:
        store.create_project(project)
    scored = splits["validation"] + splits["evaluation"]

    def build(tmp: Path) -> dict[str, float]:
        from lvkit.backends._anomalib_core import train_in_subprocess

        config = {
            "model": model, "backbone": backbone, "layers": layers, "image_size": image_size,
            "epochs": epochs, "seed": seed, "device": device, "model_kwargs": model_kwargs,
            "train_images": [str(s.image_path) for s in splits["fit"]],
            "predict_images": [str(s.image_path) for s in scored],
            "weights_dir": str(store.home / "weights"),
            "output_dir": str(tmp / "model"),
            "predictions": str(tmp / "work" / "predictions.npz"),
        }
        bar = tqdm(total=100, desc=f"train {model}", unit="%", disable=not progress, leave=True)

        def on_progress(event: dict[str, Any]) -> None:
            bar.set_description(f"train {model}: {event.get('stage', '')}")
            bar.n = round(100 * float(event.get("progress", bar.n / 100)))
            bar.refresh()

        (tmp / "work").mkdir()
        try:
            train_in_subprocess(config, on_progress=on_progress)
        finally:
            bar.close()
        with np.load(tmp / "work" / "predictions.npz") as pred:
            scores, maps = pred["scores"].astype(np.float64), pred["maps"].astype(np.float32)
        nv = len(splits["validation"])
        val_y = np.array([s.label for s in splits["validation"]])
        decision = fit_decision(scores[:nv], val_y)
        labeler = None
        if labels:
            shape = maps.shape[1:]
            true = [_resized(union_mask(read_label_masks(s), _mask_shape(s)), shape) for s in splits["validation"]]
            decision = type(decision)(decision.image_threshold, decision.slope,
                                      fit_pixel_threshold(maps[:nv], np.stack(true)))
            examples = []
            for i, s in enumerate(splits["validation"]):
                if s.label == 1:
                    truth = {anomaly_name(k): _resized(v, shape) for k, v in read_label_masks(s).items()}
                    pred = predicted_regions(maps[i] > decision.pixel_threshold, truth)
                    rgb = _read_rgb(s.image_path)
                    if rgb.shape[:2] != shape:  # the labeller reads colours where the regions are
                        rgb = np.asarray(Image.fromarray(rgb).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
                    examples.append((rgb, pred))
                    examples += [(rgb, {k: v}) for k, v in truth.items() if k not in pred]  # missed: the truth
            labeler = RegionLabeler.fit(labels, examples)
        ev_y = np.array([s.label for s in splits["evaluation"]])
        ev_pred = scores[nv:] > decision.image_threshold
        performance = _performance(ev_y, ev_pred)
        write_manifest(tmp, {
            "backend": "anomalib", "model": model, "backbone": backbone, "layers": layers,
            "model_image_size": image_size, "model_kwargs": model_kwargs, "image_size": list(size), "resize": resize, "seed": seed,
            "segmentation": bool(labels), "labels": labels, "colors": [c.upper() for c in colors],
            "decision": decision.to_dict(), "labeler": labeler.to_dict() if labeler else None,
            "dataset": str(ds.root),
            "splits": {k: [str(s.image_path) for s in v] for k, v in splits.items()},
            "performance": performance, "trained_at": time.time(),
        })
        (tmp / "work" / "predictions.npz").unlink()
        (tmp / "work").rmdir()
        return performance

    record = store.add_model(project, backend="anomalib", build=build, description=description)
    return str(record.version)


def _mask_shape(s: Sample) -> tuple[int, int]:
    with Image.open(s.image_path) as im:
        return im.size[1], im.size[0]


def _performance(y: npt.NDArray[np.int64], pred: npt.NDArray[np.bool_]) -> dict[str, float]:
    """Precision, recall and F1 at the model's decision on the evaluation images (empty when undefined)."""
    if y.size == 0 or not np.any(y == 1):
        return {}
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1_score": f1, "precision": precision, "recall": recall}

