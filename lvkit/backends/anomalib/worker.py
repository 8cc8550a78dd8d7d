"""Train one anomalib model in a process of its own: ``python -m lvkit.backends.anomalib.worker CONFIG.json``.

Why a process: PatchCore's coreset selection allocates and frees a large tensor per step, and
glibc's default allocator then keeps growing the heap (24 GB and an OOM kill for 40 images).
A 1 MiB mmap threshold (``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment at process start,
or ``mallopt(M_MMAP_THRESHOLD, 1 MiB)``) keeps it near 1 GB, but roughly halves the speed of
everything else, so serving processes must not have it. The parent,
:func:`train_in_subprocess`, sets the variable in the child's environment only; the worker
also calls ``mallopt`` first thing, for runs started by hand.

Config (JSON object):

``model`` (str, default "patchcore"), ``backbone`` (str | null), ``layers`` (list | null),
``image_size`` (int, 256), ``epochs`` (int | null), ``seed`` (int, 0), ``device`` ("auto"),
``model_kwargs`` (object, {}), ``train_images`` (list of paths, required), ``weights_dir``
(path, required), ``output_dir`` (path, required: gets ``model.pt`` + ``config.json``),
``predict_images`` (list of paths, [] ) and ``predictions`` (path, default
``<output_dir>/../predictions.npz``): raw ``scores`` (float32, (N,)), ``maps`` (float16,
(N, H, W); images of other sizes than the first have their maps resized to it) and ``sizes``
((N, 2) original H, W) of the prediction images.

Protocol: one JSON object per stdout line. ``{"stage": S, "progress": F}`` with S in load,
build, extract/fit (memory-bank models) or train (others), save, predict; then
``{"stage": "done", "progress": 1.0, "result": {...}}``. On failure the exit status is 1
and the last line is ``{"error": MESSAGE, "type": EXCEPTION_NAME}``. Everything libraries
print goes to stderr.

This module imports nothing heavy at the top: torch loads only after the allocator is set.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["ALLOCATOR_ENV", "TrainingFailed", "child_env", "main", "train_in_subprocess"]

#: the environment that keeps PatchCore's coreset selection near 1 GB (set at process start)
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576"}
_M_MMAP_THRESHOLD = -3  # glibc malloc.h
_FIX_SWITCH = "LVKIT_ALLOCATOR_FIX"  # "0": measure without the fix
_REQUIRED = ("train_images", "weights_dir", "output_dir")


class TrainingFailed(RuntimeError):
    """The training process failed; ``error_type`` is the child's exception class name."""

    def __init__(self, message: str, *, error_type: str = "", returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.returncode = returncode
        self.stderr = stderr


def _set_allocator() -> bool:
    """``mallopt(M_MMAP_THRESHOLD, 1 MiB)``; False where libc is not glibc."""
    if os.environ.get(_FIX_SWITCH, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(ALLOCATOR_ENV["MALLOC_MMAP_THRESHOLD_"])))


# --------------------------------------------------------------------------- child side


def _read_rgb(path: str) -> Any:
    from lvkit.images import read_rgb

    if not Path(path).is_file():
        raise FileNotFoundError(f"image not found: {path}")
    return read_rgb(path)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _run(config: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    missing = [key for key in _REQUIRED if not config.get(key)]
    if missing:
        raise ValueError(f"config lacks {missing}")
    emit({"stage": "load", "progress": 0.0})
    paths = [str(p) for p in config["train_images"]]
    images = []
    for i, path in enumerate(paths):
        images.append(_read_rgb(path))
        emit({"stage": "load", "progress": (i + 1) / len(paths)})

    import numpy as np

    from lvkit.backends.anomalib import models as core
    from lvkit.backends.anomalib.fit import fit

    timings: dict[str, float] = {}
    start = time.perf_counter()
    emit({"stage": "build", "progress": 0.0})
    model = core.build_model(
        config.get("model") or core.DEFAULT_MODEL,
        backbone=config.get("backbone"),
        layers=config.get("layers"),
        image_size=int(config.get("image_size") or 256),
        weights_dir=config["weights_dir"],
        seed=int(config.get("seed") or 0),
        **dict(config.get("model_kwargs") or {}),
    )
    emit({"stage": "build", "progress": 1.0})
    timings["build_s"] = time.perf_counter() - start
    start = time.perf_counter()
    device = config.get("device") or "auto"
    fit(
        model,
        images,
        device=device,
        epochs=config.get("epochs"),
        seed=int(config.get("seed") or 0),
        progress=lambda stage, fraction: emit({"stage": stage, "progress": round(float(fraction), 4)}),
    )
    timings["fit_s"] = time.perf_counter() - start
    emit({"stage": "save", "progress": 0.0})
    core.save_model(model, config["output_dir"])
    emit({"stage": "save", "progress": 1.0})

    predict = [str(p) for p in config.get("predict_images") or []]
    target = Path(config.get("predictions") or Path(config["output_dir"]).parent / "predictions.npz")
    start = time.perf_counter()
    scores = np.zeros(len(predict), np.float32)
    sizes = np.zeros((len(predict), 2), np.int64)
    maps: Any = None
    batch = 8
    for begin in range(0, len(predict), batch):
        group = [_read_rgb(p) for p in predict[begin : begin + batch]]
        if len({g.shape for g in group}) == 1:
            parts = [core.predict_raw(model, np.stack(group), device=device)]
        else:
            parts = [core.predict_raw(model, g[None], device=device) for g in group]
        s = np.concatenate([part[0] for part in parts])
        m_all = [row for part in parts for row in part[1]]
        for j, image in enumerate(group):
            m = m_all[j]
            if maps is None:
                maps = np.zeros((len(predict), *m.shape), np.float16)
            if m.shape != maps.shape[1:]:
                m = _resize_map(m, maps.shape[1:])
            scores[begin + j], maps[begin + j], sizes[begin + j] = s[j], m, image.shape[:2]
        emit({"stage": "predict", "progress": min(begin + batch, len(predict)) / len(predict)})
    if maps is None:
        maps = np.zeros((0, 0, 0), np.float16)
    timings["predict_s"] = time.perf_counter() - start
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".predictions.", suffix=".npz", dir=target.parent)
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, scores=scores, maps=maps, sizes=sizes, paths=np.array(predict, dtype=str))
    os.replace(tmp, target)
    return {
        "output_dir": str(config["output_dir"]),
        "predictions": str(target),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "device": core.resolve_device(device),
        "allocator_fix": os.environ.get(_FIX_SWITCH, "1") != "0",
    }


