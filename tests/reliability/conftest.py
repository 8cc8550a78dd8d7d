"""Reliability fixtures: the server suite's hermetic AWS environment, live servers and fake stores."""

from __future__ import annotations

from tests.server.conftest import aws_env, demo_home, live, start_server  # noqa: F401  (fixtures)
