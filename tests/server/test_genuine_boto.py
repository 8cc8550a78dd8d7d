"""The genuine client: boto3/botocore 1.40.60, the last release with the lookoutvision model.

A throwaway virtual environment is built once (cached under the temp folder, or
``$LVKIT_GENUINE_VENV_DIR``) with ``pip install boto3==1.40.60 botocore==1.40.60``. Two checks:
our service description against the genuine one, member by member, for the operations lvkit
serves (the cheap drift detector); and an unchanged program run by that release against a
live ``lvkit serve`` with SigV4 on.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from lvkit.boto import DATA_PATH
from tests.server.conftest import GENUINE, KEY_ID, SECRET, serving_service

pytestmark = pytest.mark.server

def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "documentation"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _reachable(model: dict, operations) -> set[str]:
    seen: set[str] = set()

    def walk(name: str) -> None:
        if name not in seen:
            seen.add(name)
            shape = model["shapes"][name]
            for member in [*shape.get("members", {}).values(), shape.get("member"), shape.get("key"),
                           shape.get("value")]:
                if member:
                    walk(member["shape"])

    for op in operations:
        o = model["operations"][op]
        for ref in (o["input"], o["output"], *o["errors"]):
            walk(ref["shape"])
    return seen


def test_our_description_matches_the_genuine_one(genuine_python):
    site = subprocess.run([str(genuine_python), "-c", "import botocore, os; print(os.path.dirname(botocore.__file__))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    genuine_dir = Path(site, "data", "lookoutvision", "2020-11-20")
    genuine = json.loads(gzip.decompress((genuine_dir / "service-2.json.gz").read_bytes()))
    ours_dir = Path(DATA_PATH, "lookoutvision", "2020-11-20")
    ours = json.loads((ours_dir / "service-2.json").read_text())

    assert ours["metadata"] == genuine["metadata"]
    for name, op in ours["operations"].items():
        assert _strip(op) == _strip(genuine["operations"][name]), name
    assert set(ours["shapes"]) == _reachable(genuine, ours["operations"])
    for name, shape in ours["shapes"].items():
        assert _strip(shape) == _strip(genuine["shapes"][name]), name
    genuine_pages = json.loads((genuine_dir / "paginators-1.json").read_text())["pagination"]
    for name, page in json.loads((ours_dir / "paginators-1.json").read_text())["pagination"].items():
        assert page == genuine_pages[name], name


def test_genuine_client_drives_the_server(genuine_python, demo_home, start_server, tmp_path, dark, bright):
    live = start_server(serving_service(demo_home), credentials={KEY_ID: SECRET})
    (tmp_path / "dark.png").write_bytes(dark)
    (tmp_path / "bright.png").write_bytes(bright)
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_") and k != "AWS_DATA_PATH"}
    env |= {"PATH": os.environ.get("PATH", ""), "AWS_ENDPOINT_URL_LOOKOUTVISION": live.url, "PYTHONNOUSERSITE": "1"}
    run = subprocess.run([str(genuine_python), str(Path(__file__).with_name("genuine_client.py")),
                          str(tmp_path / "dark.png"), str(tmp_path / "bright.png")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["botocore"] == GENUINE and seen["endpoint"] == live.url
    assert Path(seen["model_from"]).parts[-2:] == ("botocore", "data") and DATA_PATH != seen["model_from"]
    assert seen["created"] == seen["created_again"] == "genuine"
    assert seen["projects"] == ["demo", "genuine"] and seen["models"] == ["1", "2"]
    assert seen["status_before"] == "TRAINED" and seen["created_is_datetime"] == "datetime"
    assert seen["conflict"] == ["ConflictException", "MODEL"]
    assert seen["start"] == "STARTING_HOSTING" and seen["status_1"] == seen["status_2"] == "HOSTED"
    assert seen["bright"] == [True, ["background", "anomaly"], "89504e470d0a1a0a"]  # the mask: PNG bytes
    assert seen["dark_latest"] == ["Confidence", "IsAnomalous", "Source"]  # version 2 classifies only
    assert seen["not_found"] == ["nope", "PROJECT", "project 'nope' does not exist"]
    assert "image/png and image/jpeg" in seen["validation"]
    assert seen["tags"] == [{"Key": "line", "Value": "7"}] and seen["stop"] == "STOPPING_HOSTING"
    assert seen["denied"] == 403
