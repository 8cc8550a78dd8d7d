"""What every backend's training shares runs without torch: checks, splits, storing a version.

Issue 12, item 1: ``lvkit.training`` keeps only what any trainer shares and imports no model
code, so a broken dataset fails, and a version is stored, with torch and anomalib unimportable.
The anomalib package has no import cycle.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lvkit

PACKAGE = Path(lvkit.__file__).parent / "backends" / "anomalib"

# A trainer whose versions the fake backend serves: the brightness rule, threshold from the
# validation split. Run in a child where importing torch or anomalib raises ImportError.
NO_TORCH = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import numpy as np
    sys.modules.update({"torch": None, "anomalib": None, "torchvision": None, "lightning": None})
    import lvkit
    from lvkit.images import read_rgb
    from lvkit.training import TrainedVersion

    class BrightnessTrainer:
        backend = "fake"

        def check(self):
            pass

        def build(self, plan, folder, *, weights_dir, progress):
            mean = lambda s: float(read_rgb(s.image_path).mean())
            normal = [mean(s) for s in plan.splits["validation"] if s.label == 0]
            threshold = max(normal)
            scores = np.array([mean(s) for s in plan.splits["evaluation"]])
            return TrainedVersion({"threshold": threshold, "label": "anomaly", "color": "#FF0000"},
                                  scores > threshold)

    home, dataset, broken = sys.argv[1:4]
    try:
        lvkit.train("broken", broken, home=home, trainer=BrightnessTrainer(), progress=False)
    except lvkit.DatasetError as exc:
        broken_error = str(exc)
    version = lvkit.train("plain", dataset, home=home, trainer=BrightnessTrainer(), progress=False)
    lv = lvkit.client(home)
    described = lv.describe_model(ProjectName="plain", ModelVersion=version)["ModelDescription"]
    print(json.dumps({"broken": broken_error, "status": described["Status"],
                      "performance": described.get("Performance"),
                      "projects": [p["ProjectName"] for p in lv.list_projects()["Projects"]],
                      "splits": {k: len(v) for k, v in lv.service.version_splits("plain", version).items()},
                      "torch": "torch" in sys.modules and sys.modules["torch"] is not None}))
''')


def test_training_checks_and_stores_without_torch(tmp_path, tiny_benchmark):
    broken = tmp_path / "broken"
    (broken / "normal").mkdir(parents=True)
    for i, path in enumerate(sorted((tiny_benchmark / "train" / "good").glob("*.png"))[:5]):
        (broken / "normal" / f"{i}.png").write_bytes(path.read_bytes())
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "home"), str(tiny_benchmark), str(broken)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "at least 20 normal images" in got["broken"]
    assert got["projects"] == ["plain"]  # the broken dataset created nothing
    assert got["status"] == "TRAINED" and not got["torch"]
    assert set(got["performance"]) == {"F1Score", "Precision", "Recall"}
    assert got["splits"]["evaluation"] > 0 and got["splits"]["fit"] >= 8


def _lvkit_imports(path: Path) -> set[str]:
    """Modules of lvkit a file imports at module level (not inside functions or TYPE_CHECKING)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lvkit"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lvkit"))
    return found


def test_the_anomalib_package_has_no_import_cycle():
    modules = {f"lvkit.backends.anomalib.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {name: {m for m in _lvkit_imports(path) if m in modules} for name, path in modules.items()}
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in visiting, f"import cycle: {' -> '.join((*trail, name))}"
        if name in order:
            return
        visiting.add(name)
        for dep in sorted(graph[name]):
            visit(dep, (*trail, name))
        visiting.discard(name)
        order.append(name)

    for name in sorted(graph):
        visit(name, ())
    assert len(order) == len(modules) >= 8


def test_training_imports_no_model_code():
    imported = _lvkit_imports(Path(lvkit.__file__).parent / "training.py")
    assert not [m for m in imported if m.startswith("lvkit.backends.anomalib")]


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py")))
def test_each_module_imports_alone_without_torch(module):
    code = ('import sys; sys.modules.update({"torch": None, "anomalib": None}); '
            f'import lvkit.backends.anomalib.{module}' if module != "__init__" else 'import lvkit.backends.anomalib')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_training_child_imports_libraries_not_lvkit_modules_of_the_same_name(tmp_path):
    """``lvkit/packaging.py`` once shadowed the ``packaging`` library in the training child:
    its PYTHONPATH started with ``lvkit/`` itself. No top-level name may resolve into lvkit/."""
    from lvkit.backends.anomalib.worker import child_env

    env = child_env(allocator_fix=False)
    first = Path(env["PYTHONPATH"].split(os.pathsep)[0])
    assert (first / "lvkit" / "__init__.py").is_file()
    names = sorted(p.stem for p in (first / "lvkit").glob("*.py") if p.stem != "__init__")
    assert "packaging" in names and "storage" in names  # the test means something
    script = textwrap.dedent("""
        import importlib.util, sys
        inside = [n for n in sys.argv[1:] if (spec := importlib.util.find_spec(n)) and spec.origin
                  and "/lvkit/" in spec.origin]
        print(inside)
        import packaging.requirements
    """)
    out = subprocess.run([sys.executable, "-c", script, *names], env=env, cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
