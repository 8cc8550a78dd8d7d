"""lvkit.train + the anomalib backend through lvkit.client(): real models on the real benchmark."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lvkit
from lvkit.datasets import read_label_masks
from lvkit.eval import anomaly_score, image_auroc
from tests.conftest import MODEL_CASES, model_case_params, png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hosted(anomalib_home: Path):
    lv = lvkit.client(anomalib_home)
    lv.start_model(ProjectName="brick", ModelVersion="1", MinInferenceUnits=1)
    yield lv
    lv.stop_model(ProjectName="brick", ModelVersion="1")


def test_trained_version_is_described(anomalib_home: Path):
    lv = lvkit.client(anomalib_home)
    d = lv.describe_model(ProjectName="brick", ModelVersion="latest")["ModelDescription"]
    assert d["Status"] in ("TRAINED", "HOSTED") and d["ModelVersion"] == "1"
    assert set(d["Performance"]) == {"F1Score", "Recall", "Precision"}
    manifest = json.loads((lvkit.Store(anomalib_home).artifact_dir("brick", 1) / "lvkit.json").read_text())
    assert manifest["labels"] == ["hole", "scratch", "stain"] and manifest["segmentation"] is True
    assert manifest["image_size"] == [64, 64]
    assert not set(manifest["splits"]["validation"]) & set(manifest["splits"]["evaluation"])
    assert not set(manifest["splits"]["fit"]) & set(manifest["splits"]["validation"])


def test_detect_on_the_benchmark(hosted, tiny_benchmark: Path):
    test = lvkit.datasets.load(tiny_benchmark).split("test")
    labels, scores = [], []
    for s in test.samples:
        body = Path(s.image_path).read_bytes()
        r = hosted.detect_anomalies(ProjectName="brick", ModelVersion="latest", ContentType="image/png", Body=body)
        res = r["DetectAnomalyResult"]
        assert 0.5 <= res["Confidence"] <= 1.0
        assert res["Anomalies"][0]["Name"] == "background" and res["Anomalies"][0]["PixelAnomaly"]["Color"] == "#FFFFFF"
        assert sum(a["PixelAnomaly"]["TotalPercentageArea"] for a in res["Anomalies"]) == pytest.approx(1.0)
        mask = np.asarray(Image.open(io.BytesIO(res["AnomalyMask"])))
        assert mask.shape == (64, 64, 3)
        names = {a["Name"] for a in res["Anomalies"][1:]}
        assert names <= {"hole", "scratch", "stain"}
        labels.append(s.label)
        scores.append(anomaly_score(res["IsAnomalous"], res["Confidence"]))
        if s.label == 1 and res["IsAnomalous"]:
            truth = next(iter(read_label_masks(s).values()))
            assert mask.any(axis=2)[truth].any() or len(res["Anomalies"]) == 1
    assert image_auroc(labels, scores) > 0.8


def test_same_image_same_answer(hosted, tiny_benchmark: Path):
    body = next((tiny_benchmark / "test" / "hole").glob("*.png")).read_bytes()
    a = hosted.detect_anomalies(ProjectName="brick", ModelVersion="1", ContentType="image/png", Body=body)
    b = hosted.detect_anomalies(ProjectName="brick", ModelVersion="1", ContentType="image/png", Body=body)
    assert a["DetectAnomalyResult"] == b["DetectAnomalyResult"]


def test_jpeg_and_grayscale_inputs(hosted, tiny_benchmark: Path):
    rgb = np.asarray(Image.open(next((tiny_benchmark / "test" / "good").glob("*.png"))).convert("RGB"))
    for body, ct in ((png_bytes(rgb, fmt="JPEG"), "image/jpeg"), (png_bytes(rgb, mode="L"), "image/png")):
        r = hosted.detect_anomalies(ProjectName="brick", ModelVersion="1", ContentType=ct, Body=body)
        assert isinstance(r["DetectAnomalyResult"]["IsAnomalous"], bool)


def test_wrong_size_is_refused(hosted):
    body = png_bytes(np.zeros((96, 64, 3), np.uint8))
    with pytest.raises(hosted.exceptions.ValidationException, match="trained on 64x64"):
        hosted.detect_anomalies(ProjectName="brick", ModelVersion="1", ContentType="image/png", Body=body)


def test_calibration_attach_changes_confidence_not_verdict(anomalib_home: Path, tiny_benchmark: Path):
    from lvkit.eval import PlattCalibrator

    lv = lvkit.client(anomalib_home)
    status = lv.describe_model(ProjectName="brick", ModelVersion="1")["ModelDescription"]["Status"]
    if status != "HOSTED":
        lv.start_model(ProjectName="brick", ModelVersion="1", MinInferenceUnits=1)
    body = next((tiny_benchmark / "test" / "good").glob("*.png")).read_bytes()
    call = dict(ProjectName="brick", ModelVersion="1", ContentType="image/png", Body=body)
    before = lv.detect_anomalies(**call)["DetectAnomalyResult"]
    squash = PlattCalibrator(slope=0.1, intercept=0.0)  # pulls every probability towards 0.5
    lv.service.attach_calibration("brick", "1", squash.to_dict())
    after = lv.detect_anomalies(**call)["DetectAnomalyResult"]
    assert after["IsAnomalous"] == before["IsAnomalous"] and after["Confidence"] != before["Confidence"]
    lv.service.attach_calibration("brick", "1", None)
    assert lv.detect_anomalies(**call)["DetectAnomalyResult"] == before
    with pytest.raises(lvkit.ValidationException, match="recalibrator"):
        lv.service.attach_calibration("brick", "1", {"kind": "nonsense"})
    if status != "HOSTED":
        lv.stop_model(ProjectName="brick", ModelVersion="1")


def test_a_recalibrator_moves_the_operating_point_and_describe_shows_it(anomalib_home: Path):
    """Issue 12, item 3: the verdict is ``p > 0.5`` of the recalibrated P(anomaly), Confidence
    never falls below 0.5, and DescribeModel's Performance is the one at that operating point."""
    from sklearn.metrics import precision_recall_fscore_support

    from lvkit.backends import read_version_manifest
    from lvkit.eval import PlattCalibrator

    lv = lvkit.client(anomalib_home)
    describe = lambda: lv.describe_model(ProjectName="brick", ModelVersion="1")["ModelDescription"]  # noqa: E731
    trained = describe()["Performance"]
    evaluation = read_version_manifest(lv.service.store.artifact_dir("brick", 1))["evaluation"]
    assert len(evaluation["labels"]) == len(evaluation["p_anomaly"]) > 0
    biased = PlattCalibrator(slope=1.0, intercept=2.5)  # P(anomaly) pushed up: more images anomalous
    lv.service.attach_calibration("brick", "1", biased.to_dict())
    try:
        pred = biased.predict(evaluation["p_anomaly"]) > 0.5
        precision, recall, f1, _ = precision_recall_fscore_support(evaluation["labels"], pred, average="binary",
                                                                   zero_division=0)
        assert describe()["Performance"] == pytest.approx({"F1Score": f1, "Recall": recall, "Precision": precision})
        assert describe()["Performance"] != trained
    finally:
        lv.service.attach_calibration("brick", "1", None)
    assert describe()["Performance"] == trained


