"""``python -m lvkit.server [options]``: the same as ``lvkit serve``; binds 127.0.0.1 by default."""

from __future__ import annotations

import sys

import click

from lvkit.cli import serve
from lvkit.errors import LvkitError

if __name__ == "__main__":
    try:
        serve.main(sys.argv[1:], prog_name="python -m lvkit.server", standalone_mode=True)
    except LvkitError as exc:  # e.g. a non-loopback address without credentials
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
