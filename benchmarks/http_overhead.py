"""What serving over HTTP costs: ``lvkit.client()`` in process vs boto3 against ``lvkit serve``.

1. Latency at batch 1: the same images through the in-process client and through boto3 against
   a ``lvkit serve`` subprocess on loopback, interleaved (the order alternates every image);
   reports the median of each and the median of the per-image ratios (goal <= 1.25x).
2. Throughput with 8 concurrent boto3 clients (threads, each its own client) against the
   server, for each MinInferenceUnits asked, vs the raw model's best batched throughput in
   process (``detect_many`` at batch sizes 1..16 when the backend has it, else ``detect`` one
   by one) (goal >= 0.9x).

Usage::

    python benchmarks/http_overhead.py --backend fake                 # a fake model, made here
    python benchmarks/http_overhead.py --home ~/.lvkit --project demo-brick --version 1   # a trained one

Numbers depend on the machine; the JSON (``--out``) records it. The clients, the server and
the raw model share the machine's cores, as they would on one host. On a small CPU machine run
it with ``OMP_NUM_THREADS=1`` (the server inherits it): torch's default thread count per
worker oversubscribes the cores and makes every number noise.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import lvkit
from lvkit.backends import load_backend, read_version_manifest


def make_images(n: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """``n`` PNGs of ``size`` (w, h): noise texture, half of them with a bright patch."""
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for i in range(n):
        rgb = rng.integers(40, 120, (h, w, 3), dtype=np.uint8)
        if i % 2:
            y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
            rgb[y:y + h // 4, x:x + w // 4] = 250
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def boto(url: str) -> Any:
    from botocore.config import Config

    return lvkit.boto3_client(url, config=Config(retries={"total_max_attempts": 1}, read_timeout=300,
                                                 max_pool_connections=4))


def host(lv: Any, project: str, version: str, units: int) -> None:
    lv.start_model(ProjectName=project, ModelVersion=version, MinInferenceUnits=units)
    deadline = time.monotonic() + 600
    while True:
        status = lv.describe_model(ProjectName=project, ModelVersion=version)["ModelDescription"]["Status"]
        if status == "HOSTED":
            return
        if status != "STARTING_HOSTING" or time.monotonic() > deadline:
            raise RuntimeError(f"{project}/{version} did not become HOSTED: {status}")
        time.sleep(0.1)


def unhost(lv: Any, project: str, version: str) -> None:
    lv.stop_model(ProjectName=project, ModelVersion=version)
    while lv.describe_model(ProjectName=project, ModelVersion=version)["ModelDescription"]["Status"] != "TRAINED":
        time.sleep(0.05)


def latency(local: Any, remote: Any, project: str, version: str, images: list[bytes], rounds: int) -> dict[str, Any]:
    """Batch 1, interleaved: per image, both paths, the order alternating."""
    def one(client: Any, body: bytes) -> float:
        start = time.perf_counter()
        client.detect_anomalies(ProjectName=project, ModelVersion=version, ContentType="image/png", Body=body)
        return time.perf_counter() - start

    for body in images[:3]:  # warm-up both paths
        one(local, body), one(remote, body)
    t_local, t_http, ratios = [], [], []
    for r in range(rounds):
        for i, body in enumerate(images):
            if (i + r) % 2:
                a, b = one(local, body), one(remote, body)
            else:
                b, a = one(remote, body), one(local, body)
            t_local.append(a)
            t_http.append(b)
            ratios.append(b / a)
    return {
        "requests_each": len(t_local),
        "in_process_median_ms": 1000 * statistics.median(t_local),
        "http_median_ms": 1000 * statistics.median(t_http),
        "ratio_of_medians": statistics.median(t_http) / statistics.median(t_local),
        "median_paired_ratio": statistics.median(ratios),
        "http_p90_ms": 1000 * float(np.percentile(t_http, 90)),
    }


def concurrent(url: str, project: str, version: str, images: list[bytes], clients: int, per_client: int
               ) -> dict[str, Any]:
    """``clients`` threads, each its own boto3 client, ``per_client`` requests each."""
    lvs = [boto(url) for _ in range(clients)]
    for lv in lvs:  # connect and warm up
        lv.detect_anomalies(ProjectName=project, ModelVersion=version, ContentType="image/png", Body=images[0])
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        barrier.wait()
        try:
            for j in range(per_client):
                body = images[(k * per_client + j) % len(images)]
                lvs[k].detect_anomalies(ProjectName=project, ModelVersion=version, ContentType="image/png", Body=body)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return {"clients": clients, "requests": clients * per_client, "seconds": elapsed,
            "images_per_s": clients * per_client / elapsed}


def raw_throughput(artifact_dir: Path, images: list[bytes], device: str, batches: list[int], repeats: int
                   ) -> dict[str, Any]:
    """The model in process, no service: best images/s over batch sizes."""
    backend = load_backend(artifact_dir, device=device)
    many = getattr(backend, "detect_many", None)
    items = [(body, "image/png") for body in images]
    out: dict[str, Any] = {"detect_many": many is not None, "by_batch": {}}
    for size in batches if many is not None else [1]:
        chunks = [items[i:i + size] for i in range(0, len(items), size)][: max(1, repeats * 8 // size)]
        (many(chunks[0]) if many else backend.detect(*items[0]))  # warm-up
        start = time.perf_counter()
        n = 0
        for chunk in chunks:
            if many is not None:
                many(chunk)
            else:
                for body, ct in chunk:
                    backend.detect(body, ct)  # type: ignore[arg-type]  # a literal content type
            n += len(chunk)
        out["by_batch"][size] = n / (time.perf_counter() - start)
    out["best_images_per_s"] = max(out["by_batch"].values())
    out["best_batch"] = max(out["by_batch"], key=out["by_batch"].get)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["fake", "model"], default=None,
                    help="fake: a fake model made in a temp home; model: --home/--project/--version")
    ap.add_argument("--home", default=None)
    ap.add_argument("--project", default=None)
    ap.add_argument("--version", default="1")
    ap.add_argument("--image-size", type=int, default=256, help="fake backend only")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=16)
    ap.add_argument("--units", default="1,2", help="MinInferenceUnits to try for the concurrent phase")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    backend = args.backend or ("model" if args.project else "fake")

    if backend == "fake":
        home = Path(tempfile.mkdtemp(prefix="lvkit-bench-"))
        store = lvkit.Store(home)
        store.create_project("bench")
        from lvkit.backends.fake import FakeBackend

        size = (args.image_size, args.image_size)
        store.add_model("bench", backend="fake", build=lambda d: FakeBackend.save(
            d, segmentation=True, image_size=size, threshold=100.0))
        store.close()
        project, version = "bench", "1"
    else:
        if not args.project:
            ap.error("--project (and --home, --version) name the model version to measure")
        home = Path(args.home).expanduser() if args.home else lvkit.store.default_home()
        project, version = args.project, args.version
    store = lvkit.Store(home)
    record = store.get_model(project, version)
    artifact_dir = store.artifact_dir(record.project, record.version)
    store.close()
    manifest = read_version_manifest(artifact_dir)
    size = tuple(manifest.get("image_size") or (args.image_size, args.image_size))
    images = make_images(args.images, size)  # type: ignore[arg-type]  # (w, h) from the manifest
    version = str(record.version)

    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "backend": manifest.get("backend"), "model": manifest.get("model"), "image_size": list(size),
        "device": args.device,
    }
    server = lvkit.serving(home, device=args.device, max_batch=args.max_batch, max_queue=256, timeout=120)
    try:
        remote = boto(server.url)
        local = lvkit.client(home, device=args.device)
        units = [int(u) for u in args.units.split(",")]
        host(remote, project, version, units[0])
        result["latency_batch1"] = latency(local, remote, project, version, images, args.rounds)
        local.service.close()
        result["concurrent"] = {}
        for u in units:
            if u != units[0]:
                unhost(remote, project, version)
                host(remote, project, version, u)
            result["concurrent"][u] = concurrent(server.url, project, version, images, args.clients, args.per_client)
        unhost(remote, project, version)
    finally:
        server.stop(timeout=120)
    raw = raw_throughput(artifact_dir, images, args.device, [1, 2, 4, 8, 16], repeats=args.per_client)
    if backend == "fake":
        shutil.rmtree(home, ignore_errors=True)
    result["raw_model"] = raw
    best_http = max(c["images_per_s"] for c in result["concurrent"].values())
    result["http_throughput_vs_raw"] = best_http / raw["best_images_per_s"]

    lat = result["latency_batch1"]
    print(f"backend {result['backend']} {result.get('model') or ''} {size[0]}x{size[1]} on {args.device}, "
          f"{os.cpu_count()} CPUs")
    print(f"batch 1: in process {lat['in_process_median_ms']:.2f} ms, HTTP {lat['http_median_ms']:.2f} ms "
          f"(median paired ratio {lat['median_paired_ratio']:.2f}x, goal <= 1.25x)")
    for u, c in result["concurrent"].items():
        print(f"{c['clients']} clients, MinInferenceUnits {u}: {c['images_per_s']:.1f} images/s")
    print(f"raw model: {raw['best_images_per_s']:.1f} images/s (batch {raw['best_batch']}, "
          f"detect_many {raw['detect_many']}); HTTP/raw {result['http_throughput_vs_raw']:.2f}x (goal >= 0.9x)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
