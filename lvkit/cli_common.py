"""What every ``lvkit`` subcommand module shares: the ``--home`` option, the client, JSON output."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["client_for", "home_option", "print_json"]

home_option = click.option("--home", envvar="LVKIT_HOME", default=None, type=click.Path(file_okay=False),
                           help="State folder (default $LVKIT_HOME or ~/.lvkit).")


def client_for(home: str | None) -> Any:
    """The in-process client over ``home``."""
    from lvkit.client import client

    return client(home)


def print_json(data: dict[str, Any]) -> None:
    """An API answer as indented JSON on stdout, without its ResponseMetadata."""
    data = {k: v for k, v in data.items() if k != "ResponseMetadata"}
    click.echo(json.dumps(data, indent=2, default=str))
