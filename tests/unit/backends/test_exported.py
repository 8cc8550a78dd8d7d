"""``lvkit export`` and the ``openvino``/``onnx`` backends: checks, manifest, parity with torch.

The checks need no export (fast); the rest exports the session's trained PatchCore version
(fixture ``exported_version``, about 40 s per export). fp16 and int8 are ``slow``; int8 runs
only without ``LVKIT_SMOKE=1`` (CI runs fp32 and fp16). The dynamic-batch regression test is
``slow`` too: it trains PatchCore at the default 256 px model size and exports it to both
runtimes (about 85 s on 2 loaded cores).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import lvkit
from lvkit.backends import load_backend
from lvkit.cli import main
from lvkit.errors import BackendUnavailableError
from lvkit.eval.parity import parity
from lvkit.images import read_rgb


def _versions(store: lvkit.Store, project: str) -> list[int]:
    return [m.version for m in store.list_models(project)]


def _manifest(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "lvkit.json").read_text()))


def _mask_pixels(png: Any) -> int:
    """The anomalous (non-background) pixels of an AnomalyMask PNG; 0 for none."""
    import io

    from PIL import Image

    if not isinstance(png, bytes):
        return 0
    with Image.open(io.BytesIO(png)) as image:
        return int(np.asarray(image.convert("RGB")).any(axis=-1).sum())


def _copy_version(store: lvkit.Store, source: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Project 'brick' version 1 of ``store``: a copy of ``source`` with its manifest edited."""
    import shutil

    store.create_project("brick")

    def build(folder: Path) -> None:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        manifest = _manifest(folder)
        edit(manifest)
        (folder / "lvkit.json").write_text(json.dumps(manifest))

    store.add_model("brick", backend="anomalib", build=build)


# --- bad requests: nothing is created -------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "precision", "message"), [
    ("tflite", "fp32", "format must be one of onnx, openvino"),
    ("openvino", "bf16", "precision must be one of fp32, fp16, int8"),
    ("onnx", "fp16", "fp16 is OpenVINO-only"),
])
def test_bad_format_or_precision_is_a_validation_error(home: Path, make_fake_version: Callable[..., str],
                                                       fmt: str, precision: str, message: str) -> None:
    from lvkit.backends.anomalib.export import export_version

    store = lvkit.Store(home)
    make_fake_version(store, "demo")
    with pytest.raises(lvkit.ValidationException, match=message):
        export_version(store, "demo", "1", format=fmt, precision=precision)
    assert _versions(store, "demo") == [1]


def test_missing_project_or_version_is_not_found(home: Path, make_fake_version: Callable[..., str]) -> None:
    from lvkit.backends.anomalib.export import export_version

    store = lvkit.Store(home)
    make_fake_version(store, "demo")
    with pytest.raises(lvkit.ResourceNotFoundException):
        export_version(store, "nope", "1", format="onnx")
    with pytest.raises(lvkit.ResourceNotFoundException, match="has no model version 7"):
        export_version(store, "demo", "7", format="onnx")
    assert _versions(store, "demo") == [1]


def test_a_non_anomalib_version_is_refused(home: Path, make_fake_version: Callable[..., str]) -> None:
    from lvkit.backends.anomalib.export import export_version

    store = lvkit.Store(home)
    make_fake_version(store, "demo")
    with pytest.raises(lvkit.ValidationException, match="is a 'fake' version; only versions trained by the anomalib"):
        export_version(store, "demo", "1", format="openvino")
    assert _versions(store, "demo") == [1]


