"""The notebooks' structure (the rules below, stated here in full) and which of them pytest collects.

Running them is nbval's job (``--nbval-lax`` in pyproject's addopts, ``notebooks`` in
testpaths); this file checks what running cannot: they are committed stripped, start with a
title and a ``parameters`` cell of literal settings (the dataset, an existing project/version,
the home, cleanup), have the smoke switch, import only lvkit's public API and display
libraries, start ``lvkit serve`` only through ``lvkit.serving``, warn about small samples, and
end with a collapsed cell of asserts tagged ``test``. Fix a stripped-state failure with
``lvkit report --clean``. One slow test runs a notebook on an existing model version.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from lvkit.publish import KERNELSPEC, TEST_TAG, clean_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = ["01_quickstart", "02_calibration", "03_mask_iou", "04_throughput", "05_backends", "06_runtimes",
            "07_model_selection"]
SMOKE_LINE = 'SMOKE = SMOKE or os.environ.get("LVKIT_SMOKE") == "1"'
#: what a notebook may import besides the standard library and lvkit's public modules
DISPLAY = {"IPython", "matplotlib", "numpy", "pandas", "torch"}  # torch: only torch.cuda.is_available()
#: the parameters that point a notebook at any dataset and model version, with their defaults
ANY_DATASET = {"DATASET": "", "PROJECT": None, "MODEL_VERSION": None, "HOME": "", "CLEANUP": False}
#: the notebooks that train a matrix of versions (``lve.matrix``) instead of using one: no project, version or
#: home to point at, but a results folder that a rerun resumes from
MATRIX = ["07_model_selection"]
ANY_MATRIX = {"DATASET": "", "RESULTS": "", "CLEANUP": False}
#: the notebooks whose numbers score verdicts or masks on test images: they warn about small samples
SCORING = ["01_quickstart", "02_calibration", "03_mask_iou", "05_backends", "06_runtimes", "07_model_selection"]


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
    nb = _load(NOTEBOOKS / f"{request.param}.ipynb")
    nb["name"] = request.param
    return nb


def test_the_seven_notebooks_are_there():
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
    if notebook["name"] in MATRIX:
        assert set(ANY_MATRIX) <= set(names), "DATASET, RESULTS and CLEANUP are parameters"
        assert all(values[n] == d and type(values[n]) is type(d) for n, d in ANY_MATRIX.items())
        return
    assert set(ANY_DATASET) <= set(names), "DATASET, PROJECT, MODEL_VERSION, HOME and CLEANUP are parameters"
    for name, default in ANY_DATASET.items():
        if name == "PROJECT":
            assert isinstance(values[name], str) and values[name]
        else:
            assert values[name] == default and type(values[name]) is type(default), name


def test_parameter_comments_are_plain_text(notebook):
    """No ``\\'`` (a quote escaped twice when the cell was written) in comments or markdown."""
    for cell in notebook["cells"]:
        assert "\\'" not in _source(cell) and '\\"' not in _source(cell), _source(cell)[:200]


def test_smoke_switch_follows(notebook):
    source = _source(_code(notebook)[1])
    assert "import os" in source and SMOKE_LINE in source and "\nif SMOKE:" in source


def test_stripped(notebook):
    for cell in _code(notebook):
        assert cell["outputs"] == [] and cell["execution_count"] is None, "run `lvkit report --clean`"
        hidden = {"jupyter": {"source_hidden": True}} if TEST_TAG in cell["metadata"].get("tags", []) else {}
        assert {k: v for k, v in cell["metadata"].items() if k != "tags"} == hidden, "run `lvkit report --clean`"
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


def _only_asserts(nodes: list[ast.stmt]) -> bool:
    """Plain asserts, or ``if`` blocks of them (checks that hold for the bundled benchmark only)."""
    return bool(nodes) and all(isinstance(n, ast.Assert) or (isinstance(n, ast.If) and _only_asserts(n.body)
                                                             and (not n.orelse or _only_asserts(n.orelse)))
                               for n in nodes)


def test_ends_with_a_collapsed_test_cell(notebook):
    """The assertions are out of the reader's way: the last cell, tagged ``test``, source hidden."""
    last = _code(notebook)[-1]
    assert notebook["cells"][-1] is last
    assert last["metadata"].get("tags") == [TEST_TAG] and last["metadata"]["jupyter"] == {"source_hidden": True}
    assert _only_asserts(_python(last).body)
    assert all(TEST_TAG not in c["metadata"].get("tags", []) for c in _code(notebook)[:-1])
    assert all("assert " not in _source(c) for c in _code(notebook)[:-1]), "asserts go to the test cell"


