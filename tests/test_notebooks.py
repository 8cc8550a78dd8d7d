"""The notebooks' structure (STYLE.md section 9) and which of them pytest collects.

Running them is nbval's job (``--nbval-lax`` in pyproject's addopts, ``notebooks`` in
testpaths); this file checks what running cannot: they are committed stripped, start with a
title and a ``parameters`` cell of literal settings, have the smoke switch, import only lvkit's
public API and display libraries, and end with plain asserts. Fix a stripped-state failure
with ``lvkit report --clean``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from lvkit.report import KERNELSPEC, clean_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ["01_quickstart", "02_calibration", "03_mask_iou", "04_throughput", "05_backends"]
SMOKE_LINE = 'SMOKE = SMOKE or os.environ.get("LVKIT_SMOKE") == "1"'
#: what a notebook may import besides the standard library and lvkit's public modules
DISPLAY = {"IPython", "matplotlib", "numpy", "pandas", "torch"}  # torch: only torch.cuda.is_available()


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _python(cell: dict) -> ast.Module:
    """A code cell as Python: IPython line magics (``%matplotlib inline``) are blanked first."""
    text = "\n".join("" if line.lstrip().startswith("%") else line for line in _source(cell).splitlines())
    return ast.parse(text)


def _code(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.fixture(params=EXPECTED)
def notebook(request: pytest.FixtureRequest) -> dict:
    return _load(NOTEBOOKS / f"{request.param}.ipynb")


def test_the_five_notebooks_are_there():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


def test_title_and_purpose_first(notebook):
    first = notebook["cells"][0]
    assert first["cell_type"] == "markdown"
    lines = [line for line in _source(first).splitlines() if line.strip()]
    assert lines[0].startswith("# "), "the first cell starts with a '# Title'"
    assert len(" ".join(lines[1:]).split()) >= 30, "a purpose paragraph follows the title"


def test_first_code_cell_is_literal_parameters(notebook):
    cell = _code(notebook)[0]
    assert "parameters" in cell["metadata"].get("tags", [])
    names = []
    for node in _python(cell).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), (
            f"only `NAME = literal` lines, got {ast.unparse(node)!r}")
        ast.literal_eval(node.value)  # raises for anything but a literal
        names.append(node.targets[0].id)
    assert names == [n for n in names if n.isupper()], "parameters are UPPER_CASE"
    assert {"SEED", "SMOKE", "REPORT_DIR"} <= set(names) and names[-1] == "SMOKE"
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in _python(cell).body}
    assert values["SMOKE"] is False and values["REPORT_DIR"] == ""


def test_smoke_switch_follows(notebook):
    source = _source(_code(notebook)[1])
    assert "import os" in source and SMOKE_LINE in source and "\nif SMOKE:" in source


def test_stripped(notebook):
    for cell in _code(notebook):
        assert cell["outputs"] == [] and cell["execution_count"] is None, "run `lvkit report --clean`"
        assert set(cell["metadata"]) <= {"tags"}, "run `lvkit report --clean`"
    assert notebook["metadata"]["kernelspec"] == KERNELSPEC
    assert set(notebook["metadata"]) <= {"kernelspec", "language_info", "lvkit"}
    assert "version" not in notebook["metadata"].get("language_info", {})


def test_no_installs_or_shell(notebook):
    for cell in _code(notebook):
        for line in _source(cell).splitlines():
            stripped = line.lstrip()
            assert not stripped.startswith("!"), f"no shell escapes: {line!r}"
            assert not re.match(r"%(pip|conda|sx|system)\b", stripped), f"no installs: {line!r}"


def test_imports_public_api_and_display_only(notebook):
    allowed = set(sys.stdlib_module_names) | DISPLAY
    for cell in _code(notebook):
        for node in ast.walk(_python(cell)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                parts = module.split(".")
                if parts[0] == "lvkit":
                    assert not any(p.startswith("_") for p in parts), f"private module {module}"
                    if isinstance(node, ast.ImportFrom):
                        assert not any(a.name.startswith("_") for a in node.names), f"private name from {module}"
                else:
                    assert parts[0] in allowed, f"import {module}: lvkit's API, the stdlib or {sorted(DISPLAY)}"


def test_ends_with_plain_asserts(notebook):
    body = _python(_code(notebook)[-1]).body
    assert body and all(isinstance(node, ast.Assert) for node in body)


def test_state_in_a_temporary_home(notebook):
    source = "\n".join(_source(c) for c in _code(notebook))
    assert 'os.environ["LVKIT_HOME"] = str(WORK' in source and "tempfile.mkdtemp(" in source
    assert "lvkit.datasets.generate(" in source  # data is generated, never downloaded


def test_clean_notebook_strips_and_keeps_tags(tmp_path):
    nb = _load(NOTEBOOKS / "01_quickstart.ipynb")
    nb["metadata"]["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    nb["metadata"]["widgets"] = {}
    cell = _code(nb)[0]
    cell["execution_count"] = 3
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hello\n"}]
    cell["metadata"]["papermill"] = {"duration": 1.0}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    assert clean_notebook(path) is True
    cleaned = _load(path)
    assert _code(cleaned)[0]["outputs"] == [] and _code(cleaned)[0]["execution_count"] is None
    assert _code(cleaned)[0]["metadata"] == {"tags": ["parameters"]}
    assert cleaned["metadata"] == {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    assert clean_notebook(path) is False  # idempotent


def test_committed_notebooks_are_clean(tmp_path):
    for name in EXPECTED:
        copy = tmp_path / f"{name}.ipynb"
        copy.write_bytes((NOTEBOOKS / f"{name}.ipynb").read_bytes())
        assert clean_notebook(copy) is False, f"{name}: run `lvkit report --clean`"


# --- notebooks/conftest.py: what pytest collects -------------------------------------------------------------------


@pytest.fixture(scope="module")
def collection():
    spec = importlib.util.spec_from_file_location("lvkit_notebooks_conftest", NOTEBOOKS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, name: str, requires: list[str] | None = None) -> None:
    meta = {"kernelspec": KERNELSPEC} | ({"lvkit": {"requires": requires}} if requires is not None else {})
    (folder / f"{name}.ipynb").write_text(json.dumps({"cells": [], "metadata": meta, "nbformat": 4,
                                                      "nbformat_minor": 5}))


def test_gpu_and_aws_notebooks_are_left_out_unless_opted_in(collection, tmp_path):
    _write(tmp_path, "a_plain")
    _write(tmp_path, "b_gpu", ["gpu"])
    _write(tmp_path, "c_aws", ["aws"])
    _write(tmp_path, "d_both", ["gpu", "AWS"])
    assert collection.ignored(tmp_path, {}) == ["b_gpu.ipynb", "c_aws.ipynb", "d_both.ipynb"]
    assert collection.ignored(tmp_path, {"LVKIT_NOTEBOOKS_GPU": "1"}) == ["c_aws.ipynb", "d_both.ipynb"]
    assert collection.ignored(tmp_path, {"LVKIT_NOTEBOOKS_GPU": "1", "LVKIT_NOTEBOOKS_AWS": "1"}) == []
    assert collection.ignored(tmp_path, {"LVKIT_NOTEBOOKS_GPU": "0", "LVKIT_NOTEBOOKS_AWS": "yes"}) == [
        "b_gpu.ipynb", "c_aws.ipynb", "d_both.ipynb"]  # only "1" opts in


def test_the_five_notebooks_are_all_collected(collection):
    assert collection.ignored(NOTEBOOKS, {}) == []
    assert collection.collect_ignore == []
