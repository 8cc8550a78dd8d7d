"""Recorder + ReplayBackend: identical answers by content, clear errors, served as a model version."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lvkit
from lvkit.backends import BACKENDS, load_backend
from lvkit.backends.fake import FakeBackend, brightness_handler
from lvkit.backends.replay import RECORDINGS, Recorder, ReplayBackend, record, register_recording
from lvkit.eval import run


def image(value: int, *, fmt: str = "PNG") -> bytes:
    rgb = np.full((64, 64, 3), 30, np.uint8)
    rgb[:, : value % 64] = 250
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend(brightness_handler(threshold=100.0, segmentation=True), image_size=(64, 64))


def test_replay_returns_exactly_what_was_recorded(tmp_path: Path, fake) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(fake, path)
    bodies = [(image(10), "image/png"), (image(50), "image/png"), (image(40, fmt="JPEG"), "image/jpeg")]
    recorded = [recorder.detect(b, ct) for b, ct in bodies]
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [ln["sha256"] for ln in lines] == [hashlib.sha256(b).hexdigest() for b, _ in bodies]
    assert lines[0]["image"] is None and lines[2]["request"] == {"ContentType": "image/jpeg"}
    assert isinstance(lines[0]["DetectAnomalyResult"]["AnomalyMask"], str)  # base64 in JSON
    replay = ReplayBackend(path)
    assert len(replay) == 3 and isinstance(replay, lvkit.Backend)
    for (body, ct), r in zip(bodies, recorded):
        again = replay.detect(body, ct)
        assert again == r and again.anomaly_mask == r.anomaly_mask  # mask bytes identical


def test_unknown_image_is_resource_not_found(tmp_path: Path, fake) -> None:
    path = tmp_path / "rec.jsonl"
    Recorder(fake, path).detect(image(10), "image/png")
    with pytest.raises(lvkit.ResourceNotFoundException, match="no recorded response for this image") as info:
        ReplayBackend(path).detect(image(11), "image/png")
    assert info.value.resource_type == "MODEL" and info.value.resource_id == str(path)
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


@pytest.mark.parametrize("body, content_type, match", [
    (image(10), "image/gif", "valid values are image/png and image/jpeg"),
    (image(10), "image/jpeg", "not a JPEG"),
    (image(10)[:100], "image/png", "truncated or corrupt"),
    (b"", "image/png", "empty"),
])
def test_requests_are_validated_before_lookup(tmp_path: Path, fake, body, content_type, match) -> None:
    path = tmp_path / "rec.jsonl"
    Recorder(fake, path).detect(image(10), "image/png")
    with pytest.raises(lvkit.ValidationException, match=match):
        ReplayBackend(path).detect(body, content_type)


def test_malformed_lines_name_the_line(tmp_path: Path, fake) -> None:
    path = tmp_path / "rec.jsonl"
    Recorder(fake, path).detect(image(10), "image/png")
    good = path.read_text()
    for bad, match in [("{not json", "line 3: not a recorded response"),
                       ('{"sha256": "ab"}', "line 3: not a recorded response .*KeyError"),
                       (json.dumps({"sha256": "ab", "DetectAnomalyResult": {"IsAnomalous": True, "Confidence": 0.5}}),
                        "line 3: expected a sha256 of 64 hex digits"),
                       (json.dumps({"sha256": "0" * 64, "DetectAnomalyResult": {"IsAnomalous": True, "Confidence": 2}}),
                        "line 3: .*Confidence in \\[0, 1\\]")]:
        path.write_text(good + "\n" + bad + "\n")  # a blank line 2 is fine
        with pytest.raises(ValueError, match=f"{path}, {match}"):
            ReplayBackend(path)


def test_duplicates(tmp_path: Path, fake) -> None:
    path = tmp_path / "rec.jsonl"
    body = image(10)
    Recorder(fake, path).detect(body, "image/png")
    Recorder(fake, path).detect(body, "image/png")  # same answer twice: fine
    assert len(ReplayBackend(path)) == 1
    other = FakeBackend(brightness_handler(threshold=5.0, segmentation=True))
    last = Recorder(other, path).detect(body, "image/png")
    with pytest.raises(ValueError, match="line 3: image .* different result on line 1; pass duplicates='last'"):
        ReplayBackend(path)
    assert ReplayBackend(path, duplicates="last").detect(body, "image/png") == last
    with pytest.raises(ValueError, match="duplicates"):
        ReplayBackend(path, duplicates="first")


def test_appends_are_whole_lines_under_threads(tmp_path: Path, fake) -> None:
    path = tmp_path / "sub" / "rec.jsonl"
    recorders = [Recorder(fake, path) for _ in range(4)]
    threads = [threading.Thread(target=lambda r=r, k=k: [r.detect(image(k * 10 + i), "image/png") for i in range(5)])
               for k, r in enumerate(recorders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 20 and all(json.loads(x)["sha256"] for x in lines)


def test_recording_a_client_and_a_dataset(tmp_path: Path, lv, brick_ds) -> None:
    lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(lv, path, project="demo", version="1")
    response = recorder.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png",
                                         Body=io.BytesIO(image(20)))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert recorder.detect(image(5), "image/png", image="x.png").is_anomalous is False
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["request"] == {"ContentType": "image/png", "ProjectName": "demo", "ModelVersion": "1"}
    assert lines[1]["image"] == "x.png"
    with pytest.raises(ValueError, match="project"):
        Recorder(lv, path).detect(image(30), "image/png")
    with pytest.raises(lvkit.ValidationException):  # failures raise and are not recorded
        recorder.detect(b"junk", "image/png")
    assert len(path.read_text().splitlines()) == 2
    assert not hasattr(Recorder(FakeBackend(brightness_handler()), path), "detect_anomalies")
    dataset_path = tmp_path / "ds.jsonl"
    assert record(lv, brick_ds, dataset_path, project="demo", version="1") == len(brick_ds.samples)
    names = [json.loads(x)["image"] for x in dataset_path.read_text().splitlines()]
    assert names == [s.image_path.name for s in brick_ds.samples]
    # the replay answers the whole dataset as the recorded model did
    assert run(ReplayBackend(dataset_path), brick_ds, progress=False).drop(columns="latency_s").equals(
        run(lv, brick_ds, project="demo", version="1", progress=False).drop(columns="latency_s"))


def test_registered_recording_is_a_model_version(tmp_path: Path, fake, home) -> None:
    path = tmp_path / "rec.jsonl"
    body = image(50)
    recorded = Recorder(fake, path).detect(body, "image/png")
    version = register_recording(home, "logged", path)
    store = lvkit.Store(home)
    folder = store.artifact_dir("logged", int(version))
    assert json.loads((folder / "lvkit.json").read_text())["backend"] == "replay"
    assert (folder / RECORDINGS).read_bytes() == path.read_bytes()
    assert "replay" in BACKENDS and load_backend(folder).detect(body, "image/png") == recorded
    lv = lvkit.client(store)
    lv.start_model(ProjectName="logged", ModelVersion=version, MinInferenceUnits=1)
    out = lv.detect_anomalies(ProjectName="logged", ModelVersion=version, Body=body, ContentType="image/png")
    assert lvkit.DetectAnomalyResult.from_wire(out["DetectAnomalyResult"]) == recorded
    with pytest.raises(lv.exceptions.ResourceNotFoundException):
        lv.detect_anomalies(ProjectName="logged", ModelVersion=version, Body=image(51), ContentType="image/png")
    # a recalibrator attached to the version: temperature keeps each P(anomaly) on its side of 0.5, so
    # the verdict stays and Confidence moves towards 0.5
    lv.service.attach_calibration("logged", version, {"kind": "temperature", "temperature": 4.0, "eps": 1e-6})
    calibrated = lv.detect_anomalies(ProjectName="logged", ModelVersion=version, Body=body, ContentType="image/png")
    r = lvkit.DetectAnomalyResult.from_wire(calibrated["DetectAnomalyResult"])
    assert r.is_anomalous == recorded.is_anomalous and r.anomaly_mask == recorded.anomaly_mask
    assert 0.5 <= r.confidence < recorded.confidence
    assert register_recording(store, "logged", path) == str(int(version) + 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n")
    with pytest.raises(ValueError, match="line 1"):
        register_recording(store, "logged", bad)
    assert len(store.list_models("logged")) == 2  # nothing added for the malformed one


@pytest.fixture
def brick_ds(tmp_path_factory):
    root = lvkit.datasets.generate(tmp_path_factory.mktemp("replaybench"), categories=("brick",), n_train=2,
                                   n_test_good=2, n_test_defect_per_type=1, image_size=64)
    return lvkit.datasets.load(root / "brick").split("test")

