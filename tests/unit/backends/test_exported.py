"""``lvkit export`` and the ``openvino``/``onnx`` backends: checks, manifest, parity with torch.

The checks need no export (fast); the rest exports the session's trained PatchCore version
(fixture ``exported_version``, about 40 s per export). fp16 and int8 are ``slow``; int8 runs
only without ``LVKIT_SMOKE=1`` (CI runs fp32 and fp16).
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
    store.create_project("brick")

    def build(folder: Path) -> None:
        import shutil

        shutil.copytree(anomalib_version_dir, folder, dirs_exist_ok=True)
        manifest = json.loads((folder / "lvkit.json").read_text())
        manifest["splits"]["fit"] = [str(tmp_path / "gone" / f"{i}.png") for i in range(3)]
        (folder / "lvkit.json").write_text(json.dumps(manifest))

    store.add_model("brick", backend="anomalib", build=build)
    with pytest.raises(lvkit.ValidationException, match="3 of the first 3 are missing"):
        export_version(store, "brick", "1", format="onnx", precision="int8")
    assert _versions(store, "brick") == [1]


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
    if precision == "int8":
        fit = sorted(json.loads((anomalib_version_dir / "lvkit.json").read_text())["splits"]["fit"])
        assert export["calibration"]["images"] == fit[:32] and export["calibration"]["split"] == "fit"


def test_a_network_with_a_static_batch_is_fed_in_padded_chunks() -> None:
    """torch.export specialised the batch of PatchCore at a 256 px model size (the default), so
    exported versions answered only batches of the example's size; the backends pad instead."""
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
