"""``lvkit report`` on small stand-in notebooks: papermill parameters, HTML, headline JSON, index.md."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from lvkit.cli import main
from lvkit.publish import find_notebooks, render_index, run_reports, save_headline

PARAMETERS = 'SMOKE = False\nREPORT_DIR = ""'


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A stand-in\n\nfor the tests."), params,
                *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_good.ipynb",
              "import os\nfrom lvkit.publish import save_headline\n"
              "save_headline(REPORT_DIR, '01_good', {'smoke': SMOKE, 'env smoke': os.environ.get('LVKIT_SMOKE'),"
              " 'score': 0.123456}, timings={'seconds': 1.5}, parameters={'N': 3})\n"
              "print('figure-free output')")
    _notebook(nbs / "02_bad.ipynb", "raise RuntimeError('boom')")
    return nbs


def test_run_reports_executes_renders_and_indexes(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LVKIT_SMOKE", "1")  # a full-size report must not inherit it
    lines: list[str] = []
    out = tmp_path / "out"
    (out / "02_bad.json").parent.mkdir()
    (out / "02_bad.json").write_text('{"headline": {"stale": 1}}')
    results = run_reports(out, notebooks=folder, log=lines.append)
    assert [r["name"] for r in results] == ["01_good", "02_bad"]
    assert results[0]["error"] is None and "RuntimeError" in results[1]["error"]
    data = json.loads((out / "01_good.json").read_text())
    assert data["headline"] == {"smoke": False, "env smoke": None, "score": 0.123456}
    assert data["timings"] == {"seconds": 1.5} and data["parameters"] == {"N": 3} and "cpu" in data["fingerprint"]
    bad = json.loads((out / "02_bad.json").read_text())
    assert "headline" not in bad and "boom" in bad["error"]  # stale numbers are never indexed
    html = (out / "01_good.html").read_text()
    assert "figure-free output" in html and "injected-parameters" in html
    assert "boom" in (out / "02_bad.html").read_text()  # rendered as far as it ran
    index = (out / "index.md").read_text()
    assert "| [01_good](01_good.html) | ok |" in index and "| [02_bad](02_bad.html) | **failed** |" in index
    assert "| score | 0.1235 |" in index and "| seconds | 1.5 |" in index and "SMOKE sizes" not in index
    assert "cores" in index and "Versions:" in index
    assert lines[0] == "[1/2] 01_good: running (full size)" and lines[-1].startswith("wrote ")
    assert os.environ["LVKIT_SMOKE"] == "1"  # restored


def test_smoke_and_only(folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    results = run_reports(out, notebooks=folder, only=["01"], smoke=True, log=lambda _: None)
    assert [r["name"] for r in results] == ["01_good"]
    assert results[0]["data"]["headline"]["smoke"] is True and results[0]["data"]["smoke"] is True
    index = (out / "index.md").read_text()
    assert "SMOKE sizes** for 01_good" in index and "| 02_bad | not run | | |" in index


def test_a_partial_rerun_keeps_the_other_entries(folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    run_reports(out, notebooks=folder, log=lambda _: None)
    before = json.loads((out / "02_bad.json").read_text())
    run_reports(out, notebooks=folder, only=["01"], log=lambda _: None)
    index = (out / "index.md").read_text()
    assert "| [02_bad](02_bad.html) | **failed** |" in index and "| score | 0.1235 |" in index
    assert json.loads((out / "02_bad.json").read_text()) == before


def test_find_notebooks(folder: Path):
    assert [p.name for p in find_notebooks(folder)] == ["01_good.ipynb", "02_bad.ipynb"]
    assert [p.name for p in find_notebooks(folder, ["02_bad.ipynb"])] == ["02_bad.ipynb"]
    with pytest.raises(FileNotFoundError, match="matching"):
        find_notebooks(folder, ["99"])


def test_save_headline_converts_numpy(tmp_path: Path):
    import numpy as np

    path = save_headline(tmp_path, "x", {"a": np.float64(0.5), "b": np.bool_(True), "c": [np.int64(2)]})
    assert json.loads(path.read_text())["headline"] == {"a": 0.5, "b": True, "c": [2]}
    assert save_headline(None, "x", {"a": 1}) is None


def test_render_index_failure_and_missing_numbers():
    failed = {"notebook": "03_x", "seconds": 60.0, "error": "PapermillExecutionError: boom\nmore", "smoke": True,
              "ran_at": "2025-01-02T03:04:05+00:00"}
    later = {"headline": {"n": 3}, "seconds": 30.0, "error": None, "ran_at": "2025-01-03T00:00:00+00:00"}
    md = render_index([{"name": "03_x", "data": failed}, {"name": "04_y", "data": later}],
                      fingerprint={"cpu": "CPU", "cores": 2, "gpu": "H100", "torch": "2.14.1"})
    assert "2025-01-02 03:04 to 2025-01-03 00:00 UTC, 1.5 minutes" in md
    assert "GPU H100" in md and "torch 2.14.1" in md and "SMOKE sizes** for 03_x" in md
    assert "Failed: `PapermillExecutionError: boom`" in md and "No headline numbers recorded." in md
    assert "| n | 3 |" in md


def test_cli_report_and_clean(folder: Path, tmp_path: Path):
    runner = CliRunner()
    r = runner.invoke(main, ["report", "--notebooks", str(folder), "--out", str(tmp_path / "out"), "--only", "02"])
    assert r.exit_code == 1 and "02_bad: FAILED" in r.output
    executed = nbformat.read(folder / "01_good.ipynb", as_version=4)
    executed.cells[1].outputs = [nbformat.v4.new_output("stream", text="x")]
    executed.cells[1].execution_count = 1
    nbformat.write(executed, folder / "01_good.ipynb")
    r = runner.invoke(main, ["report", "--clean", "--notebooks", str(folder)])
    assert r.exit_code == 0 and "01_good.ipynb: cleaned" in r.output and "02_bad.ipynb: cleaned" in r.output
    cleaned = nbformat.read(folder / "01_good.ipynb", as_version=4)
    assert cleaned.cells[1].outputs == [] and cleaned.cells[1].metadata == {"tags": ["parameters"]}


def test_committed_reports_name_no_machine_paths():
    """Issue 13, item 10: the committed HTML named the builder's folders (/work/..., /tmp/...)."""
    import re
    from pathlib import Path

    reports = Path(__file__).resolve().parents[1] / "reports"
    for html in sorted(reports.glob("*.html")):
        found = re.findall(r"(?<![\w.:/])/(?:work|tmp|root|home|Users|var/folders)/[^\s\"'<]*", html.read_text())
        assert not found, f"{html.name}: {found[:3]}"


def test_machine_independent_keeps_urls_and_relative_paths(tmp_path, monkeypatch):
    import tempfile

    from lvkit.publish import machine_independent

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "reports"
    text = (f'<a href="https://cdn.example/x/y.js">{out}/a.png</a> {tempfile.gettempdir()}/lvkit-1/b '
            f'{tmp_path}/notebooks/c.ipynb {tmp_path}-other/d')
    other = f"{tmp_path}-other/d".replace(tempfile.gettempdir(), "$TMPDIR")  # not the cwd: a prefix only
    assert machine_independent(text, out=out) == (
        '<a href="https://cdn.example/x/y.js">reports/a.png</a> $TMPDIR/lvkit-1/b ./notebooks/c.ipynb '
        f'{other}')
