"""``lvkit serve``: the Lookout for Vision REST API over HTTP.

:func:`create_app` builds the ASGI app over a :class:`~lvkit.service.LookoutVisionService`;
:func:`serve` runs it on uvicorn with real hosting (inference units, queues, batching) and,
with credentials, SigV4 verification. Needs the ``server`` extra (Starlette, uvicorn).
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401  (the clear error below instead of a deep ImportError)
except ImportError as exc:  # pragma: no cover - depends on the environment
    from lvkit.errors import BackendUnavailableError

    raise BackendUnavailableError(
        f"lvkit's HTTP server needs Starlette and uvicorn ({exc}); install them with: pip install 'lvkit[server]'"
    ) from exc

from lvkit.server._serve import check_bind, make_server, serve
from lvkit.server._sigv4 import SigV4Verifier, load_credentials
from lvkit.server.app import create_app, render_error

__all__ = ["check_bind", "create_app", "load_credentials", "make_server", "render_error", "serve", "SigV4Verifier"]
