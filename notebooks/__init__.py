"""Not a library: this file only makes pytest import ``notebooks/conftest.py`` as ``notebooks.conftest``.

Without it that conftest would be a top-level ``conftest`` module and clash with the other
package-less ``conftest.py`` files of the test tree (``tests/unit/eval/conftest.py``).
"""
