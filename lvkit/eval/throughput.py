"""Throughput and latency of anything that answers DetectAnomalies: the one impure module of ``lvkit.eval``.

:func:`throughput` times a target with an injectable ``clock`` (``time.perf_counter`` by
default), after ``warmup`` untimed batches, over ``repeats`` timed batches per batch size, and
reports percentiles (never a bare mean), images per second, the device and a
:func:`fingerprint` of the machine. How a "batch" of ``B`` images runs depends on the target:

- ``"batch"``: a backend exposing ``raw(batch)``, ``check_size`` and ``result`` (the anomalib
  backend) decodes the ``B`` bodies, runs the model once on the stacked batch, then
  post-processes each image; the stages are timed separately (``decode_s``, ``model_s``,
  ``postprocess_s``, ``encode_s``). The PNG encode happens inside ``result``; it is timed by
  re-encoding the returned mask once more and subtracted from ``result``'s time (clipped at
  0), so ``postprocess_s`` is an estimate. A backend with ``detect_many(bodies, content_types)`` is
  called once per batch (no stages).
- ``"concurrent"``: any other target (``lvkit.client()``, a boto3 client against ``lvkit
  serve`` or the service, a plain backend) gets ``B`` requests at once from a pool of ``B``
  threads; the batch time is the time until the last answer.

The clock is read only in the calling thread, so a fake clock gives deterministic output.
When the backend's ``device`` is CUDA, ``torch.cuda.synchronize()`` runs before every clock
read. torch is never imported here: it is used only if the target already imported it.
pandas and ``lvkit.images`` are imported inside the functions.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.eval.checks import check_positive_int
from lvkit.eval.run import detect_one, exposes_raw
from lvkit.shapes import SUFFIX_TYPES

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["fingerprint", "throughput"]

_STAGES = ("decode_s", "model_s", "postprocess_s", "encode_s")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: fall back to what platform knows
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def fingerprint() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, GPU, Python and library versions.

    The GPU is named only when torch is already imported (by a model backend) and sees CUDA;
    versions come from the installed package metadata, without importing the packages.

    Returns
    -------
    dict
        ``cpu, cores, gpu, python, platform, numpy, torch, anomalib, lvkit`` (``None`` where
        unknown or not installed).

    See Also
    --------
    throughput : Adds these to every row.

    Examples
    --------
    >>> fp = fingerprint()
    >>> sorted(fp)
    ['anomalib', 'cores', 'cpu', 'gpu', 'lvkit', 'numpy', 'platform', 'python', 'torch']
    >>> fp["cores"] == os.cpu_count()
    True
    """
    gpu = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
        "platform": platform.platform(), "numpy": _version("numpy"), "torch": _version("torch"),
        "anomalib": _version("anomalib"), "lvkit": _version("lvkit"),
    }


def _bodies(images: Any) -> list[tuple[bytes, str]]:
    """``(body, content_type)`` pairs from bytes, paths, samples or a Dataset."""
    out = []
    for item in getattr(images, "samples", images):
        if isinstance(item, tuple):
            body, ct = item
        elif isinstance(item, (bytes, bytearray)):
            body, ct = bytes(item), "image/jpeg" if bytes(item[:3]) == b"\xff\xd8\xff" else "image/png"
        else:
            path = Path(getattr(item, "image_path", item))
            body, ct = path.read_bytes(), SUFFIX_TYPES.get(path.suffix.lower(), "image/png")
        out.append((body, ct))
    if not out:
        raise ValueError("images: expected at least one image, got none")
    return out


def _synchronizer(target: Any) -> Callable[[], None]:
    device = str(getattr(target, "device", "") or "")
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None:
        return lambda: torch.cuda.synchronize()
    return lambda: None


def _mode(target: Any) -> str:
    if hasattr(target, "detect_anomalies"):
        return "concurrent"
    if exposes_raw(target) or callable(getattr(target, "detect_many", None)):
        return "batch"
    return "concurrent"


class _Timer:
    """Runs one batch on a target and returns its wall time and, where instrumented, stage times."""

    def __init__(self, target: Any, *, clock: Callable[[], float], project: str | None, version: str) -> None:
        self.target, self.clock, self.project, self.version = target, clock, project, version
        self.sync = _synchronizer(target)
        self.mode = _mode(target)
        self.pool: ThreadPoolExecutor | None = None

    def _one(self, item: tuple[bytes, str]) -> Any:
        return detect_one(self.target, item[0], item[1], project=self.project, version=self.version)

    def run(self, batch: Sequence[tuple[bytes, str]]) -> tuple[float, dict[str, float]]:
        if self.mode == "batch" and exposes_raw(self.target):
            return self._staged(batch)
        self.sync()
        t0 = self.clock()
        if self.mode == "batch":
            self.target.detect_many([b for b, _ in batch], [c for _, c in batch])
        elif len(batch) == 1:
            self._one(batch[0])
        else:
            assert self.pool is not None
            list(self.pool.map(self._one, batch))
        self.sync()
        return self.clock() - t0, {}

    def _staged(self, batch: Sequence[tuple[bytes, str]]) -> tuple[float, dict[str, float]]:
        from lvkit.images import DEFAULT_MAX_BYTES, decode_image, encode_png

        b = self.target
        self.sync()
        t0 = self.clock()
        rgbs = []
        for body, ct in batch:
            rgb = decode_image(body, ct, max_bytes=getattr(b, "max_bytes", DEFAULT_MAX_BYTES))
            b.check_size(rgb)
            rgbs.append(rgb)
        t1 = self.clock()
        scores, maps = b.raw(np.stack(rgbs))
        self.sync()
        t2 = self.clock()
        results = [b.result(rgb, float(s), m) for rgb, s, m in zip(rgbs, scores, maps)]
        t3 = self.clock()
        masks = [_mask_rgb(r.anomaly_mask) for r in results if r.anomaly_mask is not None]
        t4 = self.clock()
        for m in masks:
            encode_png(m)
        t5 = self.clock()
        encode = t5 - t4
        return t3 - t0, {"decode_s": t1 - t0, "model_s": t2 - t1, "postprocess_s": max(0.0, (t3 - t2) - encode),
                         "encode_s": encode}


