"""``lvkit detect`` over files, folders and globs (lvkit.batch): one model, rows, masks, heat maps."""

from __future__ import annotations

import base64
import csv
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import lvkit
from lvkit import batch
from lvkit.backends import BACKENDS
from lvkit.cli import main
from tests.conftest import png_bytes

BROKEN = b"\x89PNG\r\n\x1a\n this is not an image"


def cli(home: Path, *args: str):
    return CliRunner().invoke(main, ["detect", *args], env={"LVKIT_HOME": str(home)})


def images(root: Path, dark: bytes, bright: bytes) -> Path:
    """root/imgs/{good/0,good/1,bad/0}.png and root/more/{x,y}.png; returns root."""
    for rel, body in [("imgs/good/0.png", dark), ("imgs/good/1.png", dark), ("imgs/bad/0.png", bright),
                      ("more/x.png", bright), ("more/y.png", dark), ("more/notes.txt", b"not an image")]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def host(lv, version: str = "1") -> None:
    lv.start_model(ProjectName="demo", ModelVersion=version, MinInferenceUnits=1)


def status(home: Path, version: str = "1") -> str:
    store = lvkit.Store(home)
    try:
        return store.get_model("demo", version).status
    finally:
        store.close()


@pytest.fixture
def aws_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy AWS credentials and nothing else from the environment (as tests/server's aws_env)."""
    for name in ("AWS_PROFILE", "AWS_DATA_PATH", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LOOKOUTVISION",
                 "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLVKITTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lvkit-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


class RawFake:
    """A backend with the anomalib backend's raw interface (``raw``, ``check_size``, ``result``):
    the map is brightness / 255, the score its mean."""

    max_bytes = 8 * 1024 * 1024

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, body, content_type):
        from lvkit.images import decode_image

        rgb = decode_image(body, content_type)
        score, amap = self.raw(rgb[None])
        return self.result(rgb, float(score[0]), amap[0])

    def check_size(self, rgb) -> None:
        if rgb.shape[:2] != (64, 64):
            raise lvkit.ValidationException("expected a 64x64 image")

    def raw(self, batch_):
        self.calls += 1
        maps = (batch_.mean(axis=3) / 255.0).astype(np.float32)
        return maps.mean(axis=(1, 2)).astype(np.float32), maps

    def result(self, rgb, score, amap):
        from lvkit.segmentation import build_result

        return build_result(score > 0.5, 0.75, (amap > 0.5).astype(np.int64), ["anomaly"], ["#FF0000"])


# -- in process ------------------------------------------------------------------------------
def test_folder_and_glob_in_process_write_a_csv_with_the_right_verdicts(lv, home, tmp_path, dark, bright):
    root = images(tmp_path, dark, bright)
    host(lv)
    out = tmp_path / "results.csv"
    r = cli(home, str(root / "imgs"), str(root / "more" / "*.png"), "--project", "demo", "--out", str(out),
            "--progress")
    assert r.exit_code == 0, r.output
    rows = read_csv(out)
    assert list(rows[0]) == list(batch.COLUMNS)
    names = [Path(row["path"]).relative_to(root).as_posix() for row in rows]
    assert names == ["imgs/bad/0.png", "imgs/good/0.png", "imgs/good/1.png", "more/x.png", "more/y.png"]
    assert [row["is_anomalous"] for row in rows] == ["True", "False", "False", "True", "False"]
    assert all(0.5 <= float(row["confidence"]) <= 1 and row["error_code"] == "" for row in rows)
    # the bright images are 40 of 64 columns at 250: the fake model's mask covers 40/64 of them
    assert json.loads(rows[0]["anomalies"]) == {"anomaly": pytest.approx(40 / 64)}
    assert json.loads(rows[1]["anomalies"]) == {}
    assert "5 images: 2 anomalous, 3 normal, 0 failed" in r.stderr and "img" in r.stderr  # summary, progress bar


def test_jsonl_to_a_file_or_stdout(lv, home, tmp_path, dark, bright):
    root = images(tmp_path, dark, bright)
    host(lv)
    out = tmp_path / "sub" / "results.jsonl"
    assert cli(home, str(root / "imgs"), "--project", "demo", "--out", str(out)).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["is_anomalous"] for row in rows] == [True, False, False]
    assert rows[0]["anomalies"] == {"anomaly": pytest.approx(40 / 64)} and rows[0]["error_code"] is None
    r = cli(home, str(root / "imgs"), "--project", "demo")  # several images, no --out: JSON lines on stdout
    assert r.exit_code == 0 and [json.loads(line) for line in r.stdout.splitlines()] == rows
    r = cli(home, str(root / "imgs"), "--project", "demo", "--out", str(tmp_path / "results.txt"))
    assert r.exit_code == 1 and ".csv or .jsonl" in r.stderr


