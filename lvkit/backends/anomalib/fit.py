"""Training of the anomalib models of :mod:`lvkit.backends.anomalib.models` (its ``fit``).

Split from the core module for size; it uses the core's model specs, seeding and array helpers.
torch, lightning and anomalib are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from lvkit.backends.anomalib.models import (
    CONFIG_ATTR,
    ModelSpec,
    Progress,
    model_spec,
    quiet,
    resize_batch,
    resolve_device,
    seeded,
    to_tensors,
)

if TYPE_CHECKING:
    import torch
    from anomalib.models.components import AnomalibModule

__all__ = ["fit"]


def fit(
    model: AnomalibModule,
    train_images: Sequence[npt.NDArray[np.uint8]],
    *,
    device: str | torch.device = "auto",
    epochs: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> None:
    """Train ``model`` on normal images, in place.

    Memory-bank models (PatchCore, PaDiM, DFM, DFKDE) are driven directly: one feature pass,
    then their ``fit()``. The others run a Lightning ``Trainer`` with logging, checkpoints and
    progress bars off and its root in a temporary folder, so nothing is written elsewhere.

    Parameters
    ----------
    model : AnomalibModule
        From :func:`build_model`.
    train_images : sequence of array of shape (H, W, 3), dtype uint8
        Normal images, RGB; sizes may differ (each is resized to the model's ``image_size``).
    device : str, default "auto"
        See :func:`resolve_device`.
    epochs : int, optional
        Default :attr:`ModelSpec.epochs`; ignored by memory-bank models (one pass).
    seed : int, default 0
        Seeds shuffling, augmentation and sampling; global RNG states are restored afterwards.
    progress : callable(stage: str, fraction: float), optional
        Called with ``("extract", f)`` / ``("fit", f)`` (memory-bank) or ``("train", f)``.

    Raises
    ------
    ValueError
        No images, or images that are not uint8 (H, W, 3).

    Notes
    -----
    PatchCore's coreset selection can grow a process to tens of GB under glibc's default
    allocator; use :func:`train_in_subprocess`.
    """
    import torch
    from anomalib.models.components import MemoryBankMixin

    config = getattr(model, CONFIG_ATTR, None)
    if config is None:
        raise ValueError("expected a model from build_model or load_model (it has no lvkit_config)")
    spec = model_spec(config["name"])
    report = progress or (lambda stage, fraction: None)
    target = torch.device(resolve_device(device))
    images = resize_batch(to_tensors(train_images, same_size=False), config["image_size"])
    inner: Any = model.model
    needed = int(inner.classifier.n_pca_components) + 1 if config["name"] == "dfkde" else 1  # an invertible KDE
    if len(images) < needed:
        raise ValueError(
            f"{config['name']} needs at least {needed} training images (n_pca_components + 1), got {len(images)}"
        )
    if config["name"] == "cflow":
        _fit_fibers(inner, len(images), min(spec.batch_size, len(images)), config["image_size"])
    model.to(target)
    with seeded(seed):
        if isinstance(model, MemoryBankMixin):
            _fit_memory_bank(model, images, spec.batch_size, target, report)
        else:
            _fit_lightning(model, images, spec, epochs or spec.epochs, target, seed, report)
    model.eval()


def _fit_fibers(inner: Any, n: int, batch_size: int, image_size: int) -> None:
    """Lower CFlow's ``fiber_batch_size`` to the fibers (feature-map pixels) of its coarsest layer
    in the smallest training batch: anomalib refuses a batch with fewer (64 by default, more than
    a 64 px image's 1/32 map holds). Only training uses it; the saved model does not change."""
    import torch

    device = next(inner.encoder.parameters()).device
    with torch.no_grad():
        features = inner.encoder(torch.zeros(1, 3, image_size, image_size, device=device))
    pixels = min(f.shape[-2] * f.shape[-1] for f in features.values())
    smallest = n % batch_size or batch_size
    inner.fiber_batch_size = max(1, min(int(inner.fiber_batch_size), smallest * pixels))


def _fit_memory_bank(model: Any, images: torch.Tensor, batch_size: int, device: torch.device, report: Progress) -> None:
    import torch
    from anomalib.data import ImageBatch

    model.train()
    transform = model.pre_processor.transform
    n = len(images)
    with torch.no_grad(), quiet():
        for start in range(0, n, batch_size):
            batch = transform(images[start : start + batch_size].to(device))
            model.training_step(ImageBatch(image=batch), start // batch_size)
            report("extract", min(start + batch_size, n) / n)
        report("fit", 0.0)
        with _coreset_progress(report):
            model.fit()
        model._is_fitted = torch.tensor([True], device=device)
    report("fit", 1.0)


@contextlib.contextmanager
def _coreset_progress(report: Progress) -> Iterator[None]:
    """Report PatchCore's coreset selection (most of its training time) as ``("fit", f)``.

    anomalib's ``KCenterGreedy`` loops over ``tqdm(range(coreset_size - 1))``; while
    ``model.fit()`` runs, that name is replaced by an iterator that reports every 1% instead
    of drawing a bar. Where anomalib has no such loop the stage reports only start and end.
    """
    try:
        from anomalib.models.components.sampling import k_center_greedy as kcg
    except ImportError:  # pragma: no cover - depends on the anomalib release
        yield
        return
    if not hasattr(kcg, "tqdm"):  # pragma: no cover - depends on the anomalib release
        yield
        return

    def reporting(iterable: Iterable[Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        items = list(iterable) if not hasattr(iterable, "__len__") else iterable
        n = max(1, len(items))  # type: ignore[arg-type]
        step = max(1, n // 100)
        for i, item in enumerate(items):
            if i % step == 0:
                report("fit", i / n)
            yield item

    original = kcg.tqdm
    kcg.tqdm = reporting
    try:
        yield
    finally:
        kcg.tqdm = original


def _collate_normal(items: list[torch.Tensor]) -> Any:
    """A batch of normal images as anomalib models expect it (label 0, empty masks)."""
    import torch
    from anomalib.data import ImageBatch

    image = torch.stack(items)
    return ImageBatch(
        image=image,
        gt_label=torch.zeros(len(items), dtype=torch.bool),
        gt_mask=torch.zeros((len(items), *image.shape[-2:]), dtype=torch.bool),
    )


def _fit_lightning(
    model: Any, images: torch.Tensor, spec: ModelSpec, epochs: int, device: torch.device, seed: int, report: Progress
) -> None:
    import torch
    from lightning.pytorch import Callback, LightningDataModule, Trainer
    from torch.utils.data import DataLoader, Dataset

    batch_size = min(spec.batch_size, len(images))

    class _Arrays(LightningDataModule):  # what anomalib models read from trainer.datamodule
        train_batch_size = batch_size

        def train_dataloader(self) -> DataLoader[Any]:
            generator = torch.Generator().manual_seed(seed)
            return DataLoader(
                cast("Dataset[torch.Tensor]", list(images)),
                batch_size=batch_size,
                shuffle=True,
                generator=generator,
                collate_fn=_collate_normal,
            )

    class _Progress(Callback):
        def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
            total = max(1, trainer.num_training_batches * epochs)
            done = trainer.current_epoch * trainer.num_training_batches + args[-1] + 1
            report("train", min(1.0, done / total))

    with tempfile.TemporaryDirectory(prefix="lvkit-train-") as root, quiet():
        arguments = dict(model.trainer_arguments)
        arguments.update(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=[device.index or 0] if device.type == "cuda" else 1,
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[_Progress()],
        )
        trainer = Trainer(**arguments)
        trainer.fit(model, datamodule=_Arrays())
    model.to(device)
