"""The lvkit command: each subcommand through click's runner, on a real store."""

from __future__ import annotations

import base64
import json

import numpy as np
from click.testing import CliRunner

import lvkit
from lvkit.cli import main
from tests.conftest import png_bytes


def test_models_start_detect_stop(home, make_fake_version, tmp_path):
    make_fake_version(lvkit.Store(home), "demo", segmentation=True)
    image = tmp_path / "x.png"
    rgb = np.full((64, 64, 3), 30, np.uint8)
    rgb[:, :32] = 250
    image.write_bytes(png_bytes(rgb))
    run = CliRunner().invoke
    env = {"LVKIT_HOME": str(home)}

    r = run(main, ["detect", str(image), "--project", "demo"], env=env)
    assert r.exit_code == 1 and "ConflictException" in r.output and "not hosted" in r.output

    r = run(main, ["models", "start", "--project", "demo", "--version", "1"], env=env)
    assert r.exit_code == 0 and "HOSTED" in r.output, r.output

    mask = tmp_path / "mask.png"
    r = run(main, ["detect", str(image), "--project", "demo", "--mask-out", str(mask)], env=env)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)["DetectAnomalyResult"]
    assert out["IsAnomalous"] is True and out["Anomalies"][0]["Name"] == "background"
    assert base64.b64decode(out["AnomalyMask"]) == mask.read_bytes()

    r = run(main, ["models", "list", "--project", "demo"], env=env)
    assert "HOSTED" in r.output
    r = run(main, ["models", "describe", "--project", "demo"], env=env)
    assert json.loads(r.output)["ModelDescription"]["ModelVersion"] == "1"
    r = run(main, ["models", "stop", "--project", "demo", "--version", "1"], env=env)
    assert r.exit_code == 0 and "TRAINED" in r.output


def test_bad_inputs_give_one_line_errors(home, tmp_path):
    run = CliRunner().invoke
    env = {"LVKIT_HOME": str(home)}
    r = run(main, ["models", "describe", "--project", "-bad"], env=env)
    assert r.exit_code == 1 and "ValidationException" in r.output and "Traceback" not in r.output
    r = run(main, ["models", "start", "--project", "missing"], env=env)
    assert r.exit_code == 1 and "ResourceNotFoundException" in r.output
    empty = tmp_path / "empty"
    (empty / "normal").mkdir(parents=True)
    r = run(main, ["train", "--project", "p", "--dataset", str(empty)], env=env)
    assert r.exit_code == 1 and "DatasetError" in r.output and "normal" in r.output
