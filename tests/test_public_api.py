"""Public names: __all__ sorted (case-insensitively) and complete; importing lvkit stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import lvkit
import lvkit.datasets
import lvkit.eval


@pytest.mark.parametrize("module", [lvkit, lvkit.eval, lvkit.datasets], ids=lambda m: m.__name__)
def test_all_sorted_and_complete(module):
    names = list(module.__all__)
    assert names == sorted(names, key=str.lower)
    for name in names:
        assert hasattr(module, name), name
    exported = {
        n for n, v in vars(module).items()
        if not n.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))
        and getattr(v, "__module__", "").startswith("lvkit")
    }
    assert exported <= set(names), exported - set(names)


def test_import_weight():
    code = (
        "import sys, lvkit, lvkit.eval, lvkit.datasets;"
        "bad = [m for m in ('torch', 'anomalib', 'boto3', 'lvkit.server', 'matplotlib') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
