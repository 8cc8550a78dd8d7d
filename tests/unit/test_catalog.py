"""Datasets through the API (lvkit.catalog): create, describe, list, update, delete; bad inputs; crashes.

Manifests here are local files (the S3 path is tests/server/test_datasets_s3.py); the
service runs in process with real images written by PIL.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lvkit
from lvkit.errors import ConflictException, ResourceNotFoundException, ValidationException
from lvkit.service import LookoutVisionService
from lvkit.shapes import DatasetStatus
from lvkit.store import Store

RED_MAP = {"0": {"class-name": "BACKGROUND", "hex-color": "#ffffff"}, "1": {"class-name": "scratch",
                                                                           "hex-color": "#ff0000"}}


def _png(path: Path, seed: int, size: int = 64, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def _mask(path: Path, size: int = 64) -> Path:
    a = np.full((size, size, 3), 255, np.uint8)
    a[10:20, 10:20] = (255, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


def _line(ref: str, label: int | None = 0, mask: str | None = None) -> str:
    record: dict = {"source-ref": ref}
    if label is not None:
        record["anomaly-label"] = label
        record["anomaly-label-metadata"] = {"class-name": "anomaly" if label else "normal",
                                            "type": "groundtruth/image-classification", "human-annotated": "yes"}
    if mask is not None:
        record["anomaly-mask-ref"] = mask
        record["anomaly-mask-ref-metadata"] = {"internal-color-map": RED_MAP,
                                               "type": "groundtruth/semantic-segmentation"}
    return json.dumps(record)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Images: 4 normal, 2 anomalous with masks, 1 unlabeled; a manifest with relative refs."""
    root = tmp_path / "src"
    lines = [_line(f"good/{i}.png") for i in range(4) if _png(root / "good" / f"{i}.png", i)]
    for i in range(2):
        _png(root / "bad" / f"{i}.png", 10 + i)
        _mask(root / "masks" / f"{i}.png")
        lines.append(_line(f"bad/{i}.png", 1, f"masks/{i}.png"))
    _png(root / "new" / "u.png", 20)
    lines.append(_line("new/u.png", None))
    (root / "train.manifest").write_text("\n".join(lines) + "\n\n")
    return root


@pytest.fixture
def service(tmp_path):
    svc = LookoutVisionService(tmp_path / "home")
    svc.create_project("p")
    yield svc
    svc.close()


def _objects(svc: LookoutVisionService, kind: str = "train") -> list[str]:
    objects = svc.store.dataset_dir("p", kind) / "objects"
    return sorted(p.name for p in objects.iterdir()) if objects.is_dir() else []


def test_create_from_a_manifest_copies_every_file_and_counts(service, folder):
    d = service.create_dataset("p", "train", str(folder / "train.manifest"))
    assert d.status == DatasetStatus.CREATE_IN_PROGRESS  # what the service answered; wait=True has finished
    d = service.describe_dataset("p", "train")
    assert d.status == DatasetStatus.CREATE_COMPLETE, d.status_message
    assert (d.total, d.labeled, d.normal, d.anomaly) == (7, 6, 4, 2)
    wire = d.to_wire()
    assert wire["ImageStats"] == {"Total": 7, "Labeled": 6, "Normal": 4, "Anomaly": 2}
    assert set(wire) == {"ProjectName", "DatasetType", "CreationTimestamp", "LastUpdatedTimestamp", "Status",
                         "StatusMessage", "ImageStats"}
    assert len(_objects(service)) == 8  # 7 images and 1 mask (both masks are the same bytes)
    (folder / "good" / "0.png").unlink()  # the dataset holds its own copies
    assert service.describe_dataset("p", "train").total == 7
    project = service.describe_project("p").to_wire()
    assert [x["DatasetType"] for x in project["Datasets"]] == ["train"]
    assert set(project["Datasets"][0]) == {"DatasetType", "CreationTimestamp", "Status", "StatusMessage"}