def test_int8_without_its_training_images_is_refused(tmp_path: Path, anomalib_version_dir: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from lvkit.backends.anomalib.export import export_version

    store = lvkit.Store(tmp_path / "home")

    def edit(manifest: dict[str, Any]) -> None:
        manifest["splits"]["fit"] = [str(tmp_path / "gone" / f"{i}.png") for i in range(3)]

    _copy_version(store, anomalib_version_dir, edit)
    with pytest.raises(lvkit.ValidationException, match="3 of the first 3 are missing"):
        export_version(store, "brick", "1", format="onnx", precision="int8")
    assert _versions(store, "brick") == [1]


@pytest.mark.parametrize(("gone", "message"), [
    ("images", "int8 re-fits the decision on the version's validation images, and 3 of the 3 are missing"),
    ("dataset", "int8 re-fits the decision .* with their labels and masks, and the dataset at .* no longer holds them"),
])
def test_int8_without_its_validation_images_is_refused(tmp_path: Path, anomalib_version_dir: Path, gone: str,
                                                       message: str) -> None:
    """int8 re-fits the decision on the validation split (labels and masks from the dataset):
    without it nothing is created."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from lvkit.backends.anomalib.export import export_version

    store = lvkit.Store(tmp_path / "home")

    def edit(manifest: dict[str, Any]) -> None:
        if gone == "images":
            manifest["splits"]["validation"] = [str(tmp_path / "gone" / f"{i}.png") for i in range(3)]
        else:
            manifest["dataset"] = str(tmp_path / "moved")

    _copy_version(store, anomalib_version_dir, edit)
    with pytest.raises(lvkit.ValidationException, match=message):
        export_version(store, "brick", "1", format="onnx", precision="int8")
    assert _versions(store, "brick") == [1]


def test_fp16_without_its_validation_images_keeps_the_source_decision(anomalib_version_dir: Path,
                                                                       tmp_path: Path) -> None:
    """fp16 re-fits when it can; with the dataset gone it keeps the source's decision (its
    scores are within 1% of the score range of fp32's) and says why, where int8 is refused."""
    from lvkit.backends.anomalib.export import _refit_images

    source = _manifest(anomalib_version_dir)
    validation, why = _refit_images(source, "fp16")
    assert [str(s.image_path) for s in validation] == source["splits"]["validation"] and why is None
    moved = {**source, "dataset": str(tmp_path / "moved")}
    assert _refit_images(moved, "fp16")[0] == []
    assert "no longer holds them" in str(_refit_images(moved, "fp16")[1])
    with pytest.raises(lvkit.ValidationException, match="no longer holds them"):
        _refit_images(moved, "int8")


def test_refitting_on_the_torch_network_gives_back_the_trained_decision(anomalib_version_dir: Path) -> None:
    """The re-fit is training's fit on training's validation images: fed the source's own torch
    network it returns the decision training stored (the pixel threshold up to the float16
    maps training fitted it on)."""
    from lvkit.backends.anomalib.decision import Decision
    from lvkit.backends.anomalib.export import _validation, refit_decision

    source = _manifest(anomalib_version_dir)
    validation = _validation(source, "int8")
    assert [str(s.image_path) for s in validation] == source["splits"]["validation"]
    decision, labeler = refit_decision(load_backend(anomalib_version_dir, device="cpu"), validation, source["labels"])
    trained = Decision.from_dict(source["decision"])
    assert decision.image_threshold == pytest.approx(trained.image_threshold, rel=1e-5)
    assert decision.slope == pytest.approx(trained.slope, rel=1e-3)
    assert trained.pixel_threshold is not None and decision.pixel_threshold is not None
    assert decision.pixel_threshold == pytest.approx(trained.pixel_threshold, rel=1e-2)
    assert labeler is not None and labeler.labels == source["labels"]


@pytest.mark.parametrize(("fmt", "module", "extra"), [("openvino", "openvino", "lvkit[openvino]"),
                                                      ("onnx", "onnxruntime", "lvkit[onnx]")])
def test_loading_without_the_runtime_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     fmt: str, module: str, extra: str) -> None:
    manifest = {"backend": fmt, "export": {"format": fmt, "file": "model.x"}, "image_size": [64, 64],
                "decision": {"image_threshold": 1.0, "slope": 1.0, "pixel_threshold": None}}
    (tmp_path / "lvkit.json").write_text(json.dumps(manifest))
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    with pytest.raises(BackendUnavailableError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        load_backend(tmp_path)


def test_cli_export_passes_its_options_and_prints_the_new_version(home: Path, make_fake_version: Callable[..., str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from lvkit.backends.anomalib import export

    store = lvkit.Store(home)
    make_fake_version(store, "demo")
    calls: list[tuple[Any, ...]] = []

    def fake_export(home_: Any, project: str, version: str, **options: Any) -> str:
        calls.append((project, version, options))
        return make_fake_version(lvkit.Store(home_), project)

    monkeypatch.setattr(export, "export_version", fake_export)
    run = CliRunner().invoke
    env = {"LVKIT_HOME": str(home)}
    r = run(main, ["export", "--project", "demo", "--version", "1", "--format", "openvino", "--precision", "int8",
                   "--calibration-images", "4"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["ModelDescription"]["ModelVersion"] == "2"
    assert calls == [("demo", "1", {"format": "openvino", "precision": "int8", "description": None,
                                    "calibration_images": 4})]
    monkeypatch.undo()
    r = run(main, ["export", "--project", "demo", "--format", "onnx", "--precision", "fp16"], env=env)
    assert r.exit_code == 1 and "error: ValidationException: fp16 is OpenVINO-only" in r.output


# --- real exports ---------------------------------------------------------------------------------


def _runs(source_dir: Path, folder: Path, tiny_benchmark: Path) -> tuple[Any, Any]:
    test = lvkit.datasets.load(tiny_benchmark).split("test")
    torch_run = lvkit.eval.run(load_backend(source_dir, device="cpu"), test, raw=True, progress=False)
    other = lvkit.eval.run(load_backend(folder, device="cpu"), test, raw=True, progress=False)
    return torch_run, other


@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
def test_fp32_export_is_a_new_version_recording_its_source(fmt: str, exported_version: Callable[[str, str], Path],
                                                           anomalib_version_dir: Path) -> None:
    folder = exported_version(fmt, "fp32")
    source = json.loads((anomalib_version_dir / "lvkit.json").read_text())
    manifest = json.loads((folder / "lvkit.json").read_text())
    assert manifest["backend"] == fmt and folder.name != "1"
    for key in ("decision", "labels", "colors", "labeler", "splits", "image_size", "resize", "segmentation"):
        assert manifest[key] == source[key], key
    export = manifest["export"]
    assert (export["source_version"], export["format"], export["precision"]) == ("1", fmt, "fp32")
    assert export["calibration"] is None and (folder / export["file"]).is_file()
    assert export["decision"] == {"refit": False, "split": None, "images": [], "source": source["decision"],
                                  "why_kept": "fp32 runs the source's network: its decision holds"}
    assert export["input"]["batch"] is None  # dynamic
    assert export["performance_from"] == "exported" and manifest["performance"] == source["performance"]
    assert manifest["evaluation"]["labels"] == source["evaluation"]["labels"]


@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
def test_fp32_export_matches_torch(fmt: str, exported_version: Callable[[str, str], Path],
                                   anomalib_version_dir: Path, tiny_benchmark: Path) -> None:
    a, b = _runs(anomalib_version_dir, exported_version(fmt, "fp32"), tiny_benchmark)
    r = parity(a, b)
    assert r["n_images"] == len(a) and r["verdict_agreement"] == 1.0
    assert r["max_score_error"] <= 1e-3 and r["max_confidence_error"] <= 1e-3
    assert r["mask_iou"] >= 0.99, r
    backend = load_backend(exported_version(fmt, "fp32"), device="cpu")
    batch = np.stack([read_rgb(p) for p in a["path"][:8]])
    one = np.concatenate([backend.raw(batch[i:i + 1])[0] for i in range(len(batch))])  # type: ignore[attr-defined]
    np.testing.assert_allclose(backend.raw(batch)[0], one, rtol=1e-5)  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "precision", "min_agreement", "max_error"), [
    ("openvino", "fp16", 0.9, 1e-2),
    ("openvino", "int8", 0.6, 1.0),
    ("onnx", "int8", 0.6, 1.0),
])
def test_reduced_precision_exports_stay_close(fmt: str, precision: str, min_agreement: float, max_error: float,
                                              exported_version: Callable[[str, str], Path],
                                              anomalib_version_dir: Path, tiny_benchmark: Path) -> None:
    if precision == "int8" and os.environ.get("LVKIT_SMOKE") == "1":
        pytest.skip("an int8 export takes minutes (calibration): run without LVKIT_SMOKE=1")
    folder = exported_version(fmt, precision)
    a, b = _runs(anomalib_version_dir, folder, tiny_benchmark)
    r = parity(a, b)
    print(f"\n{fmt} {precision}: {r}")  # the measured deltas (pytest -s)
    assert r["verdict_agreement"] >= min_agreement and r["max_score_error"] <= max_error, r
    export = json.loads((folder / "lvkit.json").read_text())["export"]
    assert export["decision"]["refit"] is True  # both reduced precisions re-fit their decision
    if precision == "int8":
        fit = sorted(json.loads((anomalib_version_dir / "lvkit.json").read_text())["splits"]["fit"])
        assert export["calibration"]["images"] == fit[:32] and export["calibration"]["split"] == "fit"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("LVKIT_SMOKE") == "1",
                    reason="an int8 export takes minutes (calibration): run without LVKIT_SMOKE=1")
@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
def test_int8_export_refits_its_decision_and_finds_the_anomalies(fmt: str,
                                                                  exported_version: Callable[[str, str], Path],
                                                                  anomalib_version_dir: Path,
                                                                  tiny_benchmark: Path) -> None:
    """int8 moves the raw scores and maps (the tiny model's int8 scores are about 0.6-0.8 x the
    fp32 ones plus an offset), so the export re-fits the decision on the validation split and
    measures Performance at it.

    Measured on the held-out images (9, 6 anomalous): verdicts agree with torch fp32 on 8 of 9
    for both runtimes, and the masks' IoU with torch's is 0.77 (OpenVINO) and 0.88 (ONNX). With
    the source's decision every mask was empty (the Gaussian blur of the map was quantized too,
    and the source's pixel threshold lay above the int8 maps). The bounds (at most 2 of 9
    verdicts differ, IoU >= 0.5) leave a margin for int8 kernels that differ between CPUs.
    """
    from lvkit.backends.recalibrated import performance_at

    folder = exported_version(fmt, "int8")
    source, manifest = _manifest(anomalib_version_dir), _manifest(folder)
    record = manifest["export"]["decision"]
    assert record == {"refit": True, "split": "validation", "images": source["splits"]["validation"],
                      "source": source["decision"], "why_kept": None}
    assert manifest["decision"] != source["decision"] and manifest["decision"]["pixel_threshold"] is not None
    assert manifest["labeler"] is not None and manifest["labeler"]["labels"] == source["labels"]

    held = source["splits"]["evaluation"]
    test = [s for s in lvkit.datasets.load(tiny_benchmark).split("test").samples if str(s.image_path) in held]
    a = lvkit.eval.run(load_backend(anomalib_version_dir, device="cpu"), test, raw=True, progress=False)
    b = lvkit.eval.run(load_backend(folder, device="cpu"), test, raw=True, progress=False)
    r = parity(a, b)
    print(f"\n{fmt} int8 on the held-out images: {r}")
    assert r["n_images"] == len(held) and round((1 - r["verdict_agreement"]) * len(held)) <= 2, r
    assert r["mask_iou"] >= 0.5, r
    pixels = [_mask_pixels(png) for png in b.loc[b["label"] == 1, "anomaly_mask"]]
    assert sum(pixels) > 0, "every held-out anomaly's mask is empty"

    # Performance is measured at the re-fitted decision, on the same held-out images
    verdicts = dict(zip(b["path"], b["is_anomalous"], strict=True))
    assert manifest["export"]["performance_from"] == "exported"
    assert manifest["performance"] == performance_at(source["evaluation"]["labels"], [verdicts[p] for p in held])


def test_a_network_with_a_static_batch_is_fed_in_padded_chunks() -> None:
    """torch.export specialised the batch of PatchCore at a 256 px model size (the default), so
    exported versions answered only batches of the example's size. The export now keeps it
    dynamic (test_a_256px_patchcore_exports_a_dynamic_batch); for a graph that still comes out
    static, and versions exported before, the backends pad."""
    from lvkit.backends.anomalib.exported import _fixed_batch

    calls: list[int] = []

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert len(images) == 3, "the network takes batches of exactly 3"
        calls.append(len(images))
        return images.mean(axis=(1, 2, 3)).astype(np.float32), images[..., 0].astype(np.float32)

    images = np.random.default_rng(0).integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
    padded = _fixed_batch(run, 3)
    for n in (1, 3, 7):
        scores, maps = padded(images[:n])
        assert scores.shape == (n,) and maps is not None and maps.shape == (n, 4, 4)
        np.testing.assert_array_equal(scores, images[:n].mean(axis=(1, 2, 3)).astype(np.float32))
        np.testing.assert_array_equal(maps, images[:n, ..., 0])
    assert calls == [3] * 5  # 1 image: one chunk, 3: one, 7: three (the last padded)


@pytest.mark.slow
def test_a_256px_patchcore_exports_a_dynamic_batch(patchcore_256_store: lvkit.Store, tiny_benchmark: Path) -> None:
    """At lvkit's default model size (256 px) torch.export fixed PatchCore's batch at 2: one
    image is 1,024 patches, and anomalib's nearest-neighbour search loops over chunks of 1,024
    (``network.unchunked_search``). The export now traces the search unchunked, so the graph
    takes any batch, and both runtimes answer batches of 1, 3 and 8 as torch does."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    ov = pytest.importorskip("openvino")
    from lvkit.backends.anomalib.export import export_version
    from lvkit.backends.anomalib.network import onnx_batch

    store = patchcore_256_store
    source = store.artifact_dir("brick", 1)
    assert _manifest(source)["model_image_size"] == 256
    samples = lvkit.datasets.load(tiny_benchmark).split("test").samples[:8]
    images = np.stack([read_rgb(s.image_path) for s in samples])
    want_scores, want_maps = load_backend(source, device="cpu").raw(images)  # type: ignore[attr-defined]
    for fmt in ("onnx", "openvino"):
        folder = store.artifact_dir("brick", int(export_version(store, "brick", "1", format=fmt)))
        export = _manifest(folder)["export"]
        assert export["input"]["batch"] is None, export["input"]
        if fmt == "onnx":
            assert onnx_batch(folder / export["file"]) is None
        else:
            assert ov.Core().read_model(folder / export["file"]).input(0).get_partial_shape()[0].is_dynamic
        backend = load_backend(folder, device="cpu")
        for n in (1, 3, 8):
            scores, maps = backend.raw(images[:n])  # type: ignore[attr-defined]
            assert scores.shape == (n,) and maps.shape == images[:n].shape[:3]
            # the fp32 parity tolerance: 1e-3 of the reference's score and map ranges
            assert np.abs(scores - want_scores[:n]).max() <= 1e-3 * np.ptp(want_scores), (fmt, n)
            assert np.abs(maps - want_maps[:n]).max() <= 1e-3 * np.ptp(want_maps), (fmt, n)