def test_a_corrupt_image_is_a_row_with_its_error_and_the_rest_go_on(lv, home, tmp_path, dark, bright):
    root = images(tmp_path, dark, bright)
    (root / "imgs" / "good" / "00-broken.png").write_bytes(BROKEN)
    (root / "imgs" / "good" / "big.png").write_bytes(png_bytes(np.full((80, 80, 3), 30, np.uint8)))
    host(lv)
    out = tmp_path / "results.csv"
    r = cli(home, str(root / "imgs"), "--project", "demo", "--out", str(out))
    assert r.exit_code == 1, r.output  # failures make the exit status 1 ...
    assert "5 images: 1 anomalous, 2 normal, 2 failed" in r.stderr
    rows = {Path(row["path"]).relative_to(root / "imgs").as_posix(): row for row in read_csv(out)}
    broken, big = rows["good/00-broken.png"], rows["good/big.png"]
    assert broken["error_code"] == "ValidationException" and "truncated or corrupt" in broken["error_message"]
    assert broken["is_anomalous"] == broken["confidence"] == broken["anomalies"] == ""
    assert big["error_code"] == "ValidationException" and "80x80" in big["error_message"]
    assert [rows[n]["is_anomalous"] for n in ("bad/0.png", "good/0.png", "good/1.png")] == ["True", "False", "False"]
    r = cli(home, str(root / "imgs"), "--project", "demo", "--out", str(out), "--allow-failures")
    assert r.exit_code == 0 and "2 failed" in r.stderr  # ... unless --allow-failures


def test_masks_writes_the_anomaly_mask_pngs(lv, home, tmp_path, dark, bright):
    root = images(tmp_path, dark, bright)
    (root / "imgs" / "bad" / "0.jpg").write_bytes(png_bytes(np.full((64, 64, 3), 200, np.uint8), fmt="JPEG"))
    host(lv)
    masks, out = tmp_path / "masks", tmp_path / "results.csv"
    r = cli(home, str(root / "imgs"), "--project", "demo", "--out", str(out), "--masks", str(masks))
    assert r.exit_code == 0, r.output
    written = sorted(p.relative_to(masks).as_posix() for p in masks.rglob("*.png"))
    assert written == ["bad/0.jpg.png", "bad/0.png.png", "good/0.png", "good/1.png"]  # same stem: suffix kept
    rows = {Path(row["path"]).relative_to(root).as_posix(): row for row in read_csv(out)}
    assert rows["imgs/good/0.png"]["mask"] == str(masks / "good" / "0.png")
    mask = np.asarray(Image.open(masks / "bad" / "0.png.png").convert("RGB"))
    assert mask.shape == (64, 64, 3)
    assert (mask[:, :40] == (255, 0, 0)).all() and (mask[:, 40:] == 0).all()  # the label colour, background black
    assert not np.asarray(Image.open(masks / "good" / "0.png")).any()
    single = json.loads(cli(home, str(root / "imgs" / "bad" / "0.png"), "--project", "demo").stdout)
    assert base64.b64decode(single["DetectAnomalyResult"]["AnomalyMask"]) == (masks / "bad" / "0.png.png").read_bytes()


def test_the_model_is_loaded_once_for_many_images(lv, home, tmp_path, dark, bright, monkeypatch):
    root = images(tmp_path, dark, bright)
    for i in range(20):
        (root / "imgs" / "many" / f"{i:02d}.png").parent.mkdir(exist_ok=True)
        (root / "imgs" / "many" / f"{i:02d}.png").write_bytes(bright if i % 3 else dark)
    loads = []
    load_fake = BACKENDS["fake"]
    monkeypatch.setitem(BACKENDS, "fake", lambda *a, **k: loads.append(a) or load_fake(*a, **k))
    host(lv)  # hosted by another client over the same store, as `lvkit models start` does
    loads.clear()
    r = cli(home, str(root / "imgs"), "--project", "demo", "--out", str(tmp_path / "r.csv"))
    assert r.exit_code == 0, r.output
    assert len(read_csv(tmp_path / "r.csv")) == 23 and len(loads) == 1
    loads.clear()
    r = cli(home, str(root / "imgs"), "--project", "demo", "--out", str(tmp_path / "r.csv"), "--start")
    assert r.exit_code == 0 and len(loads) == 1  # already HOSTED: --start changes nothing


