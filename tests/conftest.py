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