def test_state_in_a_temporary_home_unless_given(notebook):
    source = "\n".join(_source(c) for c in _code(notebook))
    assert "WORK = Path(tempfile.mkdtemp(" in source
    assert "if CLEANUP:" in source and "atexit.register(shutil.rmtree, WORK" in source
    assert "CLEANUP = True" in _source(_code(notebook)[1])  # CI (SMOKE) keeps nothing
    if notebook["name"] in MATRIX:  # every cell's home is in RESULTS; the data is generated there too
        assert 'RESULTS = Path(RESULTS).expanduser() if RESULTS else WORK / "results"' in source
        assert "lvkit.datasets.generate(RESULTS" in source and "[DATASET]" in source and "lve.matrix(" in source
        assert "lve.stop_ray()" in source  # Ray goes before the kernel: no stack dump in its log
        return
    assert 'HOME = str(Path(HOME).expanduser()) if HOME else str(WORK / "home")' in source
    assert 'os.environ["LVKIT_HOME"] = HOME' in source
    assert "lvkit.datasets.generate(" in source and "lvkit.datasets.load(DATASET)" in source  # never downloaded
    assert "if MODEL_VERSION is None:" in source and "lvkit.train(" in source


def test_public_api_only(notebook):
    """No store files, manifests or hand-made servers: what a notebook needs is a public function."""
    source = "\n".join(_source(c) for c in _code(notebook))
    for internal in (
        "read_manifest", "read_version_manifest", "artifact_dir", "subprocess", "socket", "lvkit.server", "send_signal"
    ):
        assert internal not in source, internal


@pytest.mark.parametrize("name", SCORING)
def test_scoring_notebooks_warn_about_small_samples(name):
    source = "\n".join(_source(c) for c in _code(_load(NOTEBOOKS / f"{name}.ipynb")))
    assert "caveat = sample_size_warning(held_out" in source and "warnings=[caveat" in source


def test_clean_notebook_strips_and_keeps_tags(tmp_path):
    nb = _load(NOTEBOOKS / "01_quickstart.ipynb")
    nb["metadata"]["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    nb["metadata"]["widgets"] = {}
    cell = _code(nb)[0]
    cell["execution_count"] = 3
    cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hello\n"}]
    cell["metadata"]["papermill"] = {"duration": 1.0}
    cell["metadata"]["jupyter"] = {"source_hidden": True}  # a view state: not committed
    test_cell = _code(nb)[-1]
    test_cell["metadata"] = {"tags": [TEST_TAG], "collapsed": False}  # the test cell: collapsed once cleaned
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    assert clean_notebook(path) is True
    cleaned = _load(path)
    assert _code(cleaned)[0]["outputs"] == [] and _code(cleaned)[0]["execution_count"] is None
    assert _code(cleaned)[0]["metadata"] == {"tags": ["parameters"]}
    assert _code(cleaned)[-1]["metadata"] == {"tags": [TEST_TAG], "jupyter": {"source_hidden": True}}
    assert cleaned["metadata"] == {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    assert clean_notebook(path) is False  # idempotent


def test_committed_notebooks_are_clean(tmp_path):
    for name in EXPECTED:
        copy = tmp_path / f"{name}.ipynb"
        copy.write_bytes((NOTEBOOKS / f"{name}.ipynb").read_bytes())
        assert clean_notebook(copy) is False, f"{name}: run `lvkit report --clean`"


@pytest.mark.slow
def test_a_notebook_on_an_existing_version_trains_nothing_and_keeps_it(anomalib_home, tiny_benchmark, tmp_path,
                                                                        monkeypatch):
    """DATASET, PROJECT, MODEL_VERSION and HOME point the quickstart at a version trained elsewhere."""
    papermill = pytest.importorskip("papermill")
    import nbformat

    import lvkit

    monkeypatch.delenv("LVKIT_SMOKE", raising=False)  # SMOKE would clean up
    home = tmp_path / "home"
    shutil.copytree(anomalib_home, home)  # the session's store stays as it is
    out = tmp_path / "01_quickstart.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / "01_quickstart.ipynb"), str(out), kernel_name="python3", progress_bar=False,
        cwd=str(NOTEBOOKS), parameters={"DATASET": str(tiny_benchmark), "PROJECT": "brick", "MODEL_VERSION": "1",
                                        "HOME": str(home), "DEVICE": "cpu"})
    cells = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    server_cell = next(c for c in cells if "lvkit.serving(" in c.source)
    assert [o.get("name") for o in server_cell.outputs] == ["stdout"]  # no red stderr box
    assert "lvkit serve: http://127.0.0.1:" in (home / "serve.log").read_text()  # its output went there
    warned = [c for c in cells if any("lvkit-warning" in str(o.get("data", {})) for o in c.outputs)]
    assert len(warned) == 1  # the tiny benchmark: a small sample
    kept = next(c for c in cells if "if CLEANUP:" in c.source and "kept: " in c.source)
    assert f"kept: HOME = {str(home)!r}; PROJECT = 'brick'; MODEL_VERSION = '1'" in kept.outputs[0]["text"]
    lv = lvkit.client(home)
    models = lv.list_models(ProjectName="brick")["Models"]
    assert [(m["ModelVersion"], m["Status"]) for m in models] == [("1", "TRAINED")]  # nothing trained, stopped


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


def test_the_seven_notebooks_are_all_collected(collection):
    assert collection.ignored(NOTEBOOKS, {}) == []
    assert collection.collect_ignore == []