def test_list_entries_filters_and_pages(service, folder):
    service.create_dataset("p", "train", str(folder / "train.manifest"))
    lines, token = service.list_dataset_entries("p", "train")
    assert token is None and len(lines) == 7
    assert json.loads(lines[0])["source-ref"] == "good/0.png"  # as written, in manifest order
    def refs(**kw):
        return [json.loads(x)["source-ref"] for x in service.list_dataset_entries("p", "train", **kw)[0]]
    assert refs(labeled=False) == ["new/u.png"]
    assert len(refs(labeled=True)) == 6
    assert refs(anomaly_class="anomaly") == ["bad/0.png", "bad/1.png"]
    assert len(refs(anomaly_class="normal")) == 4
    assert refs(source_ref_contains="bad/1") == ["bad/1.png"]
    assert refs(before=0.0) == [] and len(refs(after=0.0)) == 7
    assert refs(after="2000-01-01T00:00:00Z", source_ref_contains="good/3") == ["good/3.png"]
    page, token = service.list_dataset_entries("p", "train", max_results=3)
    seen = list(page)
    while token:
        page, token = service.list_dataset_entries("p", "train", max_results=3, next_token=token)
        seen += page
    assert seen == lines


@pytest.mark.parametrize("kwargs, message", [
    ({"anomaly_class": "bad"}, "AnomalyClass"),
    ({"labeled": "yes"}, "Labeled"),
    ({"before": "not a date"}, "BeforeCreationDate"),
    ({"source_ref_contains": "  "}, "SourceRefContains"),
    ({"max_results": 0}, "MaxResults"),
    ({"next_token": "junk"}, "NextToken"),
])
def test_list_entries_bad_filters(service, folder, kwargs, message):
    service.create_dataset("p", "train")
    with pytest.raises(ValidationException, match=message):
        service.list_dataset_entries("p", "train", **kwargs)


def test_a_bad_manifest_fails_whole_and_names_its_lines(service, folder, tmp_path):
    _png(folder / "small.png", 1, size=32)
    _png(folder / "gif.gif", 2)
    _mask(folder / "big_mask.png", size=96)
    (folder / "notes.txt").write_text("not an image")
    bad = [
        _line("good/0.png"),
        "{not json",
        json.dumps({"anomaly-label": 0}),
        _line("missing.png"),
        _line("small.png"),
        _line("gif.gif"),
        _line("notes.txt"),
        _line("bad/0.png", 1, "big_mask.png"),
        _line("good/1.png", 3),
    ]
    (folder / "bad.manifest").write_text("\n".join(bad))
    service.create_dataset("p", "train", str(folder / "bad.manifest"))
    d = service.describe_dataset("p", "train")
    assert d.status == DatasetStatus.CREATE_FAILED and d.total == 0
    message = d.status_message
    assert message.startswith("8 manifest line(s) failed: line 2: not valid JSON")
    assert "line 3: missing source-ref" in message and "line 4:" in message and "missing.png" in message
    assert "line 5:" in message and "32x32" in message
    assert "and 3 more" in message  # 5 shown of 8
    assert _objects(service) == []  # the good line's copy is gone too: nothing half-made
    with pytest.raises(ConflictException, match="already has a train dataset"):
        service.create_dataset("p", "train")
    service.delete_dataset("p", "train")  # a failed dataset is deleted and created again
    service.create_dataset("p", "train", str(folder / "train.manifest"))
    assert service.describe_dataset("p", "train").status == DatasetStatus.CREATE_COMPLETE


def test_missing_unreadable_or_empty_manifests_say_why(service, tmp_path):
    with pytest.raises(ValidationException, match="no manifest at .*nope.manifest"):
        service.create_dataset("p", "train", str(tmp_path / "nope.manifest"))
    (tmp_path / "binary.manifest").write_bytes(b"\xff\xfe\x00{")
    service.create_dataset("p", "train", str(tmp_path / "binary.manifest"))
    d = service.describe_dataset("p", "train")
    assert d.status == DatasetStatus.CREATE_FAILED and d.status_message.startswith("cannot read the manifest")
    (tmp_path / "empty.manifest").write_text("\n\n")
    service.create_dataset("p", "test", str(tmp_path / "empty.manifest"))
    assert service.describe_dataset("p", "test").status_message == "the manifest has no entries"


