"""Throughput and latency of one anomalib version on torch eager, OpenVINO and ONNX Runtime.

Exports the version (``lvkit.backends.anomalib.export.export_version``) to each runtime and
precision asked for, then times ``backend.raw(batch)`` (decoded uint8 images in, raw scores and
maps out: the same work on every runtime, pre-processing and map resizing included) on the
same images (the version's dataset images: all its splits) at batch 1 and 8, interleaving the
runtimes round by round. Prints images/s and p50/p99 latency per call, with the ratio of
images/s to torch eager. Threads are set explicitly (torch, OpenMP, OpenVINO, ONNX Runtime);
CUDA rows (torch, ONNX Runtime's CUDA provider) appear only when torch sees a GPU.

    python benchmarks/runtimes.py                                   # trains a small model first
    python benchmarks/runtimes.py --home ~/.lvkit --project demo-brick --version 1 --precisions fp32,int8
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=None, help="store with a trained anomalib version (default: train one)")
    parser.add_argument("--project", default="bench")
    parser.add_argument("--version", default="latest")
    parser.add_argument("--image-size", type=int, default=128, help="model side when training one")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every runtime")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32, fp16 (OpenVINO), int8")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over the images per batch size")
    return parser.parse_args()


def _time(backend: Any, batches: list[Any]) -> list[float]:
    out = []
    for batch in batches:
        t0 = time.perf_counter()
        backend.raw(batch)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    args = _parse()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts its pool
    import numpy as np
    import torch

    import lvkit
    from lvkit.backends import load_backend, read_version_manifest
    from lvkit.backends.anomalib.export import export_version
    from lvkit.images import read_rgb

    torch.set_num_threads(args.threads)
    home = args.home
    if home is None:
        work = Path(tempfile.mkdtemp(prefix="lvkit-runtimes-"))
        data = lvkit.datasets.generate(work / "data", categories=("brick",)) / "brick"
        home = work / "home"
        lvkit.train(args.project, data, image_size=args.image_size, home=home, device="cpu", progress=False)
    store = lvkit.Store(home)
    version = str(store.get_model(args.project, args.version).version)
    source = store.artifact_dir(args.project, int(version))
    manifest = read_version_manifest(source)
    size = tuple(manifest["image_size"])
    paths = sorted({p for split in manifest["splits"].values() for p in split if Path(p).is_file()})
    images = [im for im in (read_rgb(p) for p in paths) if (im.shape[1], im.shape[0]) == size]

    rows: list[tuple[str, Any]] = [("torch eager cpu", load_backend(source, device="cpu"))]
    if torch.cuda.is_available():
        rows.append(("torch eager cuda", load_backend(source, device="cuda")))
    for precision in args.precisions.split(","):
        for fmt in ("openvino", "onnx"):
            if fmt == "onnx" and precision == "fp16":
                continue
            t0 = time.perf_counter()
            new = export_version(store, args.project, version, format=fmt, precision=precision)
            print(f"exported {fmt} {precision} as version {new} in {time.perf_counter() - t0:.0f} s", flush=True)
            folder = store.artifact_dir(args.project, int(new))
            rows.append((f"{fmt} {precision} cpu", load_backend(folder, device="cpu", threads=args.threads)))
            if fmt == "onnx" and torch.cuda.is_available():
                try:
                    rows.append((f"{fmt} {precision} cuda", load_backend(folder, device="cuda")))
                except ValueError as exc:  # onnxruntime without its CUDA provider
                    print(f"no onnx cuda row: {exc}")

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={args.threads}, "
          f"torch {torch.__version__}, {len(images)} images of {size[0]}x{size[1]}, version {version}")
    print(f"{'runtime':<22}{'batch':>6}{'images/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs torch':>10}")
    for b in (int(x) for x in args.batches.split(",")):
        batches = [np.stack([images[(i + j) % len(images)] for j in range(b)]) for i in range(0, len(images), b)]
        times: dict[str, list[float]] = {name: [] for name, _ in rows}
        for name, backend in rows:
            _time(backend, batches[:3])  # warm-up
        for _ in range(args.rounds):
            for name, backend in rows:  # interleaved: a load spike hits every runtime alike
                times[name] += _time(backend, batches)
        base = None
        for name, _ in rows:
            t = np.array(times[name])
            rate = b * len(t) / t.sum()
            base = base or rate
            print(f"{name:<22}{b:>6}{rate:>10.1f}{np.percentile(t, 50) * 1e3:>9.1f}{np.percentile(t, 99) * 1e3:>9.1f}"
                  f"{rate / base:>9.2f}x")


if __name__ == "__main__":
    main()
