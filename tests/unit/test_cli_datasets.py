"""``lvkit datasets ...`` and ``lvkit models create``: real manifests, a real (small) training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvkit.cli import main
from lvkit.datasets import load_mvtec, write_manifest


@pytest.fixture
def manifests(tiny_benchmark: Path, tmp_path: Path) -> Path:
    import shutil

    root = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, root)
    ds = load_mvtec(root)
    for split in ("train", "test"):
        write_manifest(ds, root / f"{split}.manifest", split=split)
    return root


def run(home: Path, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--home", str(home)], input=input)
    return result.exit_code, result.stdout, result.stderr


def test_datasets_commands_round_trip(manifests, tmp_path):
    home = tmp_path / "home"
    code, out, _ = run(home, "datasets", "create", "--project", "cli", "--type", "train",
                       "--manifest", str(manifests / "train.manifest"))
    assert code == 0 and "CREATE_COMPLETE" in out and "12 images, 12 labeled: 12 normal, 0 anomaly" in out
    code, out, _ = run(home, "datasets", "describe", "--project", "cli", "--type", "train")
    assert code == 0 and json.loads(out)["DatasetDescription"]["ImageStats"]["Total"] == 12
    code, out, _ = run(home, "datasets", "list-entries", "--project", "cli", "--type", "train",
                       "--source-ref-contains", "good/00")
    refs = [json.loads(line)["source-ref"] for line in out.splitlines()]
    assert code == 0 and refs and all("good/00" in r for r in refs)

    image = (manifests / "train" / "good").iterdir().__next__()
    change = json.dumps({"source-ref": str(image.absolute()), "anomaly-label": 0})
    code, out, _ = run(home, "datasets", "update", "--project", "cli", "--type", "train", "-", input=change)
    assert code == 0 and "UPDATE_COMPLETE" in out and "13 images" in out
    code, out, _ = run(home, "datasets", "update", "--project", "cli", "--type", "train", "-",
                       input='{"source-ref": "relative.png"}')
    assert code == 1 and "UPDATE_FAILED_ROLLBACK_COMPLETE" in out and "13 images" in out

    (tmp_path / "bad.manifest").write_text('{"source-ref": "nope.png", "anomaly-label": 0}\n')
    code, out, _ = run(home, "datasets", "create", "--project", "cli", "--type", "test",
                       "--manifest", str(tmp_path / "bad.manifest"))
    assert code == 1 and "CREATE_FAILED" in out and "line 1" in out and "nope.png" in out
    code, _, err = run(home, "datasets", "create", "--project", "cli", "--type", "test")
    assert code == 1 and "ConflictException" in err
    for kind in ("test", "train"):
        assert run(home, "datasets", "delete", "--project", "cli", "--type", kind)[0] == 0
    code, _, err = run(home, "datasets", "describe", "--project", "cli", "--type", "train")
    assert code == 1 and "ResourceNotFoundException" in err


@pytest.mark.slow
def test_models_create_trains_from_the_datasets_and_writes_the_output(manifests, tmp_path):
    home = tmp_path / "home"
    code, _, err = run(home, "models", "create", "--project", "cli", "--model", "padim")
    assert code == 1 and "ResourceNotFoundException" in err
    for kind in ("train", "test"):
        assert run(home, "datasets", "create", "--project", "cli", "--type", kind,
                   "--manifest", str(manifests / f"{kind}.manifest"))[0] == 0
    code, out, err = run(home, "models", "create", "--project", "cli", "--model", "padim", "--image-size", "64",
                         "--output", str(tmp_path / "out"), "--tag", "team=qa", "--description", "first")
    assert code == 0, err
    assert "train padim: fit done" in out  # progress lines while training
    summary = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert summary["Status"] == "TRAINED" and summary["Performance"]["F1Score"] > 0
    result = json.loads((tmp_path / "out" / "cli" / "1" / "EvaluationResult-cli.json").read_text())
    assert result["AggregatedEvaluationResults"]["Metrics"]["F1Score"] == pytest.approx(
        summary["Performance"]["F1Score"])
    code, _, err = run(home, "models", "create", "--project", "cli", "--tag", "oops")
    assert code == 2 and "KEY=VALUE" in err
