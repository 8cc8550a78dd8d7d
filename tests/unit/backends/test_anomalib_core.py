"""The torch/anomalib core: offline backbone weights, build/fit/predict/save/load, the training worker.

Real textures from scikit-image (brick), 64x64 crops, a noise square pasted in as the defect.
The tests that train are marked ``slow``; the whole module takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("anomalib")

from lvkit.backends.anomalib import models as core  # noqa: E402
from lvkit.backends.anomalib import weights as _weights  # noqa: E402
from lvkit.backends.anomalib.fit import fit  # noqa: E402
from lvkit.backends.anomalib.worker import TrainingFailed, train_in_subprocess  # noqa: E402
from lvkit.errors import BackendUnavailableError  # noqa: E402

SIZE = 64
DEFECT = (26, 21, 12)  # y0, x0, side of the pasted square


def _crops(n: int, *, seed: int, kind: str = "brick", size: int = SIZE) -> list[np.ndarray]:
    from skimage import data

    source = {"brick": data.brick, "grass": data.grass}[kind]()
    source = np.stack([source] * 3, axis=-1) if source.ndim == 2 else source
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, source.shape[0] - size, 2)
        out.append(np.ascontiguousarray(source[y : y + size, x : x + size]).astype(np.uint8))
    return out


def _with_defect(image: np.ndarray, seed: int = 1) -> np.ndarray:
    y0, x0, side = DEFECT
    out = image.copy()
    out[y0 : y0 + side, x0 : x0 + side] = np.random.default_rng(seed).integers(0, 256, (side, side, 3))
    return out


def _peak_in_defect(amap: np.ndarray) -> bool:
    y, x = np.unravel_index(int(np.argmax(amap)), amap.shape)
    y0, x0, side = DEFECT
    return bool(y0 <= y < y0 + side and x0 <= x < x0 + side)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> object:
    """One torch thread (and one in worker processes): two threads on two cores that other
    processes also use run these small models several times slower (OpenMP spin-waits)."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    good = _crops(3, seed=99)
    return np.stack([_with_defect(good[0]), *good[1:]])  # image 0 is the anomalous one


# --------------------------------------------------------------------------- registry and inputs


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*'padim'.*'patchcore'.*'stfpm'"):
        core.build_model("nope", weights_dir="unused")


def test_models_registry_is_explicit() -> None:
    assert {"patchcore", "padim", "stfpm", "efficient_ad", "draem"} <= set(core.MODELS)
    assert core.DEFAULT_MODEL == "patchcore"
    assert all(name == name.lower() for name in core.MODELS)


def test_resolve_device() -> None:
    import torch

    assert core.resolve_device("cpu") == "cpu"
    assert core.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="expected device"):
        core.resolve_device("tpu")


def test_backbone_options_rejected_for_models_with_their_own_network(weights_dir: Path) -> None:
    with pytest.raises(ValueError, match="takes no backbone"):
        core.build_model("ganomaly", backbone="resnet18", weights_dir=weights_dir)


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("arch", list(_weights.OFFLINE_BACKBONES))
def test_offline_weights_are_imagenet_and_load_through_timm(weights_dir: Path, arch: str) -> None:
    import timm
    import torch
    import torch.nn.functional as F
    from skimage import data

    path = _weights.offline_backbone_weights(arch, weights_dir)
    assert path.is_file() and path.parent.parent == weights_dir.resolve()
    name = _weights.timm_name(path)
    assert name.startswith("local-dir:")
    model = timm.create_model(name, pretrained=True).eval()  # timm's own local-dir loader
    assert model.pretrained_cfg["mean"] == [0.5, 0.5, 0.5]
    saved = torch.load(path, weights_only=True)
    assert len(saved) == _weights.OFFLINE_BACKBONES[arch].keys and saved["classifier.weight"].shape == (1000, 1280)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    side = model.pretrained_cfg["input_size"][-1]  # 224, 240, 260
    for image, label in ((data.chelsea(), 285), (data.coffee(), 967)):  # Egyptian cat, espresso
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        x = (F.interpolate(x, size=(side, side), mode="bicubic", antialias=True) - 0.5) / 0.5
        with torch.inference_mode():
            p = model(x).softmax(-1)[0]
        assert int(p.argmax()) == label and float(p.max()) > 0.5