def test_one_file_prints_the_json_as_before(lv, home, tmp_path, bright):
    image = tmp_path / "x.png"
    image.write_bytes(bright)
    host(lv)
    mask = tmp_path / "m.png"
    r = cli(home, str(image), "--project", "demo", "--mask-out", str(mask))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)["DetectAnomalyResult"]
    assert out["IsAnomalous"] is True and mask.read_bytes().startswith(b"\x89PNG")
    image.write_bytes(BROKEN)  # one image: its error is the command's, as before
    r = cli(home, str(image), "--project", "demo")
    assert r.exit_code == 1 and "error: ValidationException" in r.stderr
    r = cli(home, str(image), str(image.with_name("y.png")), "--project", "demo")
    assert r.exit_code == 2 and "no such file or folder" in r.stderr
    r = cli(home, str(tmp_path / "*.jpg"), "--project", "demo")
    assert r.exit_code == 2 and "holds no .png, .jpg, .jpeg images" in r.stderr
    r = cli(home, str(tmp_path), str(image), "--project", "demo", "--mask-out", str(mask))
    assert r.exit_code == 2 and "--masks DIR" in r.stderr


def test_a_model_that_is_not_hosted_says_so_and_start_hosts_it_for_the_run(lv, home, tmp_path, dark, bright):
    root = images(tmp_path, dark, bright)
    out = tmp_path / "results.csv"
    r = cli(home, str(root / "imgs"), "--project", "demo", "--out", str(out))
    assert r.exit_code == 1 and not out.exists()
    assert "error: ConflictException: model demo/1 is not hosted (status TRAINED)" in r.stderr
    assert "lvkit models start --project demo --version latest" in r.stderr and "--start" in r.stderr
    r = cli(home, str(root / "imgs"), "--project", "demo", "--out", str(out), "--start")
    assert r.exit_code == 0, r.output
    assert len(read_csv(out)) == 3 and status(home) == "TRAINED"  # hosted for the run, stopped after
    r = cli(home, str(root / "imgs" / "bad" / "0.png"), "--project", "demo", "--start")
    assert r.exit_code == 0 and json.loads(r.stdout)["DetectAnomalyResult"]["IsAnomalous"] is True
    assert status(home) == "TRAINED"
    r = cli(home, str(root / "imgs"), "--project", "demo", "--version", "7", "--start")
    assert r.exit_code == 1 and "ResourceNotFoundException" in r.stderr


def test_start_stops_the_model_even_when_the_run_stops(home, make_fake_version):
    store = lvkit.Store(home)
    make_fake_version(store, "demo", segmentation=True)
    store.close()
    client = lvkit.client(home)
    with pytest.raises(ZeroDivisionError), batch.hosted_version(client, "demo", start=True) as number:
        assert number == "1" and status(home) == "HOSTED"
        1 / 0
    assert status(home) == "TRAINED"


def test_heatmaps_with_the_fake_backend_say_not_available(lv, home, tmp_path, dark, bright):
    root = images(tmp_path, dark, bright)
    host(lv)
    heat = tmp_path / "heat"
    r = cli(home, str(root / "imgs"), "--project", "demo", "--heatmaps", str(heat))
    assert r.exit_code == 1 and not heat.exists()
    assert "heat maps are not available for demo/1" in r.stderr and "FakeBackend" in r.stderr
    r = cli(home, str(root / "imgs"), "--project", "demo", "--heatmaps", str(heat), "--endpoint-url",
            "http://127.0.0.1:9")
    assert r.exit_code == 2 and "--heatmaps needs the model in this process" in r.stderr