def _resize_map(amap: Any, shape: tuple[int, ...]) -> Any:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(amap.astype("float32"))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker; returns the exit status."""
    _set_allocator()
    args = sys.argv[1:] if argv is None else argv
    # stdout is the protocol channel: keep a private copy and send fd 1 (library prints) to stderr
    channel: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)

    def emit(event: dict[str, Any]) -> None:
        channel.write(json.dumps(event) + "\n")
        channel.flush()

    try:
        if len(args) != 1:
            raise ValueError("usage: python -m lvkit.backends.anomalib.worker CONFIG.json")
        config = json.loads(Path(args[0]).read_text())
        if not isinstance(config, dict):
            raise ValueError(f"expected a JSON object in {args[0]}, got {type(config).__name__}")
        result = _run(config, emit)
    except Exception as exc:  # the child's boundary: report any failure to the parent as JSON
        import traceback

        traceback.print_exc(file=sys.stderr)
        emit({"error": str(exc) or type(exc).__name__, "type": type(exc).__name__})
        return 1
    emit({"stage": "done", "progress": 1.0, "result": result})
    return 0


# --------------------------------------------------------------------------- parent side


def _reraise(event: dict[str, Any], returncode: int, stderr: str) -> TrainingFailed:
    return TrainingFailed(
        f"training failed ({event.get('type', 'error')}): {event.get('error')}",
        error_type=str(event.get("type", "")),
        returncode=returncode,
        stderr=stderr,
    )


def child_env(*, allocator_fix: bool) -> dict[str, str]:
    """The training child's environment: this one, the allocator settings, and ``PYTHONPATH``
    starting with the folder that holds the ``lvkit`` package (never ``lvkit/`` itself, whose
    modules would shadow libraries of the same name: ``lvkit/packaging.py`` hid ``packaging``)."""
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if allocator_fix:
        env.update(ALLOCATOR_ENV)
    env[_FIX_SWITCH] = "1" if allocator_fix else "0"
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def train_in_subprocess(
    config: dict[str, Any],
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    allocator_fix: bool = True,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Train in a fresh ``python -m lvkit.backends.anomalib.worker`` process and wait for it.

    Parameters
    ----------
    config : dict
        The worker's config (see the module docstring); paths may be ``Path`` objects.
    on_progress : callable(event: dict), optional
        Called with every ``{"stage": ..., "progress": ...}`` line the worker prints.
    allocator_fix : bool, default True
        Start the child with ``MALLOC_MMAP_THRESHOLD_=1048576``; ``False`` only to measure.
    timeout : float, optional
        Seconds before the child is killed.

    Returns
    -------
    dict
        The worker's result: ``output_dir``, ``predictions``, ``timings``, ``peak_rss_mb``, ...

    Raises
    ------
    TrainingFailed
        A ``RuntimeError`` with the child's message (``error_type`` names its exception, e.g.
        ``FileNotFoundError`` for a missing image, ``BackendUnavailableError`` for missing
        weights), or its exit status and the end of its stderr when it died without one.
    """
    env = child_env(allocator_fix=allocator_fix)
    with tempfile.TemporaryDirectory(prefix="lvkit-worker-") as work:
        config_path = Path(work) / "config.json"
        config_path.write_text(json.dumps(config, default=str))
        proc = subprocess.Popen(
            [sys.executable, "-m", "lvkit.backends.anomalib.worker", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=work,  # anything a library writes to the cwd lands here and is removed
        )
        tail: deque[str] = deque(maxlen=60)
        reader = threading.Thread(target=lambda: tail.extend(proc.stderr or ()), daemon=True)
        reader.start()
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    tail.append(line)
                    continue
                if "error" in event:
                    error = event
                elif event.get("stage") == "done":
                    result = dict(event.get("result") or {})
                elif on_progress is not None:
                    on_progress(event)
            returncode = proc.wait()
        finally:
            if timer:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
    stderr = "".join(tail)
    if error is not None:
        raise _reraise(error, returncode, stderr)
    if returncode != 0 or result is None:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        hint = " (out of memory?)" if returncode == -9 else ""
        last = stderr.strip().splitlines()[-5:]
        raise TrainingFailed(
            f"the training process {how}{hint}: {' | '.join(last)}", returncode=returncode, stderr=stderr
        )
    if on_progress is not None:
        on_progress({"stage": "done", "progress": 1.0})
    return result


if __name__ == "__main__":
    sys.exit(main())