def test_offline_backbones_take_the_default_layers(weights_dir: Path) -> None:
    model = core.build_model("padim", backbone="tf_efficientnet_lite2", image_size=SIZE, weights_dir=weights_dir)
    assert model.lvkit_config["backbone"] == "tf_efficientnet_lite2"
    assert model.lvkit_config["layers"] == list(core.MODELS["padim"].layers)
    with pytest.raises(ValueError, match="expected a backbone with offline weights"):
        _weights.offline_backbone_weights("resnet18", weights_dir)


def test_default_weights_reused_and_rebuilt_when_corrupt(weights_dir: Path) -> None:
    path = _weights.default_backbone_weights(weights_dir)
    stamp = path.stat().st_mtime_ns
    assert _weights.default_backbone_weights(weights_dir) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not rewritten
    with path.open("r+b") as fh:  # corrupt one byte: the checksum no longer matches the marker
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert _weights.default_backbone_weights(weights_dir) == path
    assert json.loads((path.parent / "lvkit-weights.json").read_text())["weights_sha256"] == _weights.sha256(path)
    assert not list(path.parent.glob("*.tmp"))


def test_local_backbone_weights_for_another_backbone(tmp_path: Path) -> None:
    import timm
    import torch

    arch = "mobilenetv3_small_050"
    reference = timm.create_model(arch, pretrained=False)
    torch.save(reference.state_dict(), tmp_path / "mine.pth")
    staged = _weights.local_backbone_weights(arch, tmp_path / "mine.pth", tmp_path / "cache")
    loaded = timm.create_model(_weights.timm_name(staged), pretrained=True)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match="does not hold timm"):
        _weights.local_backbone_weights("resnet18", tmp_path / "mine.pth", tmp_path / "cache")


def test_other_backbone_without_weights_fails_clearly(
    weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr(_weights, "_hub_reachable", lambda: False)  # as offline, even on CI
    start = time.perf_counter()
    with pytest.raises(BackendUnavailableError, match=r"'resnet18'.*could not be downloaded.*backbone_weights=PATH"):
        core.build_model("padim", backbone="resnet18", layers=["layer1", "layer2"], weights_dir=weights_dir)
    assert time.perf_counter() - start < 10


def test_models_needing_downloads_fail_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # anomalib's cache, empty
    core._anomalib_classes()  # import anomalib first: the check itself must be quick
    start = time.perf_counter()
    with pytest.raises(BackendUnavailableError, match=r"Describable Textures.*dtd_dir="):
        core.build_model("draem")
    with pytest.raises(BackendUnavailableError,
                       match=r"pretrained_teacher_small\.pth is missing.*'teacher_weights'.*imagenet_dir="):
        core.build_model("efficient_ad")
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "cache").exists()  # nothing created in anomalib's cache either


@pytest.mark.parametrize("name", ["dfm", "dfkde", "cflow", "supersimplenet", "ganomaly", "fastflow",
                                  "reverse_distillation"])
def test_other_models_build_with_defaults(name: str, weights_dir: Path) -> None:
    model = core.build_model(name, image_size=128, weights_dir=weights_dir)
    assert model.post_processor is None and model.lvkit_config["name"] == name