def test_heatmaps_write_the_raw_maps_from_the_same_model_call(lv, home, tmp_path, dark, bright, monkeypatch):
    root = images(tmp_path, dark, bright)
    (root / "imgs" / "good" / "00-broken.png").write_bytes(BROKEN)
    model = RawFake()
    monkeypatch.setitem(BACKENDS, "fake", lambda *a, **k: model)
    host(lv)
    heat, masks, out = tmp_path / "heat", tmp_path / "masks", tmp_path / "r.jsonl"
    r = cli(home, str(root / "imgs"), "--project", "demo", "--heatmaps", str(heat), "--masks", str(masks),
            "--out", str(out))
    assert r.exit_code == 1 and "1 failed" in r.stderr
    rows = {Path(row["path"]).relative_to(root).as_posix(): row
            for row in map(json.loads, out.read_text().splitlines())}
    assert rows["imgs/good/00-broken.png"]["error_code"] == "ValidationException"
    assert model.calls == 3  # one model call per decodable image gives the verdict, mask and map
    assert rows["imgs/bad/0.png"]["heatmap"] == str(heat / "bad" / "0.npy")
    amap = np.load(heat / "bad" / "0.npy")
    assert amap.dtype == np.float32 and amap.shape == (64, 64)
    np.testing.assert_allclose(amap[0, :40], 250 / 255, rtol=1e-6)
    assert rows["imgs/bad/0.png"]["is_anomalous"] is True and rows["imgs/good/0.png"]["is_anomalous"] is False
    assert (masks / "bad" / "0.png").exists()
    assert sorted(p.name for p in heat.rglob("*.npy")) == ["0.npy", "0.npy", "1.npy"]


# -- against a running server ----------------------------------------------------------------
@pytest.mark.server
def test_endpoint_url_gives_the_same_rows_as_in_process(lv, home, tmp_path, dark, bright, lvkit_server,
                                                        make_fake_version, aws_keys):
    root = images(tmp_path, dark, bright)
    (root / "imgs" / "good" / "00-broken.png").write_bytes(BROKEN)
    make_fake_version(lvkit_server.service.store, "demo", segmentation=True)
    host(lv)
    args = [str(root / "imgs"), str(root / "more" / "*.png"), "--project", "demo", "--allow-failures"]
    local, remote = tmp_path / "local.csv", tmp_path / "remote.csv"
    r = cli(home, *args, "--out", str(local), "--masks", str(tmp_path / "m1"))
    assert r.exit_code == 0, r.output
    r = cli(home, *args, "--out", str(remote), "--masks", str(tmp_path / "m2"), "--endpoint-url", lvkit_server.url,
            "--workers", "3", "--start")
    assert r.exit_code == 0, r.output
    strip = [{k: v for k, v in row.items() if k != "mask"} for row in read_csv(local)]
    assert [{k: v for k, v in row.items() if k != "mask"} for row in read_csv(remote)] == strip
    assert [row["error_code"] for row in strip] == ["", "", "ValidationException", "", "", ""]
    for p in (tmp_path / "m1").rglob("*.png"):
        assert (tmp_path / "m2" / p.relative_to(tmp_path / "m1")).read_bytes() == p.read_bytes()
    deadline = time.monotonic() + 20  # --start stopped the server's version (asynchronously)
    while lvkit_server.service.describe_model("demo", "1").status != "TRAINED" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lvkit_server.service.describe_model("demo", "1").status == "TRAINED"
    r = cli(home, *args, "--endpoint-url", lvkit_server.url)
    assert r.exit_code == 1 and "ConflictException" in r.stderr and "--start" in r.stderr


@pytest.mark.server
def test_endpoint_without_credentials_refused_by_the_server_says_why(home, tmp_path, dark, bright, monkeypatch,
                                                                     make_fake_version, aws_keys):
    pytest.importorskip("uvicorn")
    from tests.server.live import LiveServer, serving_service

    root = images(tmp_path, dark, bright)
    server = LiveServer(serving_service(tmp_path / "srv"), credentials={"AKIDLVKITTEST": "lvkit-test-secret"})
    try:
        make_fake_version(server.service.store, "demo")
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        r = cli(home, str(root / "imgs"), "--project", "demo", "--endpoint-url", server.url)
        assert r.exit_code == 1 and "error: AccessDeniedException" in r.stderr
        assert "no AWS credentials were found" in r.stderr and "AWS_ACCESS_KEY_ID" in r.stderr
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLVKITTEST")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lvkit-test-secret")
        r = cli(home, str(root / "imgs"), "--project", "demo", "--endpoint-url", server.url, "--start")
        assert r.exit_code == 0, r.output
    finally:
        server.stop()


