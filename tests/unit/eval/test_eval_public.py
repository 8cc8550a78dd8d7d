"""lvkit.eval's public names and import weight."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import lvkit.eval as ev

EVAL_DIR = Path(ev.__file__).parent
FORBIDDEN = {"torch", "matplotlib", "pandas"}
METRIC_MODULES = ["bootstrap", "calibration", "masks", "ranking", "scores"]


def test_all_is_sorted_and_complete() -> None:
    assert ev.__all__ == sorted(ev.__all__, key=str.lower)
    exported = {name for mod in METRIC_MODULES for name in __import__(f"lvkit.eval.{mod}", fromlist=["_"]).__all__}
    assert exported <= set(ev.__all__)  # other lvkit.eval modules (run, report, ...) add their own names
    assert all(hasattr(ev, name) for name in ev.__all__)


def test_public_functions_have_keyword_only_options_and_examples() -> None:
    for name in ev.__all__:
        obj = getattr(ev, name)
        if not callable(obj) or isinstance(obj, dict):
            continue
        assert obj.__doc__ and ("Examples" in obj.__doc__ or name == "Calibrator"), name
        if inspect.isfunction(obj):
            params = inspect.signature(obj).parameters.values()
            defaults = [p for p in params if p.default is not p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
            assert not defaults, f"{name}: options with defaults must be keyword-only: {defaults}"


def test_no_heavy_module_level_imports() -> None:
    """No eval module imports torch/matplotlib/pandas at import time; the metric modules not sklearn/scipy either."""
    for path in EVAL_DIR.glob("*.py"):
        ours = path.stem.lstrip("_") in [*METRIC_MODULES, "calibrators", "maps", "checks"]
        lazy = FORBIDDEN | ({"sklearn", "scipy"} if ours else set())
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; imports inside functions are fine
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            roots = {n.split(".")[0] for n in names}
            assert not roots & lazy, f"{path.name} imports {roots}"


def test_import_leaves_torch_and_matplotlib_out() -> None:
    code = "import sys, lvkit.eval; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_module_uses_a_siblings_private_name() -> None:
    """Shared helpers live in ``checks``/``base`` under public names: no ``from lvkit.eval.x import _y``
    and no ``module._y`` on an imported ``lvkit.eval`` module (a module's own ``_private`` names are fine)."""
    offences = []
    for path in sorted(EVAL_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lvkit.eval"):
                for alias in node.names:
                    if node.module == "lvkit.eval" and not alias.name.startswith("_"):
                        aliases.add(alias.asname or alias.name)  # a submodule imported as a name
                    elif alias.name.startswith("_"):
                        offences.append(f"{path.name}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("lvkit.eval.") and alias.asname:
                        aliases.add(alias.asname)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_")):
                offences.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not offences, offences


def test_warnings_are_exported() -> None:
    assert issubclass(ev.CoverageWarning, UserWarning) and issubclass(ev.CalibrationFitWarning, UserWarning)


def test_module_level_lvkit_imports_are_shapes_errors_and_siblings() -> None:
    """``eval -> shapes`` only: at import time an eval module imports ``lvkit.eval.*``, ``lvkit.shapes`` and
    ``lvkit.errors``; training, the client, datasets and Ray are imported inside functions (the matrix)."""
    allowed = {"lvkit.shapes", "lvkit.errors"}
    for path in EVAL_DIR.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n.startswith("lvkit") and n not in allowed and not n.startswith("lvkit.eval")]
            assert not bad, f"{path.name} imports {bad} at module level"
