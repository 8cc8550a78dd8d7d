"""What a rendered report shows (``lvkit.publish``): the small-sample warning, the test cell out of
the way, comments as written (no ``\\'``), and ``CLEANUP=True`` for notebooks that have it.

``tests/test_report.py`` covers running, rendering and indexing in general.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pandas as pd
import pytest

from lvkit.publish import (
    MIN_IMAGES_PER_CLASS,
    TEST_TAG,
    _html,
    render_index,
    run_reports,
    sample_size_warning,
    save_headline,
    show_warning,
)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _samples(normal: int, anomalous: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(label=0)] * normal + [SimpleNamespace(label=1)] * anomalous


@pytest.mark.parametrize(("normal", "anomalous", "warned"), [
    (10, 10, True), (29, 100, True), (100, 29, True), (0, 50, True), (30, 30, False), (300, 31, False)])
def test_sample_size_warning_below_30_of_either_class(normal, anomalous, warned):
    text = sample_size_warning(_samples(normal, anomalous), show=False)
    assert (text is not None) == warned and MIN_IMAGES_PER_CLASS == 30
    if warned:
        assert text.startswith(f"Small sample: {normal} normal and {anomalous} anomalous held-out test images")
        assert "fewer than 30 of each" in text and "Confidence 1.0" in text


def test_sample_size_warning_reads_run_tables_and_takes_its_wording():
    table = pd.DataFrame({"label": [0] * 5 + [1] * 12})
    text = sample_size_warning(table, what="images that fit the recalibrators", minimum=10, show=False)
    assert text.startswith("Small sample: 5 normal and 12 anomalous images that fit the recalibrators")
    assert "error rate of up to 45% (95% bound)" in text  # 1 - 0.05 ** (1 / 5), none wrong of 5
    assert sample_size_warning(table, minimum=5, show=False) is None


def test_outside_jupyter_the_warning_is_printed(capsys):
    text = sample_size_warning(_samples(3, 3))
    assert capsys.readouterr().out == f"Warning: {text}\n"
    show_warning(None)
    assert capsys.readouterr() == ("", "")


def test_index_lists_the_warnings(tmp_path):
    path = save_headline(tmp_path, "01_x", {"AUROC": 1.0}, warnings=[None, "Small sample: 3 normal"])
    data = json.loads(path.read_text())
    assert data["warnings"] == ["Small sample: 3 normal"]
    md = render_index([{"name": "01_x", "data": data}], fingerprint={})
    assert "> **Warning:** Small sample: 3 normal" in md
    assert json.loads(save_headline(tmp_path, "02_y", {"a": 1}).read_text())["warnings"] == []


def test_index_shows_the_tables_after_the_numbers(tmp_path):
    board = "| dataset | model | auroc |\n|---|---|---|\n| brick | padim | 0.900 [0.800, 0.970] * |"
    data = json.loads(save_headline(tmp_path, "07_x", {"cells": 2}, timings={"fit (s)": 3.0},
                                    tables={"Leaderboard": board + "\n"}).read_text())
    assert data["tables"] == {"Leaderboard": board + "\n"}
    md = render_index([{"name": "07_x", "data": data}], fingerprint={})
    assert f"**Leaderboard**\n\n{board}\n" in md
    assert md.index("| fit (s) | 3 |") < md.index("**Leaderboard**")  # after the timings
    assert json.loads(save_headline(tmp_path, "08_y", {"a": 1}).read_text())["tables"] == {}


def _notebook(path: Path, parameters: str, *cells: str, test: str = "") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A stand-in\n\nfor the tests."), params,
                *(nbformat.v4.new_code_cell(c) for c in cells)]
    if test:
        nb.cells.append(nbformat.v4.new_code_cell(test, metadata={"tags": [TEST_TAG]}))
    nbformat.write(nb, path)
    return path


def test_every_rendered_report_shows_the_small_sample_warning(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_small.ipynb", 'SMOKE = False\nREPORT_DIR = ""\nCLEANUP = False  # the model\'s state',
              "from types import SimpleNamespace as S\nfrom lvkit.publish import sample_size_warning, save_headline\n"
              "held_out = [S(label=0)] * 10 + [S(label=1)] * 10\ncaveat = sample_size_warning(held_out)\n"
              "save_headline(REPORT_DIR, '01_small', {'cleanup': CLEANUP}, warnings=[caveat])",
              test="assert CLEANUP is True  # a test cell: left out of the HTML")
    [result] = run_reports(tmp_path / "out", notebooks=nbs, log=lambda _: None)
    assert result["error"] is None and result["data"]["headline"] == {"cleanup": True}  # CLEANUP=True injected
    html = (tmp_path / "out" / "01_small.html").read_text()
    assert 'class="lvkit-warning"' in html and "Small sample: 10 normal and 10 anomalous" in html
    assert "a test cell: left out of the HTML" not in html
    assert "model&#39;s state" in html or "model's state" in html
    assert "\\'" not in html and "\\&#39;" not in html
    assert "> **Warning:** Small sample: 10 normal" in (tmp_path / "out" / "index.md").read_text()


def test_parameters_render_without_escaped_quotes():
    """The committed notebooks' parameter comments (``the model's input side``) render as written."""
    nb = nbformat.read(NOTEBOOKS / "01_quickstart.ipynb", as_version=4)
    html = _html(nb)
    assert "the model&#39;s input side" in html or "the model's input side" in html
    assert "\\&#39;" not in html and "\\'" not in html
