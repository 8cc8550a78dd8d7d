"""Exported versions of the session's trained anomalib model (the ``openvino`` and ``onnx`` backends).

``exported_version(format, precision)`` exports once per session and returns the new version's
artifact folder. The exports go into a store of their own (a copy of the trained version as
project 'brick' version 1), so the shared ``anomalib_home`` keeps its single version.
Each export traces the model (about 40 s on 2 loaded cores).

``patchcore_256_store`` holds a PatchCore version at lvkit's default model size (256 px), trained
on the tiny benchmark with a 1% coreset (about 30 s): the size at which torch.export used to
fix the exported batch.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import lvkit


@pytest.fixture(scope="session")
def export_store(tmp_path_factory: pytest.TempPathFactory, anomalib_version_dir: Path) -> lvkit.Store:
    """A store whose project 'brick' version 1 is a copy of the trained PatchCore version."""
    store = lvkit.Store(tmp_path_factory.mktemp("export-home"))
    store.create_project("brick")

    def build(folder: Path) -> dict[str, float]:
        shutil.copytree(anomalib_version_dir, folder, dirs_exist_ok=True)
        return dict(json.loads((folder / "lvkit.json").read_text())["performance"])

    store.add_model("brick", backend="anomalib", build=build)
    return store


@pytest.fixture(scope="session")
def exported_version(export_store: lvkit.Store) -> Callable[[str, str], Path]:
    """``(format, precision) -> artifact folder`` of version 1 exported that way (once per session)."""
    pytest.importorskip("onnxscript")
    from lvkit.backends.anomalib.export import export_version

    made: dict[tuple[str, str], Path] = {}

    def get(fmt: str, precision: str = "fp32") -> Path:
        pytest.importorskip("openvino" if fmt == "openvino" else "onnxruntime")
        if precision == "int8" and fmt == "openvino":
            pytest.importorskip("nncf")
        if (fmt, precision) not in made:
            version = export_version(export_store, "brick", "1", format=fmt, precision=precision)
            made[fmt, precision] = export_store.artifact_dir("brick", int(version))
        return made[fmt, precision]

    return get


@pytest.fixture(scope="session")
def patchcore_256_store(tmp_path_factory: pytest.TempPathFactory, tiny_benchmark: Path) -> lvkit.Store:
    """A store whose project 'brick' version 1 is PatchCore at the default 256 px model size."""
    pytest.importorskip("anomalib")
    store = lvkit.Store(tmp_path_factory.mktemp("home-256"))
    version = lvkit.train("brick", tiny_benchmark, model="patchcore", image_size=256, home=store, progress=False,
                          model_kwargs={"coreset_sampling_ratio": 0.01})
    assert version == "1"
    return store
