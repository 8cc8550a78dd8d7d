"""The model matrix (issue 11): its metrics against independent references, the paired leaderboard,
results stored per cell (resume, failures), and cells run as Ray tasks."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

import lvkit
import lvkit.eval as lve
from lvkit.eval._maps import aupro_from_rows, aupro_rows, aupro_thresholds
from lvkit.eval.cells import read_result
from lvkit.eval.leaderboard import METRICS, CellArrays, cell_report, cell_values, leaderboard_frame, leaderboard_text
from lvkit.eval.matrix import make_cells
from lvkit.training import TrainedVersion
from tests.unit.eval.conftest import blob_masks


def arrays(y, score, *, pred=None, conf=None, latency=None, paths=None, fit_s=float("nan"), stats=None, rows=None):
    y = np.asarray(y, bool)
    score = np.asarray(score, float)
    pred = score > 0.5 if pred is None else np.asarray(pred, bool)
    return CellArrays(paths=np.asarray(paths if paths is not None else [f"{i:03d}" for i in range(y.size)]),
                      label=y, is_anomalous=pred, confidence=np.maximum(score, 1 - score) if conf is None else conf,
                      anomaly_score=score, latency_s=np.full(y.size, 0.05) if latency is None else latency,
                      ok=np.ones(y.size, bool), fit_s=fit_s, mask_stats=stats, aupro_rows=rows)


# --- metrics of one cell ---------------------------------------------------------------------------------


def test_cell_values_match_independent_references(rng):
    masks, maps = blob_masks(rng, n=12)
    preds = [m > 0.8 for m in maps]
    y = np.array([m.any() for m in masks])
    score = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    pred = score > 0.5
    conf = np.where(pred, score, 1 - score)
    latency = rng.uniform(0.01, 0.1, y.size)
    stats = np.array([[np.sum(t & p), np.sum(t | p), t.sum(), p.sum()] for t, p in zip(masks, preds)], np.int64)
    grid = np.linspace(min(m.min() for m in maps), max(m.max() for m in maps), 40)
    c = arrays(y, score, pred=pred, conf=conf, latency=latency, fit_s=3.5, stats=stats,
               rows=aupro_rows(masks, maps, thresholds=grid))
    got = cell_values(c)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, score))
    assert got["f1"] == pytest.approx(f1_score(y, pred))
    assert got["ece"] == pytest.approx(lve.calibration_error(conf, pred == y, n_bins=10))
    assert got["iou"] == pytest.approx(lve.mean_iou(masks, preds, average="macro", empty="skip"))
    assert got["aupro"] == pytest.approx(lve.aupro(masks, maps, num_thresholds=40))
    assert got["latency_ms"] == pytest.approx(1000 * np.median(latency))
    assert got["fit_s"] == 3.5
    # a failed image is left out of every metric
    ok = np.ones(y.size, bool)
    ok[0] = False
    partial = cell_values(CellArrays(**{**c.__dict__, "ok": ok}))
    assert partial["auroc"] == pytest.approx(roc_auc_score(y[1:], score[1:]))


def test_aupro_rows_add_up_to_aupro(rng):
    masks, maps = blob_masks(rng, n=10, size=48)
    for k in (2, 9, 60):
        grid = np.linspace(min(m.min() for m in maps), max(m.max() for m in maps), k)
        assert aupro_from_rows(aupro_rows(masks, maps, thresholds=grid)) == pytest.approx(
            lve.aupro(masks, maps, num_thresholds=k), abs=1e-12)
    rows = aupro_rows(masks, maps, thresholds=aupro_thresholds(masks, maps))
    assert aupro_from_rows(rows) == pytest.approx(lve.aupro(masks, maps), abs=5e-3)  # the grid the matrix uses
    # rows of a resample are the images of the resample: repeating an image twice is adding it twice
    twice = [masks[0], masks[0], *masks[1:]], [maps[0], maps[0], *maps[1:]]
    grid = np.linspace(min(m.min() for m in maps), max(m.max() for m in maps), 30)
    assert aupro_from_rows(aupro_rows(masks, maps, thresholds=grid)[[0, 0, *range(1, 10)]]) == pytest.approx(
        lve.aupro(*twice, num_thresholds=30), abs=1e-12)


def test_cell_report_bounds_are_bootstrap_ci(rng):
    y = rng.random(80) < 0.5
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    report = cell_report(arrays(y, s, fit_s=2.0), n_resamples=300, seed=4)
    assert report["auroc"] == pytest.approx(lve.bootstrap_ci(lve.image_auroc, y, s, n_resamples=300, seed=4))
    assert report["fit_s"][0] == 2.0 and np.isnan(report["fit_s"][1])


def test_cell_intervals_cover_the_true_auroc():
    """Binormal scores (d' = 1): the true AUROC is Phi(1 / sqrt 2); 60 simulated cells of 60 + 60 images."""
    from statistics import NormalDist

    truth = NormalDist().cdf(1 / np.sqrt(2))
    gen = np.random.default_rng(7)
    hits = 0
    for _ in range(60):
        y = np.r_[np.zeros(60, bool), np.ones(60, bool)]
        s = gen.normal(y.astype(float), 1.0)
        _, low, high = cell_report(arrays(y, 1 / (1 + np.exp(-s))), n_resamples=200, seed=1)["auroc"]
        hits += low <= truth <= high
    assert 51 <= hits <= 60  # nominal 95%: 57 expected; 51 is 3 sd below


# --- the leaderboard ------------------------------------------------------------------------------------


def test_paired_difference_against_a_hand_computed_case():
    """A misses 4 of 20 anomalies (F1 32/36); B answers as A and calls 6 of the 20 normal images anomalous
    too (F1 32/42); A answers in 10 ms, B in 30 ms."""
    y = np.r_[np.zeros(20, bool), np.ones(20, bool)]
    a_pred = y.copy()
    a_pred[20:24] = False
    b_pred = a_pred.copy()
    b_pred[:6] = True
    scores = np.where(y, 0.9, 0.1)
    good = arrays(y, scores, pred=a_pred, latency=np.full(40, 0.010))
    bad = arrays(y, scores, pred=b_pred, latency=np.full(40, 0.030))
    board = leaderboard_frame({"d": {"a": {0: good}, "b": {0: bad}}}, n_resamples=400, seed=3)
    a, b = board.loc[("d", "a")], board.loc[("d", "b")]
    assert a["f1"] == pytest.approx(32 / 36) and b["f1"] == pytest.approx(32 / 42)
    assert b["f1_diff"] == pytest.approx(32 / 42 - 32 / 36) and a["f1_diff"] == 0.0
    assert b["latency_ms"] == pytest.approx(30.0) and b["latency_ms_diff"] == pytest.approx(20.0)
    # the reference: the same draws (one seed, then the images), sklearn's F1 of each model on them
    gen = np.random.default_rng(3)
    diffs = []
    for _ in range(400):
        gen.integers(0, 1, size=1)  # the seed draw
        idx = gen.integers(0, 40, size=40)
        diffs.append(f1_score(y[idx], b_pred[idx]) - f1_score(y[idx], a_pred[idx]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert (b["f1_diff_low"], b["f1_diff_high"]) == pytest.approx((low, high))
    assert b["f1_worse"] and not a["f1_worse"] and a["f1_best"]
    # unpaired, the two F1 intervals overlap; paired, the difference excludes 0
    assert b["f1_high"] > a["f1_low"] and b["f1_diff_high"] < 0
    assert b["latency_ms_worse"] and (b["latency_ms_diff_low"], b["latency_ms_diff_high"]) == pytest.approx((20, 20))
    assert not b["auroc_worse"] and b["auroc_diff"] == 0.0  # same scores: a tie is not worse
    assert np.isnan(b["fit_s_low"]) and not b["fit_s_worse"]  # one seed: no spread to resample


def test_worse_follows_each_metric_direction(rng):
    y = np.arange(60) % 2 == 1
    clean = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.05, 60), 0, 1)
    noisy = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.5, 60), 0, 1)
    runs = {"d": {"clean": {0: arrays(y, clean, latency=np.full(60, 0.02))},
                  "noisy": {0: arrays(y, noisy, latency=np.full(60, 0.01))}}}
    board = leaderboard_frame(runs, n_resamples=300)
    assert list(board.index.get_level_values("model")) == ["clean", "noisy"]  # sorted by AUROC
    assert board.loc[("d", "noisy"), "auroc_worse"] and not board.loc[("d", "clean"), "auroc_worse"]
    # lower is better: the faster model is the best one, the slower one is worse
    assert board.loc[("d", "noisy"), "latency_ms_best"] and board.loc[("d", "clean"), "latency_ms_worse"]
    assert not METRICS["latency_ms"][0] and METRICS["auroc"][0]


