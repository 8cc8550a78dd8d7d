"""Shared fixtures: a fresh store home, a fake model version, real PNG/JPEG bodies."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lvkit
from lvkit.backends.fake import FakeBackend
from tests.s3 import s3_env, s3_server  # noqa: F401  (fixtures for the whole tree)


def png_bytes(rgb: np.ndarray, *, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(rgb)
    if mode:
        img = img.convert(mode)
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def make_fake_version() -> Callable[..., str]:
    """Add a fake (brightness-rule) model version to a project of a store; returns the version."""

    def make(store: lvkit.Store, project: str = "demo", **options: object) -> str:
        try:
            store.get_project(project)
        except lvkit.ResourceNotFoundException:
            store.create_project(project)
        options.setdefault("image_size", (64, 64))
        rec = store.add_model(project, backend="fake", build=lambda d: FakeBackend.save(d, **options))  # type: ignore[arg-type]
        return str(rec.version)

    return make


@pytest.fixture
def lv(home: Path, make_fake_version: Callable[..., str]) -> lvkit.LookoutVisionClient:
    """An in-process client with project 'demo' holding fake segmentation version 1 (64x64)."""
    client = lvkit.client(home)
    make_fake_version(client.service.store, "demo", segmentation=True)
    return client


@pytest.fixture
def dark() -> bytes:
    return png_bytes(np.full((64, 64, 3), 30, np.uint8))


@pytest.fixture
def bright() -> bytes:
    rgb = np.full((64, 64, 3), 30, np.uint8)
    rgb[:, :40] = 250
    return png_bytes(rgb)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled benchmark's brick category, small: 12 train, 6 good + 4 per defect type test, 64 px."""
    from lvkit.datasets.synthetic import generate

    root = generate(tmp_path_factory.mktemp("bench"), categories=("brick",), n_train=12, n_test_good=6,
                    n_test_defect_per_type=4, image_size=64)
    return root / "brick"


@pytest.fixture(scope="session")
def anomalib_home(tmp_path_factory: pytest.TempPathFactory, tiny_benchmark: Path) -> Path:
    """A store holding project 'brick' version 1: PatchCore trained by lvkit.train on the tiny benchmark."""
    pytest.importorskip("anomalib")
    home = tmp_path_factory.mktemp("anomalib-home")
    version = lvkit.train("brick", tiny_benchmark, model="patchcore", image_size=128, home=home, progress=False)
    assert version == "1"
    return home


@pytest.fixture(scope="session")
def anomalib_version_dir(anomalib_home: Path) -> Path:
    """The artifact folder of that trained PatchCore version (for the backend conformance suite)."""
    return lvkit.Store(anomalib_home).artifact_dir("brick", 1)


#: the other anomalib models, each trained once per session by ``lvkit.train`` on the tiny benchmark
#: at the smallest size that still means something (1 epoch; SuperSimpleNet's Perlin noise needs
#: 128 px, EfficientAD's autoencoder 256). Seconds of lvkit.train, one thread, most of the short
#: ones the training process starting; about 3 min for all of them in the suite (EfficientAD 75 s).
MODEL_CASES: dict[str, dict[str, object]] = {
    "dfm": {"image_size": 64},  # 12 s
    "dfkde": {"image_size": 64},  # 8 s
    "cflow": {"image_size": 64, "epochs": 1},  # 10 s
    "fastflow": {"image_size": 64, "epochs": 1},  # 9 s
    "reverse_distillation": {"image_size": 64, "epochs": 1},  # 10 s
    "supersimplenet": {"image_size": 128, "epochs": 1},  # 11 s
    "efficient_ad": {"image_size": 256, "epochs": 1},  # 112 s; teacher and Imagenette made up below
}


def model_case_params() -> list[object]:
    """:data:`MODEL_CASES` as slow pytest params; EfficientAD (about 90 s) only without LVKIT_SMOKE
    (CI runs smoke: it keeps the others, which share its code paths)."""
    import os

    smoke = pytest.mark.skipif(bool(os.environ.get("LVKIT_SMOKE")), reason="about 90 s: runs without LVKIT_SMOKE")
    return [pytest.param(name, marks=[pytest.mark.slow, *([smoke] if name == "efficient_ad" else [])])
            for name in MODEL_CASES]


def efficient_ad_files(folder: Path) -> dict[str, str]:
    """``model_kwargs`` that let EfficientAD train offline, for tests of the code path only.

    The teacher is a *randomly initialised* small PDN saved as a state dict (the right keys and
    shapes, not the distilled network anomalib downloads), and ``imagenet_dir`` holds four noise
    images in one class folder instead of Imagenette: what a user passes has the same form.
    """
    import torch
    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel

    folder.mkdir(parents=True, exist_ok=True)
    teacher = folder / "pretrained_teacher_small.pth"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(EfficientAdModel(teacher_out_channels=384, model_size="small").teacher.state_dict(), teacher)
    images = folder / "imagenet" / "noise"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return {"teacher_weights": str(teacher), "imagenet_dir": str(images.parent)}


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, tiny_benchmark: Path) -> Callable[[str], Path]:
    """``trained_model(name)``: a store home whose project ``name`` holds version 1 of that model
    (:data:`MODEL_CASES`), trained by ``lvkit.train`` on first use and shared by the session."""
    pytest.importorskip("anomalib")
    homes: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in homes:
            home = tmp_path_factory.mktemp(f"model-{name}")
            options = dict(MODEL_CASES[name])
            if name == "efficient_ad":
                options["model_kwargs"] = efficient_ad_files(home / "offline")
            lvkit.train(name, tiny_benchmark, model=name, home=home, progress=False, **options)  # type: ignore[arg-type]
            homes[name] = home
        return homes[name]

    return get


@pytest.fixture
def lvkit_server(tmp_path: Path):
    """A live ``lvkit serve`` (uvicorn in a thread, 127.0.0.1, a free port) over a fresh store.

    Has ``.url`` and ``.service``; stopped at teardown. Skipped without the ``server`` extra.
    """
    pytest.importorskip("uvicorn")
    from tests.server.live import LiveServer, serving_service

    server = LiveServer(serving_service(tmp_path / "lvkit-server-home"))
    yield server
    server.stop()
