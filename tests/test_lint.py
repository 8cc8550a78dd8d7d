"""The code passes ruff: pyflakes' errors, pycodestyle, import order and a 120-character line,
as configured in ``[tool.ruff]`` of pyproject.toml (the same check a contributor runs as
``ruff check``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    pytest.importorskip("ruff")
    found = shutil.which("ruff", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "ruff"]


def test_ruff_check_passes():
    out = subprocess.run([*_ruff(), "check", "--no-cache", "lvkit", "tests", "benchmarks", "notebooks"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_would_fail_on_a_bad_file(tmp_path: Path):
    """The configuration is read and catches what it should (an unused import, bad order, a long line)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nx = '" + "a" * 130 + "'\n")
    out = subprocess.run([*_ruff(), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1
    for code in ("F401", "I001", "E501"):
        assert code in out.stdout, out.stdout
