"""SQLite state and atomic artifact folders: failures leave nothing half-written; restarts recover."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import lvkit
from lvkit.backends.fake import FakeBackend
from lvkit.store import Store


def test_failed_build_leaves_no_folder_and_failed_status(tmp_path):
    store = Store(tmp_path)
    store.create_project("p")

    def build(d):
        (d / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.add_model("p", backend="fake", build=build)
    m = store.get_model("p", "1")
    assert m.status == "TRAINING_FAILED" and "disk full" in m.status_message
    assert not store.artifact_dir("p", 1).exists()
    assert list((tmp_path / "artifacts" / "p").iterdir()) == []
    # the next version gets a new number, the failed one stays listed
    rec = store.add_model("p", backend="fake", build=lambda d: FakeBackend.save(d))
    assert rec.version == 2 and rec.status == "TRAINED"
    assert (store.artifact_dir("p", 2) / "lvkit.json").exists()


def test_crash_during_training_recovers_on_restart(tmp_path):
    """A process killed mid-training leaves a TRAINING row and a temp folder; reopening settles both."""
    script = textwrap.dedent(f"""
        import os
        from lvkit.store import Store
        store = Store({str(tmp_path)!r})
        store.create_project("p")
        def build(d):
            (d / "partial").write_text("x")
            os._exit(9)  # killed mid-write
        store.add_model("p", backend="fake", build=build)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    assert list((tmp_path / "artifacts" / "p").glob(".tmp-*"))
    store = Store(tmp_path)
    m = store.get_model("p", "1")
    assert m.status == "TRAINING_FAILED" and "interrupted" in m.status_message
    assert not list((tmp_path / "artifacts" / "p").glob(".tmp-*"))


def test_crash_during_hosting_recovers(tmp_path):
    script = textwrap.dedent(f"""
        import os
        from lvkit.store import Store
        from lvkit.backends.fake import FakeBackend
        store = Store({str(tmp_path)!r})
        store.create_project("p")
        store.add_model("p", backend="fake", build=lambda d: FakeBackend.save(d))
        store.set_status("p", 1, "STARTING_HOSTING", "hosting is starting")
        os._exit(3)
    """)
    subprocess.run([sys.executable, "-c", script], check=False)
    lv = lvkit.client(tmp_path)
    d = lv.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]
    assert d["Status"] == "TRAINED" and "interrupted" in d["StatusMessage"]
    lv.start_model(ProjectName="p", ModelVersion="1", MinInferenceUnits=1)  # usable again
    assert lv.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]["Status"] == "HOSTED"


def test_hosting_failure_is_reported_in_status(tmp_path):
    store = Store(tmp_path)
    store.create_project("p")

    def build(d):
        (d / "lvkit.json").write_text("{not json")

    store.add_model("p", backend="fake", build=build)
    lv = lvkit.client(store)
    lv.start_model(ProjectName="p", ModelVersion="1", MinInferenceUnits=1)
    d = lv.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]
    assert d["Status"] == "HOSTING_FAILED" and "hosting failed" in d["StatusMessage"]
    lv.stop_model(ProjectName="p", ModelVersion="1")  # a failed hosting can be stopped
    assert lv.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]["Status"] == "TRAINED"


def test_async_start_shows_starting_hosting(tmp_path, dark):
    import threading

    gate = threading.Event()

    def slow_loader(path, **options):
        gate.wait(10)
        return FakeBackend.load(path, **options)

    store = Store(tmp_path)
    store.create_project("p")
    store.add_model("p", backend="fake", build=lambda d: FakeBackend.save(d, image_size=(64, 64)))
    service = lvkit.LookoutVisionService(store, wait=False, loader=slow_loader)
    assert service.start_model("p", "1", 1) == "STARTING_HOSTING"
    assert service.describe_model("p", "1").status == "STARTING_HOSTING"
    with pytest.raises(lvkit.ConflictException, match="STARTING_HOSTING"):
        service.detect_anomalies("p", "1", dark, "image/png")
    gate.set()
    assert service.wait_for("p", "1", timeout=10) == "HOSTED"
    assert service.detect_anomalies("p", "1", dark, "image/png").is_anomalous is False


def test_arns_fixed_at_creation(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    store = Store(tmp_path)
    assert store.project_arn("x") == "arn:aws:lookoutvision:eu-west-1:000000000000:project/x"
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert Store(tmp_path).model_arn("x", 3) == "arn:aws:lookoutvision:eu-west-1:000000000000:model/x/3"


def test_statuses_are_model_status_in_the_store_and_service_and_plain_strings_on_the_wire(tmp_path):
    from lvkit.shapes import ModelStatus

    store = Store(tmp_path)
    store.create_project("p")
    rec = store.add_model("p", backend="fake", build=lambda d: FakeBackend.save(d, image_size=(64, 64)))
    assert rec.status is ModelStatus.TRAINED and store.list_models("p")[0].status is ModelStatus.TRAINED
    assert store.set_status("p", 1, ModelStatus.STARTING_HOSTING, "starting", expect=(ModelStatus.TRAINED,))
    assert not store.set_status("p", 1, ModelStatus.HOSTED, "hosted", expect=(ModelStatus.TRAINED,))
    assert store.get_model("p", 1).status is ModelStatus.STARTING_HOSTING
    store.set_status("p", 1, ModelStatus.TRAINED, "back")
    lv = lvkit.client(store)
    assert lv.service.start_model("p", "1", 1) is ModelStatus.STARTING_HOSTING
    assert lv.service.describe_model("p", "1").status is ModelStatus.HOSTED
    answer = lv.stop_model(ProjectName="p", ModelVersion="1")["Status"]
    assert type(answer) is str and answer == "STOPPING_HOSTING"
    status = lv.describe_model(ProjectName="p", ModelVersion="1")["ModelDescription"]["Status"]
    assert type(status) is str and status == "TRAINED"
    with pytest.raises(ValueError):
        store.set_status("p", 1, "RUNNING", "not a status")  # type: ignore[arg-type]