@pytest.mark.parametrize(("model", "kwargs"), [("padim", {}), ("stfpm", {"epochs": 1})])
def test_other_models_train_and_serve(tmp_path: Path, tiny_benchmark: Path, model: str, kwargs: dict):
    version = lvkit.train("p", tiny_benchmark, model=model, image_size=128, home=tmp_path, progress=False, **kwargs)
    lv = lvkit.client(tmp_path)
    lv.start_model(ProjectName="p", ModelVersion=version, MinInferenceUnits=1)
    body = next((tiny_benchmark / "test" / "hole").glob("*.png")).read_bytes()
    r = lv.detect_anomalies(ProjectName="p", ModelVersion=version, ContentType="image/png", Body=body)
    assert 0 <= r["DetectAnomalyResult"]["Confidence"] <= 1
    lv.stop_model(ProjectName="p", ModelVersion=version)


@pytest.mark.parametrize("model", model_case_params())
def test_more_models_train_offline_and_serve(trained_model, tiny_benchmark: Path, model: str):
    """Issue 11: each model trained offline by lvkit.train (tests/conftest.py MODEL_CASES), then
    hosted: DescribeModel has Performance, DetectAnomalies answers, masks where the model segments."""
    from lvkit.backends.anomalib.models import MODELS

    lv = lvkit.client(trained_model(model))
    d = lv.describe_model(ProjectName=model, ModelVersion="1")["ModelDescription"]
    assert d["Status"] in ("TRAINED", "HOSTED") and set(d["Performance"]) == {"F1Score", "Recall", "Precision"}
    manifest = json.loads((lv.service.store.artifact_dir(model, 1) / "lvkit.json").read_text())
    assert manifest["model"] == model and manifest["model_image_size"] == MODEL_CASES[model]["image_size"]
    lv.start_model(ProjectName=model, ModelVersion="1", MinInferenceUnits=1)
    try:
        for kind in ("hole", "good"):
            body = next((tiny_benchmark / "test" / kind).glob("*.png")).read_bytes()
            res = lv.detect_anomalies(ProjectName=model, ModelVersion="1", ContentType="image/png",
                                      Body=body)["DetectAnomalyResult"]
            assert 0.5 <= res["Confidence"] <= 1 and isinstance(res["IsAnomalous"], bool)
            assert "AnomalyMask" in res  # a version trained on a segmentation dataset
            if not MODELS[model].segmentation:  # DFKDE has no anomaly map: its masks are all background
                assert [a["Name"] for a in res["Anomalies"]] == ["background"]
    finally:
        lv.stop_model(ProjectName=model, ModelVersion="1")