# -- the library ----------------------------------------------------------------------------
class Stub:
    """A boto3-shaped client: HOSTED version 1; detect_anomalies per ``answer(body)``."""

    def __init__(self, answer) -> None:
        self.answer, self.active, self.most = answer, 0, 0
        self.lock = threading.Lock()

    def describe_model(self, **kw):
        return {"ModelDescription": {"ModelVersion": "1", "Status": "HOSTED", "ModelArn": "arn"}}

    def detect_anomalies(self, **kw):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            return self.answer(kw["Body"])
        finally:
            with self.lock:
                self.active -= 1


def test_an_error_of_the_run_stops_it_and_keeps_the_rows_before(tmp_path, dark):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(dark + bytes([i]))
    calls = []

    def answer(body):
        calls.append(body)
        if len(calls) == 3:
            raise lvkit.ConflictException("model demo/1 is not hosted (status TRAINED)")
        return {"DetectAnomalyResult": {"IsAnomalous": False, "Confidence": 0.9}}

    rows = []
    with pytest.raises(lvkit.ConflictException):
        for row in batch.detect_files(Stub(answer), "demo", "1", paths):
            rows.append(row)
    assert [row.path for row in rows] == [str(p) for p in paths[:2]] and len(calls) == 3


def test_workers_send_concurrently_and_keep_the_order(tmp_path, dark):
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"{i:02d}.png")
        paths[-1].write_bytes(dark + bytes([i]))

    def answer(body):
        time.sleep(0.01 * (12 - body[-1]) / 12)
        if body[-1] == 5:
            raise lvkit.ThrottlingException("slow down")  # an error of one image: its row
        return {"DetectAnomalyResult": {"IsAnomalous": body[-1] % 2 == 1, "Confidence": 0.9}}

    stub = Stub(answer)
    rows = list(batch.detect_files(stub, "demo", "1", paths, workers=4))
    assert [row.path for row in rows] == [str(p) for p in paths] and 1 < stub.most <= 4
    assert [row.is_anomalous for row in rows] == [i % 2 == 1 if i != 5 else None for i in range(12)]
    assert rows[5].error_code == "ThrottlingException" and rows[5].failed


def test_expand_images_orders_dedupes_and_refuses_nothing(tmp_path, dark):
    for rel in ("a/2.png", "a/1.PNG", "a/.cache/x.png", "a/b/3.jpeg", "c.bin"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(dark)
    found = batch.expand_images([str(tmp_path / "a" / "2.png"), str(tmp_path / "a"), str(tmp_path / "c.bin")])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/2.png", "a/1.PNG", "a/b/3.jpeg", "c.bin"]
    assert batch.content_type_for(found[-1], dark) == "image/png"  # an unknown suffix: sniffed
    with pytest.raises(ValueError, match="no such file or folder"):
        batch.expand_images([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder holds no"):
        batch.expand_images([str(tmp_path / "empty")])


def test_results_writer_csv_round_trip():
    buf = io.StringIO()
    writer = batch.ResultsWriter(buf, "csv")
    writer.write(batch.DetectRow("a.png", True, 0.9, {"stain": 0.25}))
    writer.write(batch.DetectRow("b.png", error_code="ValidationException", error_message="bad, \"quoted\""))
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert rows[0]["anomalies"] == '{"stain": 0.25}' and rows[1]["error_message"] == 'bad, "quoted"'
    assert writer.rows == 2


def test_a_model_without_maps_stops_a_heatmap_run(tmp_path, dark):
    class NoMaps(RawFake):
        def raw(self, batch_):
            scores, maps = super().raw(batch_)
            return scores, np.full_like(maps, np.nan)

    (tmp_path / "a.png").write_bytes(dark)
    with pytest.raises(ValueError, match="produces no anomaly map"):
        list(batch.detect_files(Stub(None), "demo", "1", [tmp_path / "a.png"], raw=NoMaps(),
                                heatmaps_dir=tmp_path / "heat"))
    assert not (tmp_path / "heat").exists()
