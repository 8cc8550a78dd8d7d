"""throughput: aggregation with a fake clock, the instrumented path, clients, a real smoke run."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

from lvkit.backends.fake import FakeBackend, brightness_handler
from lvkit.eval import fingerprint, throughput
from lvkit.eval.throughput import _summary
from lvkit.images import encode_png


def bodies(n: int = 3) -> list[bytes]:
    return [encode_png(np.full((64, 64, 3), 40 * (i + 1), np.uint8)) for i in range(n)]


class StepClock:
    """Each read advances by the next of ``steps`` (cycled)."""

    def __init__(self, steps) -> None:
        self.now, self.steps, self.reads = 0.0, itertools.cycle(steps), 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += next(self.steps)
        return self.now


def test_summary_percentiles_and_rates() -> None:
    walls = [0.01 * k for k in range(1, 101)]
    out = _summary(walls, [{"model_s": 0.4}, {"model_s": 0.8}, {"model_s": 0.6}], 4)
    assert out["latency_p50_s"] == pytest.approx(0.505) and out["latency_p95_s"] == pytest.approx(0.9505)
    assert out["latency_p99_s"] == pytest.approx(0.9901)
    assert out["images_per_s"] == pytest.approx(4 * 100 / sum(walls))
    assert out["model_s"] == pytest.approx(0.6 / 4) and np.isnan(out["decode_s"])


def test_fake_clock_gives_deterministic_rows() -> None:
    # batch times alternate 1 s and 3 s: two clock reads a batch, the first read of a batch
    # ends the previous gap, so walls are the second step of each pair
    def table():
        clock = StepClock([0.5, 1.0, 0.5, 3.0])
        return throughput(FakeBackend(brightness_handler()), bodies(), batch_sizes=(1, 4), warmup=0, repeats=4,
                          clock=clock), clock
    first, clock = table()
    assert clock.reads == 2 * 4 * 2
    again, _ = table()
    assert first.drop(columns=["cpu"]).equals(again.drop(columns=["cpu"]))
    one, four = first.iloc[0], first.iloc[1]
    assert one["mode"] == "concurrent" and one["latencies_s"] == [1.0, 3.0, 1.0, 3.0]
    assert one["latency_p50_s"] == 2.0 and one["images_per_s"] == pytest.approx(4 / 8)
    assert four["images_per_s"] == pytest.approx(16 / 8)
    assert np.isnan(one["decode_s"]) and one["cores"] > 0


def test_instrumented_backend_times_each_stage(raw_fake) -> None:
    clock = StepClock([1.0, 2.0, 4.0, 8.0, 16.0, 2.0])  # (gap), decode, model, result, (mask decode), encode
    t = throughput(raw_fake, bodies(), batch_sizes=(2,), warmup=1, repeats=3, clock=clock)
    row = t.iloc[0]
    assert row["mode"] == "batch" and row["device"] == "cpu" and raw_fake.calls == 4  # one model call a batch
    # reads t0..t5 advance 1, 2, 4, 8, 16, 2: decode = 2, model = 4, result = 8, encode = 2 (per batch of 2)
    assert (row["decode_s"], row["model_s"], row["encode_s"]) == (1.0, 2.0, 1.0)
    assert row["postprocess_s"] == 3.0  # result minus the re-encode

    assert row["latencies_s"] == [14.0] * 3


def test_clients_side_by_side_with_backends(lv, raw_fake) -> None:
    lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)
    t = throughput({"client": lv, "backend": FakeBackend(brightness_handler()), "raw": raw_fake}, bodies(4),
                   batch_sizes=(1, 3), warmup=1, repeats=3, project="demo", version="1")
    assert t["target"].tolist() == ["client", "client", "backend", "backend", "raw", "raw"]
    assert t["mode"].tolist() == ["concurrent"] * 4 + ["batch"] * 2
    assert (t["images_per_s"] > 0).all() and (t["latency_p50_s"] <= t["latency_p99_s"]).all()
    assert t.loc[4, "decode_s"] > 0 and t.loc[4, "model_s"] > 0
    with pytest.raises(ValueError, match="project"):
        throughput(lv, bodies(), batch_sizes=(1,), repeats=1)


def test_images_from_paths_samples_and_options(brick) -> None:
    t = throughput(FakeBackend(brightness_handler()), brick, batch_sizes=(1,), warmup=0, repeats=2)
    assert t.loc[0, "repeats"] == 2 and len(t.loc[0, "latencies_s"]) == 2
    paths = [s.image_path for s in brick.samples[:2]]
    assert len(throughput(FakeBackend(brightness_handler()), paths, batch_sizes=(2,), repeats=1)) == 1
    with pytest.raises(ValueError, match="at least one image"):
        throughput(FakeBackend(brightness_handler()), [], repeats=1)
    with pytest.raises(ValueError, match="batch_sizes"):
        throughput(FakeBackend(brightness_handler()), bodies(), batch_sizes=(0,))


def test_fingerprint() -> None:
    fp = fingerprint()
    assert fp["lvkit"] and fp["numpy"] == np.__version__ and isinstance(fp["cpu"], str) and fp["cpu"]


def test_cuda_backends_are_synchronised_before_every_clock_read(monkeypatch, raw_fake) -> None:
    calls = []
    fake_torch = type("torch", (), {"cuda": type("cuda", (), {
        "synchronize": staticmethod(lambda: calls.append("sync")), "is_available": staticmethod(lambda: False)})})
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    raw_fake.device = "cuda:0"
    throughput(raw_fake, bodies(), batch_sizes=(1,), warmup=0, repeats=2)
    assert calls == ["sync", "sync"] * 2  # before the batch starts and after the model
    raw_fake.device = "cpu"
    throughput(raw_fake, bodies(), batch_sizes=(1,), warmup=0, repeats=2)
    assert len(calls) == 4