def test_among_ties_the_best_model_is_listed_first(rng):
    y = np.arange(40) % 2 == 1
    perfect = np.where(y, 0.9, 0.1) + rng.uniform(0, 0.05, 40)
    runs = {"d": {"zeta": {0: arrays(y, perfect)}, "alpha": {0: arrays(y, perfect.copy())}}}
    board = leaderboard_frame(runs, n_resamples=50)
    assert (board["auroc"] == 1.0).all()
    assert list(board.index.get_level_values("model")) == ["zeta", "alpha"]  # the best (first given) first
    assert board["auroc_best"].tolist() == [True, False]
    text = leaderboard_text(board, markdown=True)
    assert "\n\n[low, high]: 95% bootstrap interval; \\* worse than" in text  # not a Markdown bullet


def test_seeds_are_resampled_and_their_spread_reported(rng):
    """Two seeds hold different images (a seed fixes the splits); the estimate is the mean over seeds."""
    cells = {}
    for seed in (0, 1):
        y = rng.random(40) < 0.5
        s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
        cells[seed] = arrays(y, s, paths=[f"s{seed}-{i}" for i in range(40)], fit_s=10.0 + 4 * seed)
    board = leaderboard_frame({"d": {"m": cells}}, n_resamples=200)
    row = board.loc[("d", "m")]
    per_seed = [cell_values(cells[s])["auroc"] for s in (0, 1)]
    assert row["auroc"] == pytest.approx(np.mean(per_seed)) and row["n_seeds"] == 2 and row["n_images"] == 80
    assert row["auroc_seed_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["fit_s"] == 12.0 and row["fit_s_low"] == 10.0 and row["fit_s_high"] == 14.0
    text = leaderboard_text(board)
    assert "12.0 [10.0, 14.0]" in text and "bootstrap interval" in text


# --- cells, files, resume ---------------------------------------------------------------------------------


class MeanBrightness:
    """A Trainer (the fake backend's brightness rule) that counts its trainings in this process."""

    backend = "fake"
    builds = 0

    def __init__(self, name: str, margin: float) -> None:
        self.name, self.margin = name, margin

    def check(self) -> None:
        pass

    def build(self, plan, folder, *, weights_dir, progress):
        from lvkit.images import read_rgb

        type(self).builds += 1
        normal = [float(read_rgb(s.image_path).mean()) for s in plan.splits["validation"] if s.label == 0]
        threshold = max(normal) + self.margin
        scores = np.array([float(read_rgb(s.image_path).mean()) for s in plan.splits["evaluation"]])
        return TrainedVersion({"threshold": threshold, "label": "anomaly", "color": "#FF0000"}, scores > threshold)


def test_local_matrix_resumes_and_records_a_failing_cell(tmp_path, tiny_benchmark):
    models = [MeanBrightness("tight", 0.0), MeanBrightness("loose", 5.0), "no-such-model"]
    MeanBrightness.builds = 0
    first = lve.matrix(models, [tiny_benchmark], [0], results=tmp_path / "res", backend="local", progress=False,
                       n_resamples=50)
    assert MeanBrightness.builds == 2 and len(first.ran) == 3
    runs = first.runs.set_index("model")
    assert list(runs["status"]) == ["ok", "ok", "failed"]
    assert runs.loc["no-such-model", "error"].startswith("ValidationException") and first.failed
    stored = json.loads((tmp_path / "res" / runs.loc["no-such-model", "cell_id"] / "cell.json").read_text())
    assert stored["error"]["type"] == "ValidationException" and "Traceback" in stored["error"]["traceback"]
    for cell_id in runs.loc[["tight", "loose"], "cell_id"]:
        assert {p.name for p in (tmp_path / "res" / cell_id).iterdir()} == {"cell.json", "images.csv", "done"}
    # the held-out images were scored through the contract: the fake backend's masks give an IoU
    tidy = first.cells
    assert set(tidy.columns) >= {"model", "dataset", "seed", "metric", "value", "ci_low", "ci_high", "status", "error"}
    assert len(tidy) == 3 * len(METRICS)
    ok = tidy[(tidy["model"] == "tight") & tidy["metric"].isin(["auroc", "f1", "iou", "latency_ms"])]
    assert ok["value"].between(0, 1000).all() and np.isnan(tidy[tidy["model"] == "no-such-model"]["value"]).all()
    images = first.images
    assert set(images["model"]) == {"tight", "loose"} and images["iou"].notna().any()
    # a rerun skips what finished, retries the failure; deleting a result reruns only that cell
    shutil.rmtree(tmp_path / "res" / runs.loc["loose", "cell_id"])
    again = lve.matrix(models, [tiny_benchmark], [0], results=tmp_path / "res", backend="local", progress=False,
                       n_resamples=50)
    assert MeanBrightness.builds == 3
    assert sorted(again.ran) == sorted(runs.loc[["loose", "no-such-model"], "cell_id"])
    assert again.skipped == [runs.loc["tight", "cell_id"]]
    board = again.leaderboard(n_resamples=50)
    assert sorted(board.index.get_level_values("model")) == ["loose", "tight"]
    loaded = lve.MatrixResult(tmp_path / "res")  # every finished cell of a results folder
    assert len(loaded.ids) == 3 and len(loaded.failed) == 1


def test_cells_are_defined_by_everything_that_changes_them(tmp_path):
    base = make_cells(["padim", {"name": "padim@128", "model": "padim", "image_size": 128}], [tmp_path / "a" / "x",
                      tmp_path / "b" / "x"], [0, 1], options={"image_size": 64})
    assert len(base) == 8 and len({c.id for c in base}) == 8
    assert {c.dataset_name for c in base} == {"a/x", "b/x"}  # two datasets named x
    assert {c.options["image_size"] for c in base if c.name == "padim@128"} == {128}
    again = make_cells(["padim"], [tmp_path / "a" / "x"], [0], options={"image_size": 64})
    assert again[0].id == base[0].id and again[0].id.startswith("x--padim--seed0--")
    assert make_cells(["padim"], [tmp_path / "a" / "x"], [0], options={"image_size": 96})[0].id != base[0].id
    with pytest.raises(ValueError, match="lvkit.train options"):
        make_cells(["padim"], [tmp_path], [0], options={"imagesize": 64})
    with pytest.raises(ValueError, match="distinct names"):
        make_cells(["padim", "padim"], [tmp_path], [0])


def test_results_are_written_whole(tmp_path):
    from lvkit.eval.cells import write_result

    payload = {"id": "c1", "cell": {}, "status": "ok", "images": [{"path": "a.png", "label": 1}],
               "aupro_rows": np.ones((1, 6)), "aupro_thresholds": np.array([0.1, 0.2])}
    write_result(tmp_path, payload)
    write_result(tmp_path, {**payload, "status": "failed", "images": None, "aupro_rows": None})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1"]  # the old one replaced, no temporary left
    got = read_result(tmp_path / "c1")
    assert got is not None and got["status"] == "failed" and got["images"] is None
    (tmp_path / "c1" / "done").unlink()
    assert read_result(tmp_path / "c1") is None  # without its marker a folder is not a result


def test_without_ray_the_error_names_the_extra(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(lvkit.BackendUnavailableError, match=r"pip install 'lvkit\[bench\]'"):
        lve.matrix(["padim"], [tmp_path], [0], results=tmp_path / "res", progress=False)
    assert lve.stop_ray() is False  # no Ray, nothing to stop


# --- on Ray, real models -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_matrix_trains_real_models_in_workers(tmp_path, tiny_benchmark):
    pytest.importorskip("anomalib")
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    results = tmp_path / "res"
    kw = {"results": results, "options": {"image_size": 64}, "progress": False, "n_resamples": 100}
    try:
        first = lve.matrix(["padim", "dfm", "no-such-model"], [tiny_benchmark], [0], **kw)
        assert ray.is_initialized()  # started here, and left running for the next matrix
        runs = first.runs.set_index("model")
        assert list(runs["status"]) == ["ok", "ok", "failed"], runs["error"].tolist()
        assert (runs["pid"] != os.getpid()).all() and runs["pid"].nunique() == 3  # a Ray worker each
        board = first.leaderboard()
        assert set(board.index.get_level_values("model")) == {"padim", "dfm"}
        assert board[["auroc", "f1", "ece", "iou", "aupro", "latency_ms", "fit_s"]].notna().all().all()
        assert (board["auroc_low"] <= board["auroc"]).all() and (board["auroc"] <= board["auroc_high"]).all()
        # the rerun (Ray already up) skips the finished cells and retries only the failure; deleting a
        # result reruns its cell too (test_local_matrix_resumes_and_records_a_failing_cell)
        again = lve.matrix(["padim", "dfm", "no-such-model"], [tiny_benchmark], [0], **kw)
        assert again.ran == [runs.loc["no-such-model", "cell_id"]]
        assert sorted(again.skipped) == sorted(runs.loc[["padim", "dfm"], "cell_id"])
        assert (again.runs.set_index("cell_id").loc[again.skipped, "pid"] == runs.set_index("cell_id").loc[
            again.skipped, "pid"]).all()  # their stored results, untouched
        assert lve.stop_ray() is True and not ray.is_initialized()
        assert lve.stop_ray() is False  # nothing left to stop
    finally:
        ray.shutdown()


# --- lvkit bench ------------------------------------------------------------------------------------------------


def test_bench_cli_prints_and_writes_the_leaderboard(tmp_path):
    from click.testing import CliRunner

    from lvkit.cli import main
    from lvkit.cli_bench import benchmark_root
    from lvkit.eval.cells import write_result

    config = tmp_path / "bench.yaml"
    config.write_text("models: [padim, {name: dfm@64, model: dfm}, no-such-model]\n"
                      "benchmark: {categories: [brick], n_train: 12, n_test_good: 2, n_test_defect_per_type: 1,"
                      " image_size: 64}\n"
                      "seeds: [0]\noptions: {image_size: 64}\nresults: out\nn_resamples: 50\n")
    results = tmp_path / "out"
    spec = {"n_train": 12, "n_test_good": 2, "n_test_defect_per_type": 1, "image_size": 64}
    brick = benchmark_root(results, spec) / "brick"
    assert benchmark_root(results, {**spec, "n_test_good": 3}) != brick.parent  # other data, other cells
    gen = np.random.default_rng(0)
    for cell in make_cells(["padim", {"name": "dfm@64", "model": "dfm"}], [brick], [0], options={"image_size": 64}):
        y = np.arange(30) % 2
        s = np.clip(0.5 + (y - 0.5) * 0.5 + gen.normal(0, 0.1, 30), 0, 1)
        images = [{"path": f"{i}.png", "label": int(y[i]), "is_anomalous": bool(s[i] > 0.5), "defect_type": None,
                   "confidence": float(max(s[i], 1 - s[i])), "anomaly_score": float(s[i]), "latency_s": 0.02,
                   "error": None} for i in range(30)]
        write_result(results, {"id": cell.id, "cell": cell.spec(), "status": "ok", "fit_s": 5.0, "images": images,
                               "aupro_rows": None})  # finished before: the command must not train them
    out = CliRunner().invoke(main, ["bench", str(config), "--backend", "local", "--no-progress"])
    assert out.exit_code == 1, out.output  # the failing cell
    assert "1 cells run, 2 finished before" in out.stdout and "padim" in out.stdout and "dfm@64" in out.stdout
    assert "failed: brick--no-such-model--seed0--" in out.stderr and "ValidationException" in out.stderr
    board = (results / "leaderboard.csv").read_text().splitlines()
    assert board[0].startswith("dataset,model,n_seeds,n_images,auroc,auroc_low") and len(board) == 3
    assert (results / "leaderboard.md").read_text().startswith("| dataset | model |")
    assert len((results / "cells.csv").read_text().splitlines()) == 1 + 3 * len(METRICS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [padim]\ndatasets: [x]\nseeds: [0]\nmodel: typo\n")
    out = CliRunner().invoke(main, ["bench", str(bad)])
    assert out.exit_code == 2 and "unknown keys ['model']" in out.output
