"""The lvkit command: each subcommand through click's runner, on a real store."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

import lvkit
from lvkit.cli import main
from tests.conftest import png_bytes

ROOT = Path(__file__).resolve().parents[2]


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


# -- each default written once: lvkit serve shows the library's -------------------------------------
SERVE_DEFAULTS = {"host": "DEFAULT_HOST", "port": "DEFAULT_PORT", "max_inflight_bytes": "MAX_BODY_BYTES_IN_FLIGHT",
                  "body_timeout": "BODY_TIMEOUT", "body_idle_timeout": "BODY_IDLE_TIMEOUT"}


def test_serve_defaults_are_the_library_defaults():
    from lvkit import server_defaults
    from lvkit.cli import detect, serve
    from lvkit.hosting import HostingOptions
    from lvkit.images import DEFAULT_MAX_BYTES
    from lvkit.shapes import CONTENT_TYPES

    defaults = {p.name: p.default for p in serve.params}
    hosting = HostingOptions()
    assert defaults["max_bytes"] == DEFAULT_MAX_BYTES
    assert (defaults["max_queue"], defaults["max_batch"], defaults["idle_timeout"]) == (
        hosting.max_queue, hosting.max_batch, hosting.idle_timeout)
    for option, constant in SERVE_DEFAULTS.items():
        assert defaults[option] == getattr(server_defaults, constant), option
    content_type = next(p for p in detect.params if p.name == "content_type")
    assert tuple(content_type.type.choices) == CONTENT_TYPES


def test_serve_defaults_follow_the_library():
    # with other values in the library, the CLI shows those: they are imported, not copied
    code = f"""
import json, types, lvkit.hosting, lvkit.images, lvkit.server_defaults as d
lvkit.images.DEFAULT_MAX_BYTES = 12345
lvkit.hosting.HostingOptions = lambda **kw: types.SimpleNamespace(max_queue=3, max_batch=2, idle_timeout=1.5)
for i, name in enumerate({sorted(SERVE_DEFAULTS.values())!r}):
    setattr(d, name, f"changed-{{i}}")
from lvkit.cli import serve
print(json.dumps({{p.name: p.default for p in serve.params}}, default=str))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    defaults = json.loads(out.stdout)
    assert (defaults["max_bytes"], defaults["max_queue"], defaults["max_batch"], defaults["idle_timeout"]) == (
        12345, 3, 2, 1.5)
    changed = {f"changed-{i}" for i in range(len(SERVE_DEFAULTS))}
    assert {defaults[option] for option in SERVE_DEFAULTS} == changed
