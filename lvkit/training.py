"""``lvkit.train``: a new model version of a project from a dataset.

Splits (seeded, recorded in the version's ``lvkit.json``):

* **fit**: the train split's normal images, less a held-out fifth (at least 2) for validation.
* **validation** (chooses thresholds, confidence slope and the region labeller; see
  ``backends.anomalib.decision``): the held-out normals, plus the train split's anomalous images;
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

This module holds what every backend's training shares (checks, splits, storing the version
and its Performance) and imports no model code: a :class:`Trainer` does the backend's part,
by default :class:`lvkit.backends.anomalib.AnomalibTrainer` (imported when ``train`` runs).

Nothing is created before everything that can be checked without training is: the options
(the trainer's ``check``: model, device, image size, epochs), the dataset's layout, images and masks, the splits and the
labels. A bad option or a broken dataset raises before the project or a version exists. Masks
are resized with their images (nearest neighbour) wherever images of several sizes meet one
model (``resize=True``).

The anomalib trainer trains in a child process (``backends.anomalib.worker``) with glibc's
``MALLOC_MMAP_THRESHOLD_`` set, which keeps PatchCore's coreset selection near 1 GB instead of
growing to 24 GB; serving processes run without it (it halves their speed).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from lvkit.backends import write_version_manifest
from lvkit.backends.recalibrated import performance_at
from lvkit.datasets import Dataset, Sample, load, read_label_masks
from lvkit.errors import DatasetError, ResourceNotFoundException
from lvkit.images import MAX_SIDE, MIN_SIDE
from lvkit.shapes import anomaly_name
from lvkit.store import Store
from lvkit.validation import check_project_name

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "MIN_NORMAL_IMAGES",
    "MIN_NORMAL_SINGLE_DATASET",
    "Trainer",
    "TrainedVersion",
    "TrainingPlan",
    "build_version",
    "check_dataset",
    "plan_splits",
    "train",
]

MIN_NORMAL_IMAGES = 10


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


@dataclass(frozen=True)
class TrainingPlan:
    """What every trainer gets: the checked dataset, its splits and its labels."""

    dataset: Dataset
    #: ``fit``, ``validation`` and ``evaluation`` samples (see the module docstring)
    splits: dict[str, list[Sample]]
    #: (width, height) of the training images
    image_size: tuple[int, int]
    #: whether DetectAnomalies accepts other sizes (resized inside the model)
    resize: bool
    #: anomaly labels as the API names them, and their "#RRGGBB" colours (empty: classification)
    labels: list[str]
    colors: list[str]
    seed: int


@dataclass(frozen=True)
class TrainedVersion:
    """What a trainer returns: its part of ``lvkit.json`` and its verdicts on the evaluation split."""

    #: backend-specific fields of the version's manifest (what its backend's ``load`` reads)
    manifest: dict[str, Any]
    #: IsAnomalous for each ``plan.splits["evaluation"]`` image, in order
    evaluation_anomalous: npt.NDArray[np.bool_]
    #: P(anomaly) as served for the same images (lets an attached recalibrator report its
    #: operating point: ``lvkit.backends.recalibrated``); None if the trainer cannot say
    evaluation_p_anomaly: npt.NDArray[np.float64] | None = None


@runtime_checkable
class Trainer(Protocol):
    """Turns a :class:`TrainingPlan` into a model version's artifacts (see ``AnomalibTrainer``)."""

    #: the name in ``lvkit.backends.BACKENDS`` of the backend that serves what it trains
    backend: str

    def check(self) -> None:
        """ValidationException for an option it cannot train with (before anything is created)."""
        ...

    def build(self, plan: TrainingPlan, folder: Path, *, weights_dir: Path,
              progress: bool | str) -> TrainedVersion:
        """Write the artifacts into ``folder`` (the version's folder being made, atomic)."""
        ...


def check_dataset(ds: Dataset, *, resize: bool = False, seed: int = 0) -> TrainingPlan:
    """Check ``ds`` for training (layout, counts, image formats and sizes, labels, masks) and
    plan its splits; DatasetError naming the first problem."""
    splits = plan_splits(ds, seed=seed)
    size = _image_size(list(ds.samples), resize=resize)
    labels = [anomaly_name(n) for n in ds.labels] if ds.is_segmentation else []
    if len(set(labels)) != len(labels):
        raise DatasetError(f"anomaly labels {list(ds.labels)} are not distinct once reduced to [a-zA-Z0-9]")
    colors = [ds.colors[n].upper() for n in ds.labels] if ds.is_segmentation else []
    if labels:
        _check_masks(splits["validation"])
    return TrainingPlan(ds, splits, size, resize, labels, colors, seed)


