"""A public way to attach a recalibrator: the client's ``attach_calibration`` and
``lvkit models calibrate`` (issue 12, item 6), with the recalibrated verdict (item 3)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import lvkit
from lvkit.cli import main
from lvkit.locks import ServerLock

#: pushes every P(anomaly) up: the dark image (P(anomaly) ~0.12 as served) turns anomalous
SHIFT = {"kind": "platt", "slope": 1.0, "intercept": 3.0, "eps": 1e-6}


def _detect(lv, body):
    if lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] != "HOSTED":
        lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)
    return lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png",
                               Body=body)["DetectAnomalyResult"]


def test_the_client_attaches_and_detaches(lv, dark):
    before = _detect(lv, dark)
    out = lv.attach_calibration(ProjectName="demo", ModelVersion="1", Calibration=SHIFT)
    assert out["ModelDescription"]["ModelVersion"] == "1"
    after = _detect(lv, dark)
    assert (before["IsAnomalous"], after["IsAnomalous"]) == (False, True) and after["Confidence"] >= 0.5
    lv.attach_calibration(ProjectName="demo", ModelVersion="1", Calibration=None)
    assert _detect(lv, dark) == before
    with pytest.raises(lv.exceptions.ValidationException, match="recalibrator"):
        lv.attach_calibration(ProjectName="demo", ModelVersion="1", Calibration={"kind": "nope"})
    with pytest.raises(lv.exceptions.ValidationException, match="recalibrator"):  # fields before resources
        lv.attach_calibration(ProjectName="nothere", ModelVersion="1", Calibration=["not", "a", "dict"])
    with pytest.raises(lv.exceptions.ResourceNotFoundException):
        lv.attach_calibration(ProjectName="demo", ModelVersion="9", Calibration=SHIFT)


def test_the_cli_attaches_from_a_file_and_detaches(lv, home, dark, tmp_path):
    before = _detect(lv, dark)
    lv.service.close()
    path = tmp_path / "platt.json"
    path.write_text(json.dumps(SHIFT))
    runner = CliRunner()
    out = runner.invoke(main, ["models", "calibrate", "--project", "demo", "--version", "1", str(path),
                               "--home", str(home)])
    assert out.exit_code == 0, out.output
    assert "demo/1: attached platt" in out.output and "note:" not in out.output
    assert _detect(lvkit.client(home), dark)["IsAnomalous"] is True
    out = runner.invoke(main, ["models", "calibrate", "--project", "demo", "--version", "1", "--detach",
                               "--home", str(home)])
    assert out.exit_code == 0 and "demo/1: detached" in out.output
    assert _detect(lvkit.client(home), dark) == before


def test_the_cli_refuses_bad_input_and_says_when_a_server_holds_the_home(lv, home, tmp_path):
    runner = CliRunner()
    base = ["models", "calibrate", "--project", "demo", "--version", "1", "--home", str(home)]
    out = runner.invoke(main, base)
    assert out.exit_code == 2 and "CALIBRATION file or --detach" in out.output
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    out = runner.invoke(main, [*base, str(bad)])
    assert out.exit_code == 2 and "not a JSON file" in out.output
    bad.write_text(json.dumps({"kind": "nope"}))
    out = runner.invoke(main, [*base, str(bad)])
    assert out.exit_code == 1 and "ValidationException" in out.output
    assert lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["Status"] == "TRAINED"
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SHIFT))
    server = ServerLock(lv.service.store.home)
    server.acquire("serving 127.0.0.1:1")
    try:
        out = runner.invoke(main, [*base, str(good)])
    finally:
        server.release()
    assert out.exit_code == 0 and "note: another lvkit server already serves this home" in out.output
    assert "next StartModel" in out.output