def _mask_rgb(png: bytes) -> Any:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _summary(walls: Sequence[float], stages: Sequence[Mapping[str, float]], batch_size: int) -> dict[str, Any]:
    """Percentiles of the batch times, images per second, and median stage time per image."""
    w = np.asarray(walls, dtype=np.float64)
    p50, p95, p99 = np.percentile(w, [50, 95, 99])
    out: dict[str, Any] = {"latency_p50_s": float(p50), "latency_p95_s": float(p95), "latency_p99_s": float(p99),
                           "images_per_s": float(batch_size * w.size / w.sum()) if w.sum() > 0 else float("nan")}
    for stage in _STAGES:
        values = [s[stage] for s in stages if stage in s]
        out[stage] = float(np.median(values)) / batch_size if values else float("nan")
    out["latencies_s"] = w.tolist()
    return out


def throughput(
    target: Any,
    images: Iterable[Any],
    *,
    batch_sizes: Sequence[int] = (1, 8, 16),
    warmup: int = 2,
    repeats: int = 20,
    clock: Callable[[], float] = time.perf_counter,
    project: str | None = None,
    version: str = "latest",
) -> pd.DataFrame:
    """Latency percentiles and images per second of one or several DetectAnomalies targets.

    For each target and batch size, ``warmup`` untimed batches then ``repeats`` timed batches
    of ``B`` images (cycling through ``images``) run as the module docstring describes. At
    batch size 1 the batch time is the latency of one request.

    Parameters
    ----------
    target : client, backend, or mapping of str to either
        What to time; a mapping times several side by side (its keys name the rows), e.g.
        ``{"in-process": backend, "http": boto3_client}``.
    images : Dataset, or iterable of bytes, paths, Samples or (body, content_type)
        The request bodies (PNG or JPEG, the model's size).
    batch_sizes : sequence of int, default (1, 8, 16)
        Batch sizes (concurrent requests for clients).
    warmup : int, default 2
        Untimed batches before each batch size's timed ones.
    repeats : int, default 20
        Timed batches per batch size.
    clock : callable, default time.perf_counter
        Seconds as a float; inject a fake clock in tests.
    project : str, optional
        Project of a client target.
    version : str, default "latest"
        Model version of a client target.

    Returns
    -------
    DataFrame
        One row per target and batch size: ``target, mode, device, batch_size, repeats,
        latency_p50_s, latency_p95_s, latency_p99_s`` (per batch), ``images_per_s``,
        ``decode_s, model_s, postprocess_s, encode_s`` (median seconds per image; nan where
        not instrumented), ``latencies_s`` (every batch time, for
        :func:`lvkit.eval.plots.latency_histogram`), then the :func:`fingerprint` columns.

    Raises
    ------
    ValueError
        If an option is invalid, there are no images, or a client target has no ``project``.

    See Also
    --------
    fingerprint, lvkit.eval.run

    Examples
    --------
    >>> import numpy as np
    >>> from lvkit.backends.fake import FakeBackend, brightness_handler
    >>> from lvkit.images import encode_png
    >>> bodies = [encode_png(np.full((64, 64, 3), v, np.uint8)) for v in (20, 220)]
    >>> ticks = iter(range(1000))
    >>> table = throughput(FakeBackend(brightness_handler()), bodies, batch_sizes=(1, 2), warmup=1,
    ...                    repeats=3, clock=lambda: float(next(ticks)))
    >>> table[["batch_size", "latency_p50_s", "images_per_s"]]
       batch_size  latency_p50_s  images_per_s
    0           1            1.0           1.0
    1           2            1.0           2.0
    """
    import pandas as pd

    targets = dict(target) if isinstance(target, Mapping) else {type(target).__name__: target}
    sizes = [check_positive_int("batch_sizes", b) for b in batch_sizes]
    warmup = check_positive_int("warmup", warmup, minimum=0)
    repeats = check_positive_int("repeats", repeats)
    bodies = _bodies(images)
    fp = fingerprint()
    rows = []
    for name, t in targets.items():
        if hasattr(t, "detect_anomalies") and project is None:
            raise ValueError(f"project: expected a project name for the client target {name!r}, got None")
        timer = _Timer(t, clock=clock, project=project, version=version)
        k = 0
        for b in sizes:
            timer.pool = ThreadPoolExecutor(max_workers=b) if timer.mode == "concurrent" and b > 1 else None
            try:
                walls, stages = [], []
                for r in range(warmup + repeats):
                    batch = [bodies[(k + i) % len(bodies)] for i in range(b)]
                    k += b
                    wall, stage = timer.run(batch)
                    if r >= warmup:
                        walls.append(wall)
                        stages.append(stage)
            finally:
                if timer.pool is not None:
                    timer.pool.shutdown()
            device = getattr(t, "device", None)
            rows.append({"target": name, "mode": timer.mode, "device": None if device is None else str(device),
                         "batch_size": b, "repeats": repeats, **_summary(walls, stages, b), **fp})
    return pd.DataFrame(rows)
