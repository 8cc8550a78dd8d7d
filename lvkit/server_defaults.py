"""What ``lvkit serve`` defaults to: its address and its limits on request bodies.

Plain constants, one home each: :mod:`lvkit.server` enforces them and ``lvkit serve``'s
options default to them. They live outside :mod:`lvkit.server` so that the CLI can show them
without loading Starlette (the ``server`` extra). :mod:`lvkit.server.wire`'s docstring says
what each limit does. The DetectAnomalies body limit is :data:`lvkit.images.DEFAULT_MAX_BYTES`
and the hosting defaults are :class:`lvkit.hosting.HostingOptions`'.

Imports nothing.
"""

from __future__ import annotations

__all__ = ["BODY_IDLE_TIMEOUT", "BODY_TIMEOUT", "BUDGET_RETRY_AFTER", "DEFAULT_HOST", "DEFAULT_PORT",
           "JSON_BODY_LIMIT", "MAX_BODY_BYTES_IN_FLIGHT", "CHANGES_BODY_LIMIT"]

#: the address ``lvkit serve`` binds: loopback (other addresses need credentials or --insecure)
DEFAULT_HOST = "127.0.0.1"
#: the port ``lvkit serve`` listens on
DEFAULT_PORT = 8080
#: body limit of the operations that take JSON
JSON_BODY_LIMIT = 1024 * 1024
#: UpdateDatasetEntries' body limit: its ``Changes`` may be 10 MiB, sent as base64 (4/3) in JSON
CHANGES_BODY_LIMIT = 14 * 1024 * 1024
#: default budget of request body bytes the server holds at once (32 DetectAnomalies bodies of 8 MiB)
MAX_BODY_BYTES_IN_FLIGHT = 256 * 1024 * 1024
#: default seconds a whole body may take to arrive (8 MiB at about 0.5 Mbit/s)
BODY_TIMEOUT = 120.0
#: default seconds a body may go without a byte arriving
BODY_IDLE_TIMEOUT = 15.0
#: seconds a client refused for the body budget is told to wait (``Retry-After``)
BUDGET_RETRY_AFTER = 1
