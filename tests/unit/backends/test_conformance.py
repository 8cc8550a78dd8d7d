"""The backend contract, checked against every backend registered in ``lvkit.backends.BACKENDS``.

One parametrised suite (style guide, section 10): each registered name gets a fixture that
builds a working instance of it and names the image size its model takes.

- ``fake``: ``FakeBackend.save`` / ``load`` in a temporary folder (segmentation, 64x64).
- ``replay``: a recording of the fake backend's answers to the suite's images.
- ``anomalib``: a trained model version's folder from the session fixture
  ``anomalib_version_dir`` (tests/conftest.py); skipped while that fixture does not exist.
- ``anomalib-<model>`` (slow): the other anomalib models of ``MODEL_CASES``, each trained once per
  session by the fixture ``trained_model`` (tests/conftest.py) and loaded once here.
- ``openvino``, ``onnx``: that trained version exported at fp32 (fixture ``exported_version``,
  tests/unit/backends/conftest.py; skipped without the runtime).
- ``service``: ``ServiceBackend`` over HTTP to a live ``lvkit serve`` from the fixture
  ``lvkit_server``; skipped while no such fixture is visible here. Also run as
  ``service-in-process``: ``ServiceBackend`` over ``lvkit.client()``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import lvkit
from lvkit.backends import BACKENDS, Backend, load_backend
from lvkit.backends.fake import FakeBackend
from lvkit.shapes import BACKGROUND, BACKGROUND_COLOR, DetectAnomalyResult
from tests.conftest import MODEL_CASES, model_case_params


@dataclass
class Subject:
    backend: Any
    size: tuple[int, int]  # (width, height) of the model's images


def picture(size: tuple[int, int], fmt: str, *, seed: int = 0) -> bytes:
    """A textured image whose left part is bright (an anomaly for the fake rule)."""
    w, h = size
    rng = np.random.default_rng(seed)
    rgb = rng.integers(20, 60, (h, w, 3), dtype=np.uint8)
    rgb[:, : w // 3] = 250
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def valid_bodies(size: tuple[int, int]) -> dict[str, tuple[bytes, str]]:
    return {"png": (picture(size, "PNG"), "image/png"), "jpeg": (picture(size, "JPEG"), "image/jpeg"),
            "png-normal": (_dark(size), "image/png")}


def _dark(size: tuple[int, int]) -> bytes:
    """A uniformly dark image: normal for the fake rule, no anomaly pixel."""
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 25, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def invalid_bodies(size: tuple[int, int]) -> dict[str, tuple[bytes, str]]:
    png, jpeg = picture(size, "PNG"), picture(size, "JPEG")
    return {
        "unsupported type": (png, "image/gif"),
        "empty type": (png, ""),
        "png declared jpeg": (png, "image/jpeg"),
        "jpeg declared png": (jpeg, "image/png"),
        "truncated png": (png[: len(png) // 2], "image/png"),
        "random bytes": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "image/png"),
        "empty body": (b"", "image/png"),
    }


# --- one builder per registered backend -------------------------------------------------------------


def _fake(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    tmp_path.mkdir(parents=True, exist_ok=True)
    FakeBackend.save(tmp_path, segmentation=True, image_size=(64, 64))
    return Subject(load_backend(tmp_path), (64, 64))


def _replay(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    from lvkit.backends.replay import RECORDINGS, Recorder

    source = _fake(request, tmp_path / "fake")
    folder = tmp_path / "replay"
    folder.mkdir()
    recorder = Recorder(source.backend, folder / RECORDINGS)
    for body, content_type in valid_bodies(source.size).values():
        recorder.detect(body, content_type)  # type: ignore[arg-type]
    (folder / "lvkit.json").write_text(json.dumps({"backend": "replay"}))
    return Subject(load_backend(folder), source.size)


def _anomalib(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    try:
        folder = Path(request.getfixturevalue("anomalib_version_dir"))
    except pytest.FixtureLookupError:
        pytest.skip("needs the session fixture 'anomalib_version_dir' (a trained anomalib model version's "
                    "folder) in tests/conftest.py; the lead adds it")
    manifest = json.loads((folder / "lvkit.json").read_text())
    return Subject(load_backend(folder, device="cpu"), tuple(manifest["image_size"]))  # type: ignore[arg-type]


_LOADED: dict[str, Subject] = {}  # one load per model for the whole suite


def _anomalib_model(name: str) -> Any:
    def build(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
        if name not in _LOADED:
            folder = lvkit.Store(request.getfixturevalue("trained_model")(name)).artifact_dir(name, 1)
            manifest = json.loads((folder / "lvkit.json").read_text())
            _LOADED[name] = Subject(load_backend(folder, device="cpu"), tuple(manifest["image_size"]))
        return _LOADED[name]

    return build


def _exported(fmt: str) -> Any:
    def build(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
        folder = request.getfixturevalue("exported_version")(fmt, "fp32")
        manifest = json.loads((folder / "lvkit.json").read_text())
        return Subject(load_backend(folder, device="cpu"), tuple(manifest["image_size"]))  # type: ignore[arg-type]

    return build


def _host_fake(service: Any, project: str = "conformance") -> str:
    try:
        service.store.get_project(project)
    except lvkit.ResourceNotFoundException:
        service.store.create_project(project)
    rec = service.store.add_model(project, backend="fake",
                                  build=lambda d: FakeBackend.save(d, segmentation=True, image_size=(64, 64)))
    service.start_model(project, str(rec.version), 1)
    if hasattr(service, "wait_for"):
        service.wait_for(project, str(rec.version), timeout=30)
    return str(rec.version)


def _service(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    from lvkit.backends.service import ServiceBackend

    try:
        server = request.getfixturevalue("lvkit_server")
    except pytest.FixtureLookupError:
        pytest.skip("needs the fixture 'lvkit_server' (a live `lvkit serve`) visible from tests/unit: "
                    "the server helper provides it (define it in tests/conftest.py, not tests/server/)")
    if isinstance(server, Backend):
        return Subject(server, tuple(getattr(server, "image_size", (64, 64))))  # type: ignore[arg-type]
    if not (hasattr(server, "url") and hasattr(server, "service")):
        pytest.skip(f"lvkit_server should be a Backend or have .url and .service; got {type(server).__name__}")
    from lvkit.boto import boto3_client

    version = _host_fake(server.service)
    return Subject(ServiceBackend(boto3_client(server.url), "conformance", version), (64, 64))


def _service_in_process(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    from lvkit.backends.service import ServiceBackend

    lv = lvkit.client(tmp_path / "home")
    version = _host_fake(lv.service)
    request.addfinalizer(lv.service.close)
    return Subject(ServiceBackend(lv, "conformance", version), (64, 64))


BUILDERS = {"fake": _fake, "replay": _replay, "anomalib": _anomalib, "service": _service,
            "service-in-process": _service_in_process, "openvino": _exported("openvino"), "onnx": _exported("onnx"),
            **{f"anomalib-{name}": _anomalib_model(name) for name in MODEL_CASES}}


def test_every_registered_backend_has_a_builder() -> None:
    assert set(BACKENDS) <= set(BUILDERS), f"add a builder for {sorted(set(BACKENDS) - set(BUILDERS))}"


@pytest.fixture(params=[*sorted(BACKENDS), "service-in-process",
                        *(pytest.param(f"anomalib-{p.values[0]}", marks=p.marks) for p in model_case_params())])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return BUILDERS[request.param](request, tmp_path)


# --- the contract -------------------------------------------------------------------------------


def test_is_a_backend(subject: Subject) -> None:
    assert isinstance(subject.backend, Backend)


@pytest.mark.parametrize("kind", ["png", "jpeg", "png-normal"])
def test_valid_image_gives_a_result_whose_wire_form_round_trips(subject: Subject, kind: str) -> None:
    body, content_type = valid_bodies(subject.size)[kind]
    r = subject.backend.detect(body, content_type)
    assert isinstance(r, DetectAnomalyResult)
    assert isinstance(r.is_anomalous, bool) and 0.0 <= r.confidence <= 1.0
    assert DetectAnomalyResult.from_wire(r.to_wire()) == r
    assert DetectAnomalyResult.from_wire(json.loads(json.dumps(r.to_json()))) == r
    assert subject.backend.detect(body, content_type) == r  # same body, same result


@pytest.mark.parametrize("case", list(invalid_bodies((64, 64))))
def test_invalid_requests_are_validation_errors(subject: Subject, case: str) -> None:
    body, content_type = invalid_bodies(subject.size)[case]
    with pytest.raises(lvkit.ValidationException):
        subject.backend.detect(body, content_type)


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_segmentation_invariants(subject: Subject, kind: str) -> None:
    body, content_type = valid_bodies(subject.size)[kind]
    r = subject.backend.detect(body, content_type)
    if r.anomalies is None:
        pytest.skip("a classification model: no Anomalies")
    first = r.anomalies[0]
    assert (first.name, first.color) == (BACKGROUND, BACKGROUND_COLOR)
    assert sum(a.total_percentage_area for a in r.anomalies) == pytest.approx(1.0, abs=1e-9)
    assert r.anomaly_mask is not None
    mask = Image.open(io.BytesIO(r.anomaly_mask))
    assert mask.format == "PNG" and mask.mode == "RGB" and mask.size == subject.size
    rgb = np.asarray(mask)
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    labelled = np.zeros(code.shape, bool)
    for a in r.anomalies[1:]:
        here = code == int(a.color[1:], 16)
        assert a.color != "#000000" and here.any(), f"{a.name}'s colour {a.color} is not in the mask"
        assert here.mean() == pytest.approx(a.total_percentage_area, abs=1e-9)
        labelled |= here
    assert (code[~labelled] == 0).all(), "pixels outside every label must be black (background)"
    assert (~labelled).mean() == pytest.approx(first.total_percentage_area, abs=1e-9)


# --- recalibration: one wrapper for every backend (issue 12, items 2 and 3) ----------------------

#: moves every P(anomaly) up (intercept 3): confident normal answers (P(anomaly) 0.1) turn anomalous
SHIFT = {"kind": "platt", "slope": 1.0, "intercept": 3.0, "eps": 1e-6}


@pytest.mark.parametrize("kind", ["png", "jpeg", "png-normal"])
def test_a_recalibrator_decides_and_confidence_stays_the_verdicts(subject: Subject, kind: str) -> None:
    from lvkit.backends.recalibrated import Recalibrated
    from lvkit.eval import anomaly_score
    from lvkit.eval.calibration import calibrator_from_dict

    body, content_type = valid_bodies(subject.size)[kind]
    before = subject.backend.detect(body, content_type)
    wrapped = Recalibrated(subject.backend, SHIFT)
    after = wrapped.detect(body, content_type)  # type: ignore[arg-type]
    p = float(calibrator_from_dict(SHIFT).predict(np.array([anomaly_score(before.is_anomalous, before.confidence)]))[0])
    assert after.is_anomalous == (p > 0.5)
    assert after.confidence == pytest.approx(max(p, 1 - p)) and after.confidence >= 0.5
    assert after.anomaly_mask == before.anomaly_mask and after.anomalies == before.anomalies
    many = wrapped.detect_many([(body, content_type), (b"", "image/png")])  # type: ignore[list-item]
    assert many[0] == after and isinstance(many[1], lvkit.ValidationException)


def test_the_service_recalibrates_every_backend_on_the_next_request(tmp_path: Path) -> None:
    from lvkit.backends.replay import Recorder, register_recording

    lv = lvkit.client(tmp_path / "home")
    body, content_type = valid_bodies((64, 64))["png-normal"]
    fake = _host_fake(lv.service, "fake")
    recording = tmp_path / "rec.jsonl"
    Recorder(load_backend(lv.service.store.artifact_dir("fake", int(fake))), recording).detect(body, "image/png")
    replay = register_recording(lv.service.store, "replay", recording)
    for project, version in (("fake", fake), ("replay", replay)):
        call = dict(ProjectName=project, ModelVersion=version, Body=body, ContentType=content_type)
        if project == "replay":
            lv.service.start_model(project, version, 1)
            lv.service.wait_for(project, version, timeout=30)
        before = lv.detect_anomalies(**call)["DetectAnomalyResult"]
        assert before["IsAnomalous"] is False
        lv.service.attach_calibration(project, version, SHIFT)
        after = lv.detect_anomalies(**call)["DetectAnomalyResult"]
        assert after["IsAnomalous"] is True and after["Confidence"] >= 0.5, project
        lv.service.attach_calibration(project, version, None)
        assert lv.detect_anomalies(**call)["DetectAnomalyResult"] == before
    lv.service.close()


def test_raw_backends_are_typed_and_recalibration_keeps_the_protocol(tmp_path: Path) -> None:
    """``lvkit.backends.RawBackend`` is what ``lvkit.eval`` checks (issue 12, item 7)."""
    from lvkit.backends import RawBackend
    from lvkit.backends.recalibrated import Recalibrated
    from lvkit.eval.run import exposes_raw

    fake = _fake(None, tmp_path).backend  # type: ignore[arg-type]
    assert not isinstance(fake, RawBackend) and not exposes_raw(Recalibrated(fake, SHIFT))

    class Raw(FakeBackend):
        def raw(self, batch: Any) -> Any:
            return np.zeros(len(batch), np.float32), np.zeros(batch.shape[:3], np.float32)

        def check_size(self, rgb: Any) -> None:
            pass

        def result(self, rgb: Any, score: float, amap: Any) -> DetectAnomalyResult:
            return DetectAnomalyResult(is_anomalous=False, confidence=0.9)

    raw = Raw(lambda rgb: DetectAnomalyResult(is_anomalous=False, confidence=0.9))
    wrapped = Recalibrated(raw, SHIFT)
    assert isinstance(raw, RawBackend) and exposes_raw(wrapped)
    assert wrapped.result(np.zeros((4, 4, 3), np.uint8), 0.0, None).is_anomalous  # recalibrated: 0.1 -> 0.75