def build_version(trainer: Trainer, plan: TrainingPlan, folder: Path, *, weights_dir: Path,
                  progress: bool | str) -> tuple[dict[str, float], TrainedVersion]:
    """Train into ``folder`` and write the version's ``lvkit.json``; its Performance and what the trainer returned.

    Performance is precision, recall and F1 of the served verdicts on the evaluation split.
    """
    trained = trainer.build(plan, folder, weights_dir=weights_dir, progress=progress)
    truth = [int(s.label) for s in plan.splits["evaluation"]]
    performance = performance_at(truth, trained.evaluation_anomalous)
    evaluation = None
    if trained.evaluation_p_anomaly is not None:
        evaluation = {"labels": truth, "p_anomaly": [round(float(p), 6) for p in trained.evaluation_p_anomaly]}
    write_version_manifest(folder, {
        **trained.manifest,
        "backend": trainer.backend, "image_size": list(plan.image_size), "resize": plan.resize,
        "seed": plan.seed, "segmentation": bool(plan.labels), "labels": plan.labels, "colors": plan.colors,
        "dataset": str(plan.dataset.root),
        "splits": {k: [str(s.image_path) for s in v] for k, v in plan.splits.items()},
        "performance": performance, "evaluation": evaluation, "trained_at": time.time(),
    })
    return performance, trained


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
    progress: bool | str = True,
    trainer: Trainer | None = None,
) -> str:
    """Train a new model version of ``project`` (created if missing) on ``dataset``.

    Parameters
    ----------
    project : str
        Project name (the API's rules).
    dataset : path or Dataset
        Any layout :func:`lvkit.datasets.load` reads (MVTec, normal/anomaly folders, manifests).
    model : str, default "patchcore"
        An anomalib image model (see ``lvkit.backends.anomalib.models.MODELS``).
    backbone, layers : optional
        A timm backbone and its feature layers; default the offline EfficientNet-Lite0
        (``tf_efficientnet_lite1`` and ``tf_efficientnet_lite2`` are offline too and take the
        same default layers).
    image_size : int, default 256
        The model's input side (images are resized to it inside the model). Smaller images
        are upsampled: on the bundled 128 px benchmark, 256 doubles PatchCore's mean mask IoU
        (0.28 -> 0.51) for about 3x the training time. SuperSimpleNet needs 128 or more,
        EfficientAD 256 or more, Reverse Distillation a multiple of 32.
    model_kwargs : dict, optional
        Options of the anomalib model class. PatchCore's ``coreset_sampling_ratio`` defaults to
        what keeps its memory bank near 1,000 patches (between 0.01 and 0.1): the coreset
        selection's time grows with patches x bank size. DFKDE's ``n_pca_components`` defaults
        to 16 or one fewer than the fit images. EfficientAD needs ``imagenet_dir`` (Imagenette's
        train folder) and its distilled teacher: ``teacher_weights`` (a local
        ``pretrained_teacher_small.pth``) or anomalib's cache.
    epochs : int, optional
        For models trained by gradient descent (Stfpm, ...); model default otherwise.
    resize : bool, default False
        Accept DetectAnomalies images of any size (resized inside the model); otherwise only
        the training images' size is accepted, as the service did.
    device : {"auto", "cpu", "cuda"}
    seed : int
        Seeds the splits and the model.
    description : str, optional
        Stored with the version (DescribeModel's Description).
    home : path-like or Store, optional
        Where state lives.
    progress : bool or {"bar", "lines"}
        Stage-weighted progress (``lvkit.progress``): a bar in a terminal, a line per stage in
        Jupyter and logs.
    trainer : Trainer, optional
        Another backend's trainer; it replaces the anomalib options above (model ... device).

    Returns
    -------
    str
        The new model version.
    """
    check_project_name(project)
    if trainer is None:
        from lvkit.backends.anomalib.train import AnomalibTrainer

        trainer = AnomalibTrainer(model=model, backbone=backbone, layers=layers, image_size=image_size,
                                  model_kwargs=dict(model_kwargs or {}), epochs=epochs, device=device)
    trainer.check()
    ds = dataset if isinstance(dataset, Dataset) else load(dataset)
    plan = check_dataset(ds, resize=resize, seed=seed)
    store = home if isinstance(home, Store) else Store(home)
    try:
        store.get_project(project)
    except ResourceNotFoundException:
        store.create_project(project)

    def build(folder: Path) -> dict[str, float]:
        return build_version(trainer, plan, folder, weights_dir=store.home / "weights", progress=progress)[0]

    record = store.add_model(project, backend=trainer.backend, build=build, description=description)
    return str(record.version)