def test_model_needing_downloads_fails_clearly_and_leaves_no_version(tmp_path: Path, tiny_benchmark: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # where anomalib looks for downloads
    with pytest.raises(RuntimeError, match=r"efficient_ad cannot train offline: .*pretrained_teacher_small\.pth "
                                           r"is missing.*'teacher_weights'.*imagenet_dir=<its train folder>"):
        lvkit.train("p", tiny_benchmark, model="efficient_ad", home=tmp_path, progress=False)
    m = lvkit.Store(tmp_path).get_model("p", "1")
    assert m.status == "TRAINING_FAILED" and "training failed" in m.status_message
    assert not lvkit.Store(tmp_path).artifact_dir("p", 1).exists()


def test_bad_datasets(tmp_path: Path, tiny_benchmark: Path):
    few = tmp_path / "few"
    (few / "normal").mkdir(parents=True)
    for i, p in enumerate(sorted((tiny_benchmark / "train" / "good").glob("*.png"))[:5]):
        (few / "normal" / f"{i}.png").write_bytes(p.read_bytes())
    with pytest.raises(lvkit.DatasetError, match="at least 20 normal images"):  # one dataset: the service's 20
        lvkit.train("p", few, home=tmp_path / "h", progress=False)
    fewer = shutil.copytree(tiny_benchmark, tmp_path / "fewer")
    for p in sorted((fewer / "train" / "good").glob("*.png"))[9:]:
        p.unlink()
    with pytest.raises(lvkit.DatasetError, match="at least 10 normal images"):  # train + test: 10
        lvkit.train("p", fewer, home=tmp_path / "h", progress=False)
    mixed = shutil.copytree(tiny_benchmark, tmp_path / "mixed")
    (mixed / "train" / "good" / "big.png").write_bytes(png_bytes(np.zeros((80, 80, 3), np.uint8)))
    with pytest.raises(lvkit.DatasetError, match="same size"):
        lvkit.train("p", mixed, home=tmp_path / "h", progress=False)
    manifest = tmp_path / "train.manifest"
    manifest.write_text(json.dumps({"source-ref": str(tmp_path / "nope.png"), "anomaly-label": 0,
                                    "anomaly-label-metadata": {"class-name": "normal"}}) + "\n")
    with pytest.raises(lvkit.DatasetError, match="line 1"):
        lvkit.train("p", manifest, home=tmp_path / "h", progress=False)
    with pytest.raises(lvkit.ValidationException):
        lvkit.train("-bad", tiny_benchmark, home=tmp_path / "h", progress=False)


def test_detect_many_agrees_with_detect(anomalib_version_dir: Path, tiny_benchmark: Path):
    from lvkit.backends.anomalib import AnomalibBackend

    backend = AnomalibBackend.load(anomalib_version_dir, device="cpu")
    bodies = [p.read_bytes() for p in sorted((tiny_benchmark / "test").glob("*/*.png"))[:5]]
    items = [(b, "image/png") for b in bodies] + [(b"garbage", "image/png")]
    many = backend.detect_many(items)
    assert isinstance(many[-1], lvkit.ValidationException)
    for body, got in zip(bodies, many):
        one = backend.detect(body, "image/png")
        assert got.is_anomalous == one.is_anomalous
        assert got.confidence == pytest.approx(one.confidence, abs=1e-5)