def test_efficient_ad_takes_a_local_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The teacher here is a randomly initialised network of the right shape (tests/conftest.py
    ``efficient_ad_files``): it checks the code path, not the quality of a distilled teacher."""
    import torch

    from tests.conftest import efficient_ad_files

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # anomalib's cache, empty
    files = efficient_ad_files(tmp_path / "offline")
    with pytest.raises(BackendUnavailableError, match=r"teacher_weights='.*nope\.pth' is not a file.*release"):
        core.build_model("efficient_ad", image_size=256, **{**files, "teacher_weights": str(tmp_path / "nope.pth")})
    with pytest.raises(ValueError, match="does not hold the teacher of this efficient_ad model_size"):
        core.build_model("efficient_ad", image_size=256, model_size="medium", **files)
    model = core.build_model("efficient_ad", image_size=256, **files)
    saved = torch.load(files["teacher_weights"], weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.model.teacher.state_dict().items())
    assert "teacher_weights" in model.lvkit_config["kwargs"]  # recorded, never passed to anomalib
    model.prepare_pretrained_model()  # what training calls: no download, nothing in anomalib's cache
    assert not (tmp_path / "cache" / "anomalib").exists()


@pytest.mark.parametrize("name", ["fastflow", "reverse_distillation"])
def test_models_on_a_swapped_backbone_use_the_offline_weights_and_round_trip(
    name: str, weights_dir: Path, tmp_path: Path, test_images: np.ndarray
) -> None:
    import torch

    model = core.build_model(name, image_size=SIZE, weights_dir=weights_dir)
    inner = model.model
    extractor = inner.feature_extractor.extractor if name == "fastflow" else inner.encoder
    lite0 = torch.load(_weights.default_backbone_weights(weights_dir), weights_only=True)
    assert torch.equal(extractor.feature_extractor.conv_stem.weight, lite0["conv_stem.weight"])
    assert not any(p.requires_grad for p in extractor.parameters())  # the backbone stays frozen
    scores, maps = core.predict_raw(model, test_images, device="cpu")
    assert maps.shape == (len(test_images), SIZE, SIZE) and np.isfinite(maps).all()
    loaded = core.load_model(core.save_model(model, tmp_path / name), device="cpu")
    again, _ = core.predict_raw(loaded, test_images, device="cpu")
    np.testing.assert_allclose(again, scores, rtol=1e-5)


def test_reverse_distillation_needs_layers_at_strides_4_8_16(weights_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"strides \[4, 8, 16\].*got \['blocks.2', 'blocks.4', 'blocks.6'\]"):
        core.build_model("reverse_distillation", image_size=SIZE, layers=["blocks.2", "blocks.4", "blocks.6"],
                         weights_dir=weights_dir)
    with pytest.raises(ValueError, match="multiple of 32"):
        core.build_model("reverse_distillation", image_size=80, weights_dir=weights_dir)


def test_predict_raw_rejects_bad_arrays(weights_dir: Path) -> None:
    model = core.build_model("padim", image_size=SIZE, weights_dir=weights_dir)
    with pytest.raises(ValueError, match=r"expected image 0 as uint8 \(H, W, 3\)"):
        core.predict_raw(model, np.zeros((1, 8, 8, 3), np.float32), device="cpu")
    with pytest.raises(ValueError, match="of one size"):
        core.predict_raw(model, [np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], device="cpu")


def test_model_sees_images_resized_as_in_training(weights_dir: Path) -> None:
    """predict_raw resizes with antialiasing like fit; anomalib's own resize is then a no-op."""
    import torch

    model = core.build_model("padim", image_size=SIZE, weights_dir=weights_dir)
    x = torch.rand(2, 3, SIZE, SIZE)
    assert torch.equal(model.pre_processor(x), (x - 0.5) / 0.5)  # forward: the export transform


# --------------------------------------------------------------------------- training


def _check_trained(model: object, images: np.ndarray, tmp_path: Path) -> None:
    scores, maps = core.predict_raw(model, images, device="cpu")  # type: ignore[arg-type]
    assert scores.dtype == np.float32 and scores.shape == (len(images),)
    assert maps.dtype == np.float32 and maps.shape == images.shape[:3]
    assert scores[0] > scores[1:].max()
    assert _peak_in_defect(maps[0])
    core.save_model(model, tmp_path / "saved")  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "model.pt"]
    loaded = core.load_model(tmp_path / "saved", device="cpu")
    scores2, maps2 = core.predict_raw(loaded, images, device="cpu")
    np.testing.assert_array_equal(scores2, scores)
    np.testing.assert_array_equal(maps2, maps)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["patchcore", "padim"])