def test_update_adds_and_replaces_or_rolls_back(service, folder):
    service.create_dataset("p", "train", str(folder / "train.manifest"))
    before = service.list_dataset_entries("p", "train")[0]
    new = _png(folder / "more" / "n.png", 30)
    relabel = _line(str(folder / "new" / "u.png"), 1)  # absolute ref: a new key (refs are keys as written)
    changes = "\n".join([_line(str(new)), relabel, _line("good/2.png", 0)])
    # a relative ref in an update has nothing to resolve against: the update fails whole
    status = service.update_dataset_entries("p", "train", changes.encode())
    assert status == DatasetStatus.UPDATE_IN_PROGRESS
    d = service.describe_dataset("p", "train")
    assert d.status == DatasetStatus.UPDATE_FAILED_ROLLBACK_COMPLETE and "line 3" in d.status_message
    assert service.list_dataset_entries("p", "train")[0] == before
    copies = _objects(service)

    changes = "\n".join([_line(str(new)), relabel]).encode()
    assert service.update_dataset_entries("p", "train", changes) == DatasetStatus.UPDATE_IN_PROGRESS
    d = service.describe_dataset("p", "train")
    assert d.status == DatasetStatus.UPDATE_COMPLETE, d.status_message
    assert (d.total, d.normal, d.anomaly) == (9, 5, 3)
    assert len(_objects(service)) == len(copies) + 1  # u.png's bytes were already there
    after = service.list_dataset_entries("p", "train")[0]
    assert after[:7] == before and json.loads(after[-1])["anomaly-label"] == 1


@pytest.mark.parametrize("changes, message", [
    (b"", "1 byte to 10 MiB"),
    (b"\xff\xfe{", "not UTF-8"),
    (b"\n \n", "no JSON lines"),
    ("text", "1 byte to 10 MiB"),
])
def test_update_bad_changes(service, changes, message):
    service.create_dataset("p", "train")
    with pytest.raises(ValidationException, match=message):
        service.update_dataset_entries("p", "train", changes)


def test_names_types_and_missing_things(service, folder):
    with pytest.raises(ValidationException, match="DatasetType"):
        service.create_dataset("p", "validation")
    with pytest.raises(ResourceNotFoundException, match="project 'q'"):
        service.create_dataset("q", "train")
    with pytest.raises(ResourceNotFoundException, match="no test dataset"):
        service.describe_dataset("p", "test")
    with pytest.raises(ResourceNotFoundException):
        service.delete_dataset("p", "test")
    with pytest.raises(ResourceNotFoundException):
        service.update_dataset_entries("p", "test", b"{}")
    with pytest.raises(ValidationException, match="scheme"):
        service.create_dataset("p", "train", "http://example.com/train.manifest")
    assert not service.store.read("SELECT 1 FROM datasets")


def test_wire_dataset_source_is_checked(tmp_path):
    lv = lvkit.client(tmp_path)
    lv.create_project(ProjectName="p")
    for source, message in [
        ({"GroundTruthManifest": {}}, "DatasetSource must be"),
        ({"GroundTruthManifest": {"S3Object": {"Bucket": "b", "Key": "k"}}}, "bucket name"),
        ({"GroundTruthManifest": {"S3Object": {"Bucket": "bucket", "Key": "/k"}}}, "Key"),
    ]:
        with pytest.raises(lv.exceptions.ValidationException, match=message):
            lv.create_dataset(ProjectName="p", DatasetType="train", DatasetSource=source)
    out = lv.create_dataset(ProjectName="p", DatasetType="test")
    assert out["DatasetMetadata"]["Status"] == "CREATE_COMPLETE"
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 202
    changes = base64.b64encode(b"x").decode()  # boto3 sends the bytes; a str is encoded, as boto3 does
    assert lv.update_dataset_entries(ProjectName="p", DatasetType="test", Changes=changes)["Status"] == \
        "UPDATE_IN_PROGRESS"
    d = lv.describe_dataset(ProjectName="p", DatasetType="test")["DatasetDescription"]
    assert d["Status"] == "UPDATE_FAILED_ROLLBACK_COMPLETE" and "not valid JSON" in d["StatusMessage"]
    assert lv.list_dataset_entries(ProjectName="p", DatasetType="test")["DatasetEntries"] == []
    lv.delete_dataset(ProjectName="p", DatasetType="test")
    lv.service.close()


def test_client_token_creates_once(service, folder):
    args = ("p", "train", str(folder / "train.manifest"))
    first = service.create_dataset(*args, client_token="t-1")
    again = service.create_dataset(*args, client_token="t-1")
    assert again == first and service.describe_dataset("p", "train").total == 7
    with pytest.raises(ConflictException, match="ClientToken"):
        service.create_dataset("p", "train", client_token="t-1")


def test_delete_project_waits_for_its_datasets(service):
    service.create_dataset("p", "train")
    service.create_dataset("p", "test")
    with pytest.raises(ConflictException, match="train and test datasets"):
        service.delete_project("p")
    service.delete_dataset("p", "train")
    service.delete_dataset("p", "test")
    service.delete_project("p")


