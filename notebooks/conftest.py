"""Which notebooks pytest runs (with nbval): every one, except those that need what CI lacks.

A notebook that needs a GPU or the real AWS service says so in its metadata::

    "metadata": {"lvkit": {"requires": ["gpu"]}}

and is collected only when the matching opt-in is set to ``1``: ``LVKIT_NOTEBOOKS_GPU`` for
``gpu``, ``LVKIT_NOTEBOOKS_AWS`` for ``aws`` (``LVKIT_NOTEBOOKS_<NAME>`` for any other need).
The seven notebooks of ``notebooks/`` need neither: the throughput notebook adds GPU rows by
itself when torch sees one. ``tests/test_notebooks.py`` tests this logic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path


def requirements(path: Path) -> list[str]:
    """The needs a notebook declares in ``metadata.lvkit.requires`` (lowercase)."""
    meta = json.loads(Path(path).read_text(encoding="utf-8")).get("metadata", {})
    return [str(r).lower() for r in meta.get("lvkit", {}).get("requires", [])]


def opt_in(requirement: str) -> str:
    """The environment variable that lets notebooks needing ``requirement`` run."""
    return f"LVKIT_NOTEBOOKS_{requirement.upper()}"


def ignored(folder: Path, environ: Mapping[str, str]) -> list[str]:
    """File names of the notebooks in ``folder`` to leave out: a need whose opt-in is not ``"1"``."""
    return [path.name for path in sorted(Path(folder).glob("*.ipynb"))
            if any(environ.get(opt_in(r)) != "1" for r in requirements(path))]


collect_ignore = ignored(Path(__file__).parent, os.environ)
