"""The README's two commands stay true: .ci/run runs exactly the test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return re.findall(r"```bash\n(python3 -m venv [^\n]+)\n```", (ROOT / "README.md").read_text())


def test_readme_has_demo_and_test_commands():
    demo, tests = _commands()[:2]
    assert demo.endswith("lvkit demo") and "torch==2.14.1" in demo
    assert "pytest" in tests and "'.[test]'" in tests


def test_ci_runs_exactly_the_readme_test_command():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert _commands()[1] in ci