def test_busy_datasets_refuse_changes_and_a_dead_owner_is_settled(tmp_path, folder):
    home = tmp_path / "home"
    svc = LookoutVisionService(home)
    svc.create_project("p")
    svc.create_dataset("p", "train", str(folder / "train.manifest"))
    svc.close()
    db = sqlite3.connect(home / "lvkit.db")
    dead = uuid.uuid4().hex
    with db:
        db.execute("INSERT INTO datasets VALUES ('p', 'test', 1, 1, 'CREATE_IN_PROGRESS', 'reading', ?)", (dead,))
        db.execute("UPDATE datasets SET status='UPDATE_IN_PROGRESS', owner=? WHERE type='train'", (dead,))
    db.close()
    (home / "datasets" / "p" / "train" / f".tmp-{dead}-0000").write_bytes(b"partial")
    store = Store(home)  # opening settles what a dead owner left
    svc = LookoutVisionService(store)
    test = svc.describe_dataset("p", "test")
    assert test.status == DatasetStatus.CREATE_FAILED and "interrupted" in test.status_message
    train = svc.describe_dataset("p", "train")
    assert train.status == DatasetStatus.UPDATE_FAILED_ROLLBACK_COMPLETE and train.total == 7
    assert not list((home / "datasets" / "p" / "train").glob(".tmp-*"))
    # a live owner's busy dataset refuses changes
    with svc.store.transaction() as tx:
        tx.execute("UPDATE datasets SET status='UPDATE_IN_PROGRESS', owner=? WHERE type='train'", (svc.store.claim(),))
    with pytest.raises(ConflictException, match="UPDATE_IN_PROGRESS"):
        svc.delete_dataset("p", "train")
    with pytest.raises(ConflictException, match="UPDATE_IN_PROGRESS"):
        svc.update_dataset_entries("p", "train", b'{"source-ref": "s3://b/x.png"}')
    svc.close()


def test_local_references_follow_the_services_policy(tmp_path, folder):
    """A server (local_files=False) reads S3 references only; a folder policy reads under it
    only; no policy reads a FIFO or a device (it would hang or read forever)."""
    import os

    inside = _png(tmp_path / "allowed" / "a.png", 1)
    outside = _png(tmp_path / "other" / "b.png", 2)
    os.mkfifo(tmp_path / "allowed" / "pipe.png")
    s3_only = "this server reads s3:// references only"
    for policy, expect in [(False, {"a.png": s3_only, "b.png": s3_only, "pipe.png": s3_only}),
                           (tmp_path / "allowed", {"b.png": "outside the folder", "pipe.png": "not a regular file"}),
                           (True, {"pipe.png": "not a regular file"})]:
        svc = LookoutVisionService(tmp_path / f"home-{policy is True}-{policy is False}", local_files=policy)
        svc.create_project("p")
        svc.create_dataset("p", "train")
        for path in (inside, outside, tmp_path / "allowed" / "pipe.png"):
            svc.update_dataset_entries("p", "train", _line(str(path)).encode())
            d = svc.describe_dataset("p", "train")
            if path.name in expect:
                assert d.status == DatasetStatus.UPDATE_FAILED_ROLLBACK_COMPLETE, (policy, path)
                assert expect[path.name] in d.status_message and str(tmp_path) not in d.status_message
            else:
                assert d.status == DatasetStatus.UPDATE_COMPLETE, (policy, path, d.status_message)
        if policy is not True:
            with pytest.raises(ValidationException, match="S3 only"):
                svc.create_dataset("p", "test", str(folder / "train.manifest"))
        svc.close()


def test_dates_without_a_zone_are_utc_and_lines_split_on_newlines_only(service, folder, monkeypatch):
    import time
    from datetime import datetime, timezone

    from lvkit.catalog import _epoch

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        utc = datetime(2020, 6, 23, tzinfo=timezone.utc).timestamp()
        assert _epoch("2020-06-23T00:00:00", "BeforeCreationDate") == utc  # the API docs' own example
        assert _epoch(datetime(2020, 6, 23), "BeforeCreationDate") == utc
        assert _epoch("2020-06-23T02:00:00+02:00", "BeforeCreationDate") == utc
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    service.create_dataset("p", "train")
    record = json.loads(_line(str(folder / "good" / "0.png")))
    record["note"] = "line\u2028separator\x0cin a string"
    service.update_dataset_entries("p", "train", (json.dumps(record, ensure_ascii=False) + "\r\n").encode())
    d = service.describe_dataset("p", "train")
    assert d.status == DatasetStatus.UPDATE_COMPLETE and d.total == 1, d.status_message