def test_memory_bank_models_fit_predict_save_load(
    name: str, weights_dir: Path, test_images: np.ndarray, tmp_path: Path
) -> None:
    model = core.build_model(name, image_size=SIZE, weights_dir=weights_dir)
    events: list[tuple[str, float]] = []
    fit(model, _crops(12, seed=0), device="cpu", progress=lambda s, f: events.append((s, f)))
    assert events[-1] == ("fit", 1.0) and ("extract", 1.0) in events
    if name == "patchcore":  # the coreset selection reports as it goes (it was 0% until done)
        inside = [f for s, f in events if s == "fit" and 0 < f < 1]
        assert len(inside) >= 10 and inside == sorted(inside)
    _check_trained(model, test_images, tmp_path)


@pytest.mark.slow
def test_fit_is_deterministic(weights_dir: Path, test_images: np.ndarray) -> None:
    train = _crops(8, seed=3, kind="grass")
    results = []
    for _ in range(2):
        model = core.build_model("padim", image_size=SIZE, weights_dir=weights_dir, seed=5)
        fit(model, train, device="cpu", seed=5)
        results.append(core.predict_raw(model, test_images, device="cpu")[0])
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.slow
def test_stfpm_trains_without_writing_to_cwd(
    weights_dir: Path, test_images: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    model = core.build_model("stfpm", image_size=SIZE, weights_dir=weights_dir)
    events: list[tuple[str, float]] = []
    # 2 steps an epoch; STFPM's student needs about 20 steps before its maps mean anything
    fit(model, _crops(16, seed=0), device="cpu", epochs=10, progress=lambda s, f: events.append((s, f)))
    assert events[-1] == ("train", 1.0) and len(events) == 20
    assert list(cwd.iterdir()) == []  # no lightning_logs, checkpoints or results
    _check_trained(model, test_images, tmp_path)  # load_model rebuilds Stfpm without any weights


@pytest.mark.gpu
def test_fit_predict_on_cuda(weights_dir: Path, test_images: np.ndarray) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = core.build_model("padim", image_size=SIZE, weights_dir=weights_dir)
    fit(model, _crops(8, seed=0), device="cuda")
    scores, maps = core.predict_raw(model, test_images, device="cuda")
    assert scores[0] > scores[1:].max() and maps.shape == test_images.shape[:3]


# --------------------------------------------------------------------------- training process


def _write_pngs(folder: Path, images: list[np.ndarray]) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(folder / f"{i:03d}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.mark.slow
def test_train_in_subprocess(weights_dir: Path, test_images: np.ndarray, tmp_path: Path) -> None:
    config = {
        "model": "padim",
        "image_size": SIZE,
        "seed": 0,
        "device": "cpu",
        "train_images": _write_pngs(tmp_path / "train", _crops(8, seed=0)),
        "predict_images": _write_pngs(tmp_path / "predict", list(test_images)),
        "weights_dir": weights_dir,
        "output_dir": tmp_path / "out" / "model",
        "predictions": tmp_path / "out" / "predictions.npz",
    }
    events: list[dict[str, object]] = []
    result = train_in_subprocess(config, on_progress=events.append)
    stages = [e["stage"] for e in events]
    assert stages[0] == "load" and stages[-1] == "done"
    assert {"build", "extract", "fit", "save", "predict"} <= set(stages)
    assert result["allocator_fix"] is True and result["peak_rss_mb"] > 0
    with np.load(result["predictions"]) as pred:
        assert pred["maps"].dtype == np.float16 and pred["maps"].shape == test_images.shape[:3]
        assert pred["scores"][0] > pred["scores"][1:].max()
        scores, _ = core.predict_raw(core.load_model(result["output_dir"], device="cpu"), test_images, device="cpu")
        np.testing.assert_array_equal(pred["scores"], scores)


def test_train_in_subprocess_reports_the_childs_error(weights_dir: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.png")
    config = {"train_images": [missing], "weights_dir": weights_dir, "output_dir": tmp_path / "out"}
    with pytest.raises(TrainingFailed, match=rf"FileNotFoundError.*image not found: {missing}") as info:
        train_in_subprocess(config)
    assert info.value.error_type == "FileNotFoundError" and info.value.returncode == 1
    assert not (tmp_path / "out").exists()
