"""Training checks everything it can before it creates anything, and masks follow their images.

Issue 13, items 1 and 2: a typo in an option, or a broken mask, used to create the project and
a failed version (which nothing could delete) and print a traceback; a folder of images of two
sizes with masks and ``--resize`` crashed after training in ``union_mask``.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import lvkit
from lvkit.backends.anomalib.train import check_options
from lvkit.cli import main


@pytest.mark.parametrize(("options", "message"), [
    ({"model": "padimm"}, "did you mean 'padim'?"),
    ({"model": "nope"}, "Choose one of: patchcore, padim"),
    ({"device": "gpu"}, "expected device 'auto', 'cpu' or 'cuda[:N]'"),
    ({"image_size": 0}, "image_size must be an integer from 32"),
    ({"image_size": 256.0}, "image_size must be an integer from 32"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"model": "supersimplenet", "image_size": 64}, "supersimplenet needs an image_size of at least 128"),
    ({"model": "efficient_ad", "image_size": 128}, "efficient_ad needs an image_size of at least 256"),
    ({"model": "reverse_distillation", "image_size": 80}, "reverse_distillation needs an image_size that is a "
                                                           "multiple of 32"),
    ({"backbone": "resnet18"}, "layers must be given for backbone 'resnet18'"),
    ({"model": "ganomaly", "backbone": "tf_efficientnet_lite1"}, "has its own network"),
    ({"model": "padim", "model_kwargs": {"n_feature": 50}}, "model 'padim' takes no option 'n_feature'; its "
                                                           "options: n_features (the backbone"),
    ({"model_kwargs": {"backbone": "resnet18"}}, "model 'patchcore' takes no option 'backbone'"),
])
def test_bad_options_create_nothing(tmp_path, tiny_benchmark, options, message):
    pytest.importorskip("anomalib")
    with pytest.raises(lvkit.ValidationException, match=message.replace("(", r"\(").replace("[", r"\[")
                       .replace("?", r"\?")):
        lvkit.train("typo", tiny_benchmark, home=tmp_path, progress=False, **options)
    assert lvkit.client(tmp_path).list_projects()["Projects"] == []


def test_check_options_accepts_the_defaults():
    pytest.importorskip("anomalib")
    check_options(model="patchcore", device="cpu", image_size=256, epochs=None)


def test_cli_typo_is_one_line_and_creates_nothing(tmp_path, tiny_benchmark):
    pytest.importorskip("anomalib")
    result = CliRunner().invoke(main, ["train", "--project", "p", "--dataset", str(tiny_benchmark),
                                       "--model", "padimm", "--home", str(tmp_path)])
    assert result.exit_code == 1
    assert "did you mean 'padim'?" in result.output and "Traceback" not in result.output
    assert lvkit.client(tmp_path).list_projects()["Projects"] == []


def test_cli_model_options_reach_the_model_and_a_typo_creates_nothing(tmp_path, tiny_benchmark):
    pytest.importorskip("anomalib")
    runner = CliRunner()
    args = ["train", "--project", "p", "--dataset", str(tiny_benchmark), "--model", "padim", "--image-size", "64",
            "--device", "cpu", "--home", str(tmp_path)]
    typo = runner.invoke(main, [*args, "--model-option", "n_featurs=20"])
    assert typo.exit_code == 1 and "takes no option 'n_featurs'; its options: n_features" in typo.output
    malformed = runner.invoke(main, [*args, "--model-option", "n_features"])
    assert malformed.exit_code == 2 and "expected KEY=VALUE, got 'n_features'" in malformed.output
    twice = runner.invoke(main, [*args, "--model-option", "n_features=2", "--model-option", "n_features=3"])
    assert twice.exit_code == 2 and "n_features is given twice" in twice.output
    nan = runner.invoke(main, [*args, "--model-option", "n_features=NaN"])
    assert nan.exit_code == 2 and "'NaN' is not a finite number" in nan.output
    assert lvkit.client(tmp_path).list_projects()["Projects"] == []
    trained = runner.invoke(main, [*args, "--model-option", "n_features=20"])
    assert trained.exit_code == 0, trained.output
    configs = [json.loads(p.read_text()) for p in tmp_path.rglob("config.json")]
    assert [c["kwargs"] for c in configs if c.get("name") == "padim"] == [{"n_features": 20}]  # an int, from JSON


def test_a_mask_of_the_wrong_size_fails_before_anything_is_created(tmp_path, tiny_benchmark):
    pytest.importorskip("anomalib")
    data = shutil.copytree(tiny_benchmark, tmp_path / "data")
    for path in (data / "ground_truth").rglob("*.png"):
        with Image.open(path) as im:
            im.resize((40, 40)).save(path)  # masks no longer match their 64 px images
    with pytest.raises(lvkit.DatasetError, match="is 40x40 but its image"):
        lvkit.train("masks", data, home=tmp_path / "home", progress=False)
    assert lvkit.client(tmp_path / "home").list_projects()["Projects"] == []


def test_a_failed_version_can_be_deleted_so_its_project_can_be(tmp_path, make_fake_version, dark):
    store = lvkit.Store(tmp_path)
    store.create_project("p")
    with pytest.raises(RuntimeError):
        store.add_model("p", backend="fake", build=lambda d: (_ for _ in ()).throw(RuntimeError("bad data")))
    make_fake_version(store, "p")
    runner = CliRunner()
    lv = lvkit.client(store)
    lv.start_model(ProjectName="p", ModelVersion="2", MinInferenceUnits=1)
    hosted = runner.invoke(main, ["models", "delete", "--project", "p", "--version", "2", "--home", str(tmp_path)])
    assert hosted.exit_code == 1 and "ConflictException" in hosted.output and "stop it first" in hosted.output
    lv.stop_model(ProjectName="p", ModelVersion="2")
    for version in ("1", "2"):
        done = runner.invoke(
            main, ["models", "delete", "--project", "p", "--version", version, "--home", str(tmp_path)]
        )
        assert done.exit_code == 0, done.output
    assert not (tmp_path / "artifacts" / "p" / "2").exists()
    lv.delete_project(ProjectName="p")  # possible now
    assert lv.list_projects()["Projects"] == []


@pytest.mark.slow
def test_images_of_two_sizes_with_masks_train_with_resize(tmp_path, tiny_benchmark):
    """Half the images (and their masks) at 80 px, half at 64 px: trains, serves, scores masks."""
    pytest.importorskip("anomalib")
    data = shutil.copytree(tiny_benchmark, tmp_path / "data")
    for path in sorted(data.rglob("*.png")):
        stem = path.name.removesuffix("_mask.png").removesuffix(".png")
        if int(stem) % 2:  # the same images and masks: 001, 003, ...
            with Image.open(path) as im:
                im.resize((80, 80), Image.Resampling.NEAREST if "ground_truth" in path.parts else
                          Image.Resampling.BILINEAR).save(path)
    version = lvkit.train("sizes", data, model="padim", image_size=64, resize=True, home=tmp_path / "home",
                          progress=False)
    lv = lvkit.client(tmp_path / "home")
    d = lv.describe_model(ProjectName="sizes", ModelVersion=version)["ModelDescription"]
    assert d["Status"] == "TRAINED" and d["Performance"]["F1Score"] >= 0
    lv.start_model(ProjectName="sizes", ModelVersion=version, MinInferenceUnits=1)
    for image in (data / "test" / "hole" / "000.png", data / "test" / "hole" / "001.png"):
        r = lv.detect_anomalies(ProjectName="sizes", ModelVersion=version, ContentType="image/png",
                                Body=image.read_bytes())["DetectAnomalyResult"]
        assert isinstance(r["IsAnomalous"], bool)
        with Image.open(io.BytesIO(r["AnomalyMask"])) as mask, Image.open(image) as im:
            assert mask.size == im.size  # the mask is at the request's size
    assert np.isfinite(d["Performance"]["F1Score"])


def _flat_folder(root: Path, tmp_path: Path) -> Path:
    """The generated MVTec category as one flat normal/ + anomaly/ folder (no test split)."""
    flat = tmp_path / "flat"
    (flat / "normal").mkdir(parents=True)
    (flat / "anomaly").mkdir()
    for i, path in enumerate(sorted((root / "train" / "good").glob("*.png")) +
                             sorted((root / "test" / "good").glob("*.png"))):
        shutil.copy(path, flat / "normal" / f"{i:03d}.png")
    for i, path in enumerate(p for p in sorted((root / "test").rglob("*.png")) if p.parent.name != "good"):
        shutil.copy(path, flat / "anomaly" / f"{i:03d}.png")
    return flat


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lvkit.datasets.synthetic import generate

    base = tmp_path_factory.mktemp("flat")
    root = generate(base / "gen", categories=("brick",), n_train=20, n_test_good=4, n_test_defect_per_type=3,
                    image_size=64)
    return _flat_folder(root / "brick", base)


def test_a_dataset_without_a_test_split_is_split_as_the_service_did(flat):
    from lvkit.training import plan_splits

    ds = lvkit.datasets.load(flat)
    assert {s.split for s in ds.samples} == {"train"}
    splits = plan_splits(ds, seed=0)
    evaluation = splits["evaluation"]
    assert sum(s.label == 0 for s in evaluation) == 24 // 5 and sum(s.label == 1 for s in evaluation) == 9 // 2
    used = {str(s.image_path) for s in splits["fit"] + splits["validation"]}
    assert not used & {str(s.image_path) for s in evaluation}  # held out from fitting and thresholds
    assert any(s.label == 1 for s in splits["validation"])
    assert [s.image_path for s in plan_splits(ds, seed=0)["evaluation"]] == [s.image_path for s in evaluation]


def test_a_single_dataset_needs_twenty_normal_images(flat, tmp_path):
    small = shutil.copytree(flat, tmp_path / "small")
    for path in sorted((small / "normal").glob("*.png"))[19:]:
        path.unlink()
    with pytest.raises(lvkit.DatasetError, match="at least 20 normal images"):
        lvkit.train("small", small, home=tmp_path / "home", progress=False)
    assert lvkit.client(tmp_path / "home").list_projects()["Projects"] == []


@pytest.mark.slow
def test_a_flat_folder_trains_with_performance(flat, tmp_path):
    pytest.importorskip("anomalib")
    version = lvkit.train("flat", flat, model="padim", image_size=64, home=tmp_path, progress=False)
    d = lvkit.client(tmp_path).describe_model(ProjectName="flat", ModelVersion=version)["ModelDescription"]
    assert d["Status"] == "TRAINED"
    assert set(d["Performance"]) == {"F1Score", "Recall", "Precision"}
