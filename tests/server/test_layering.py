"""The server imports no client (the tag wire form is lvkit.shapes'), and takes its operation
table from the service description (lvkit.operations)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lvkit.server
from lvkit.boto import DATA_PATH
from lvkit.operations import NOT_IMPLEMENTED, operations
from lvkit.server.app import HANDLERS, ROUTES

SERVER = Path(lvkit.server.__file__).parent
DESCRIPTION = json.loads(Path(DATA_PATH, "lookoutvision", "2020-11-20", "service-2.json").read_text())


def _imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (``from lvkit import client`` as ``lvkit.client``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("path", sorted(SERVER.glob("*.py")), ids=lambda p: p.name)
def test_no_server_module_imports_the_client(path):
    assert not {m for m in _imports(path) if m == "lvkit.client" or m.startswith("lvkit.client.")}


def test_the_server_loads_with_the_client_unimportable():
    # lvkit's __init__ imports the client; after it, make lvkit.client unimportable and load every
    # server module fresh: an import of the client anywhere on their import path fails
    modules = sorted(f"lvkit.server.{p.stem}" for p in SERVER.glob("*.py") if p.stem not in ("__init__", "__main__"))
    code = ("import sys, lvkit; del sys.modules['lvkit.client']; sys.modules['lvkit.client'] = None; "
            f"import lvkit.server; [__import__(m) for m in {modules!r}]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_operation_table_is_the_description():
    described = set(DESCRIPTION["operations"])
    assert set(operations()) == described
    for name, op in operations().items():
        http = DESCRIPTION["operations"][name]["http"]
        assert (op.http_method, op.request_uri, op.status) == (http["method"], http["requestUri"],
                                                               http.get("responseCode", 200))


def test_served_and_not_implemented_make_up_the_description():
    described = set(DESCRIPTION["operations"])
    assert set(HANDLERS).isdisjoint(NOT_IMPLEMENTED)
    assert set(HANDLERS) | NOT_IMPLEMENTED == described
    assert {op for _, _, op, _ in ROUTES} == set(HANDLERS)
