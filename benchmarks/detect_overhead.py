"""Overhead of lvkit's DetectAnomalies over the raw anomalib forward pass, same model and images.

Interleaves, image by image, (a) ``backends.anomalib.models.predict_raw`` on the already decoded image
(torch forward of the model: the baseline) and (b) ``lvkit.client().detect_anomalies`` on the
PNG bytes (validation, decode, forward, thresholds, region labels, mask PNG), and prints the
median of the per-image time ratios b/a. Goal: <= 1.10.

    python benchmarks/detect_overhead.py                      # trains a model on the benchmark first
    python benchmarks/detect_overhead.py --home ~/.lvkit --project demo-brick --version 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=None, help="store with a trained version (default: train one in a temp dir)")
    parser.add_argument("--project", default="bench")
    parser.add_argument("--version", default="latest")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the test images")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import lvkit
    from lvkit.backends.anomalib import models as core
    from lvkit.images import decode_image

    work = Path(tempfile.mkdtemp(prefix="lvkit-bench-"))
    data = lvkit.datasets.generate(work / "data", categories=("brick",)) / "brick"
    home = args.home or work / "home"
    if args.home is None:
        lvkit.train(args.project, data, image_size=128, home=home, device=args.device)
    lv = lvkit.client(home, device=args.device)
    d = lv.describe_model(ProjectName=args.project, ModelVersion=args.version)["ModelDescription"]
    if d["Status"] != "HOSTED":
        lv.start_model(ProjectName=args.project, ModelVersion=args.version, MinInferenceUnits=1)
    backend = lv.service.loaded_backend(args.project, args.version)
    bodies = [p.read_bytes() for p in sorted((data / "test").glob("*/*.png"))]
    arrays = [decode_image(b, "image/png") for b in bodies]
    call = dict(ProjectName=args.project, ModelVersion=args.version, ContentType="image/png")
    for body, rgb in zip(bodies[:3], arrays[:3]):  # warm-up
        core.predict_raw(backend.model, rgb[None], device=backend.device)
        lv.detect_anomalies(Body=body, **call)

    raw_t, api_t = [], []
    for _ in range(args.rounds):
        for body, rgb in zip(bodies, arrays):
            t0 = time.perf_counter()
            core.predict_raw(backend.model, rgb[None], device=backend.device)
            t1 = time.perf_counter()
            lv.detect_anomalies(Body=body, **call)
            t2 = time.perf_counter()
            raw_t.append(t1 - t0)
            api_t.append(t2 - t1)
    if d["Status"] != "HOSTED":
        lv.stop_model(ProjectName=args.project, ModelVersion=args.version)
    ratios = np.array(api_t) / np.array(raw_t)
    print(f"images: {len(bodies)} x {args.rounds} rounds, model {backend.manifest['model']} "
          f"input {backend.manifest['model_image_size']} px on {backend.device}")
    print(f"raw anomalib forward  median {1000 * statistics.median(raw_t):7.2f} ms")
    print(f"lvkit detect_anomalies median {1000 * statistics.median(api_t):7.2f} ms")
    print(f"median per-image ratio lvkit/raw: {np.median(ratios):.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
