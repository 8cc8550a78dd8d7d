"""The anomalib backend: train anomalib image models and serve them as DetectAnomalies.

One module per job, imported in this order (no module imports one below it):

* :mod:`~lvkit.backends.anomalib.local_dir` and :mod:`~lvkit.backends.anomalib.model_downloads`:
  the timm local-dir folders backbone weights are staged in, and the other files anomalib
  downloads (DRAEM's textures, EfficientAd's teacher and Imagenette), checked up front.
* :mod:`~lvkit.backends.anomalib.weights`: offline backbone weights.
* :mod:`~lvkit.backends.anomalib.construction`: the model table and ``build_model``.
* :mod:`~lvkit.backends.anomalib.models`: predict, save and load anomalib models (numpy in,
  raw scores and maps out; nothing of the contract); it re-exports the build names.
* :mod:`~lvkit.backends.anomalib.fit`: train a built model on normal images.
* :mod:`~lvkit.backends.anomalib.worker`: run build + fit + predict in a child process with
  the allocator setting PatchCore needs.
* :mod:`~lvkit.backends.anomalib.decision` and :mod:`~lvkit.backends.anomalib.regions`: the
  image/pixel thresholds and confidence, and the labeller of predicted regions.
* :mod:`~lvkit.backends.anomalib.train`: :class:`AnomalibTrainer`, what ``lvkit.train`` runs to
  make a version (the checks and splits every backend shares stay in :mod:`lvkit.training`).
* :mod:`~lvkit.backends.anomalib.backend`: :class:`AnomalibBackend`, a trained version
  answering DetectAnomalies.
* :mod:`~lvkit.backends.anomalib.exported`: ``OpenVINOBackend`` and ``OnnxBackend``, an exported
  version answering with AnomalibBackend's decision on another runtime (no torch needed).
* :mod:`~lvkit.backends.anomalib.network`: the exported network: a model traced to one ONNX
  graph with a dynamic batch, converted to OpenVINO, quantized to int8.
* :mod:`~lvkit.backends.anomalib.export`: ``export_version`` (``lvkit export``), a trained
  version traced to OpenVINO or ONNX as a new version, its decision re-fitted for fp16/int8.

Nothing here imports torch or anomalib at import time, and this package imports its modules
only when a name is asked for, so the training child process starts lean.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lvkit.backends.anomalib.backend import AnomalibBackend
    from lvkit.backends.anomalib.train import AnomalibTrainer

__all__ = ["AnomalibBackend", "AnomalibTrainer"]

_HOMES = {"AnomalibBackend": "backend", "AnomalibTrainer": "train"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
