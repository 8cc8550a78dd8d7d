"""lve.run over backends and lvkit.client(): one row per image, errors as rows, raw maps."""

from __future__ import annotations

import numpy as np
import pytest

import lvkit
from lvkit.backends.fake import FakeBackend, brightness_handler
from lvkit.eval import anomaly_score, run

COLUMNS = ["path", "split", "label", "defect_type", "is_anomalous", "confidence", "anomaly_score",
           "anomalous_area", "areas", "anomalies", "anomaly_mask", "latency_s", "error"]


def test_run_over_a_backend(brick) -> None:
    backend = FakeBackend(brightness_handler(threshold=100.0, segmentation=True))
    df = run(backend, brick, progress=False)
    assert list(df.columns) == COLUMNS and len(df) == len(brick.samples)
    assert df["error"].isna().all() and (df["latency_s"] > 0).all()
    assert df["label"].tolist() == [s.label for s in brick.samples]
    np.testing.assert_allclose(
        df["anomaly_score"], anomaly_score(df["is_anomalous"].to_numpy(), df["confidence"].to_numpy())
    )
    row = df.iloc[0]
    assert isinstance(row["anomaly_mask"], bytes) and row["anomaly_mask"].startswith(b"\x89PNG")
    assert row["anomalous_area"] == pytest.approx(sum(row["areas"].values()))
    assert run(backend, brick, keep_masks=False, progress=False)["anomaly_mask"].isna().all()


def test_errors_are_rows_not_crashes(brick) -> None:
    backend = FakeBackend(brightness_handler(), image_size=(80, 80))  # refuses the 64x64 images
    df = run(backend, brick, progress=False, on_error="ignore")
    assert df["error"].str.startswith("ValidationException").all() and df.attrs["errors"] == len(df)
    assert df["is_anomalous"].isna().all() and (df["latency_s"] >= 0).all()


def test_a_run_where_every_image_failed_raises_the_first_error(brick) -> None:
    backend = FakeBackend(brightness_handler(), image_size=(80, 80))
    with pytest.raises(lvkit.ValidationException, match="80x80") as err:
        run(backend, brick, progress=False)
    assert any("all 10 images failed" in note for note in err.value.__notes__)
    with pytest.raises(lvkit.ValidationException):
        run(backend, brick, progress=False, on_error="raise")


def test_some_failed_images_are_counted_in_a_warning(brick, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    samples = [*brick.samples[:3], type(brick.samples[0])(image_path=broken, label=0, split="test", defect_type=None,
                                                          mask_path=None)]
    with pytest.warns(lvkit.FailedImagesWarning, match="1 of 4 images failed .* ValidationException"):
        df = run(FakeBackend(brightness_handler()), samples, progress=False)
    assert df.attrs["errors"] == 1 and df["error"].notna().tolist() == [False, False, False, True]


def test_client_and_backend_give_identical_tables_apart_from_latency(brick, home, make_fake_version) -> None:
    lv = lvkit.client(home)
    version = make_fake_version(lv.service.store, "demo", segmentation=True, threshold=100.0)
    lv.start_model(ProjectName="demo", ModelVersion=version, MinInferenceUnits=1)
    via_client = run(lv, brick, project="demo", version=version, progress=False)
    via_backend = run(FakeBackend(brightness_handler(threshold=100.0, segmentation=True)), brick, progress=False)
    assert via_client.drop(columns="latency_s").equals(via_backend.drop(columns="latency_s"))
    with pytest.raises(ValueError, match="project"):
        run(lv, brick, progress=False)
    lv.stop_model(ProjectName="demo", ModelVersion=version)
    stopped = run(lv, brick, project="demo", version=version, progress=False, on_error="ignore")
    assert stopped["error"].str.startswith("ConflictException").all()
    with pytest.raises(lvkit.ConflictException, match="not hosted"):  # the README's mistake: said, not NaN
        run(lv, brick, project="demo", version=version, progress=False)


def test_raw_from_a_backend_is_one_model_call(brick, raw_fake) -> None:
    df = run(raw_fake, brick, raw=True, progress=False)
    assert raw_fake.calls == len(brick.samples)
    assert list(df.columns) == [*COLUMNS[:-2], "raw_score", "anomaly_map", *COLUMNS[-2:]]
    amap = df["anomaly_map"].iloc[0]
    assert amap.shape == (64, 64) and amap.dtype == np.float32
    assert df["raw_score"].iloc[0] == pytest.approx(float(amap.mean()), rel=1e-5)
    plain = run(raw_fake, brick, progress=False)  # the same results through detect()
    assert plain.drop(columns="latency_s").equals(df.drop(columns=["latency_s", "raw_score", "anomaly_map"]))


def test_raw_through_the_client_uses_the_loaded_backend(brick, home, raw_fake) -> None:
    lv = lvkit.client(home)
    lv.service.store.create_project("raw")
    lv.service.store.add_model("raw", backend="fake", build=lambda d: FakeBackend.save(d))
    lv.service._loader = lambda *a, **k: raw_fake  # the service serves our raw-capable backend
    lv.start_model(ProjectName="raw", ModelVersion="1", MinInferenceUnits=1)
    df = run(lv, brick, project="raw", version="1", raw=True, progress=False)
    assert raw_fake.calls == 2 * len(brick.samples)  # the API call, then the untimed map call
    assert all(isinstance(m, np.ndarray) for m in df["anomaly_map"])


def test_raw_needs_a_target_with_maps(brick, lv) -> None:
    with pytest.raises(ValueError, match="raw=True: expected a target exposing raw anomaly maps.*FakeBackend"):
        run(FakeBackend(brightness_handler()), brick, raw=True, progress=False)
    lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)
    with pytest.raises(ValueError, match="raw=True"):
        run(lv, brick, project="demo", raw=True, progress=False)
