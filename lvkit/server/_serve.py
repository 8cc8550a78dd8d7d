"""Running the app: the loopback rule, the service with real hosting, uvicorn.

Without credentials the server answers anyone who can reach it, so it binds only loopback
addresses (127.0.0.0/8, ::1, ``localhost``) unless ``insecure=True``; with credentials every
request must be SigV4-signed by one of them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvkit.errors import BackendUnavailableError, LvkitError
from lvkit.hosting import HostingOptions
from lvkit.images import DEFAULT_MAX_BYTES
from lvkit.server.app import create_app
from lvkit.server_defaults import BODY_IDLE_TIMEOUT, BODY_TIMEOUT, DEFAULT_HOST, DEFAULT_PORT, MAX_BODY_BYTES_IN_FLIGHT
from lvkit.service import LookoutVisionService

if TYPE_CHECKING:
    import uvicorn

__all__ = ["check_bind", "is_loopback", "make_server", "serve"]

logger = logging.getLogger("lvkit.server")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``).

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0"), is_loopback("example.com")
    (True, True, False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, has_credentials: bool, insecure: bool = False) -> None:
    """Refuse to serve a non-loopback address without credentials unless ``insecure``.

    >>> check_bind("0.0.0.0", has_credentials=False)
    Traceback (most recent call last):
    ...
    lvkit.errors.LvkitError: refusing to serve 0.0.0.0 without credentials: ...
    """
    if not is_loopback(host) and not has_credentials and not insecure:
        raise LvkitError(
            f"refusing to serve {host} without credentials: anyone who reaches it could use it. "
            "Give --credentials FILE (or LVKIT_ACCESS_KEYS) to require SigV4 signatures, bind 127.0.0.1, "
            "or pass --insecure to serve it open anyway"
        )


def make_server(service: LookoutVisionService, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                credentials: Mapping[str, str] | None = None, insecure: bool = False,
                log_level: str = "info", access_log: bool = False, rehost: bool = True,
                max_body_bytes_in_flight: int = MAX_BODY_BYTES_IN_FLIGHT, body_timeout: float = BODY_TIMEOUT,
                body_idle_timeout: float = BODY_IDLE_TIMEOUT) -> uvicorn.Server:
    """A uvicorn server for ``service`` (not started): ``server.run()`` or ``run(sockets=[...])``.

    ``max_body_bytes_in_flight``, ``body_timeout`` and ``body_idle_timeout`` bound request
    bodies server-wide (see :func:`~lvkit.server.create_app`).
    """
    check_bind(host, has_credentials=bool(credentials), insecure=insecure)
    try:
        import uvicorn
    except ImportError as exc:
        raise BackendUnavailableError(f"lvkit serve needs uvicorn ({exc}); pip install 'lvkit[server]'") from exc
    app = create_app(service, credentials=credentials, rehost=rehost,
                     max_body_bytes_in_flight=max_body_bytes_in_flight, body_timeout=body_timeout,
                     body_idle_timeout=body_idle_timeout)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=30)
    return uvicorn.Server(config)


def serve(home: str | os.PathLike[str] | None = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          credentials: Mapping[str, str] | None = None, insecure: bool = False,
          hosting: HostingOptions | None = None, max_bytes: int = DEFAULT_MAX_BYTES, device: str = "auto",
          log_level: str = "info", access_log: bool = False, sock: socket.socket | None = None,
          max_body_bytes_in_flight: int = MAX_BODY_BYTES_IN_FLIGHT, body_timeout: float = BODY_TIMEOUT,
          body_idle_timeout: float = BODY_IDLE_TIMEOUT, max_inference_units: int | None = None,
          local_files: str | os.PathLike[str] | None = None, **service_options: Any) -> None:
    """Serve the store at ``home`` over HTTP until interrupted (what ``lvkit serve`` runs).

    Models HOSTED when the server last stopped are hosted again at startup. On shutdown,
    queued and running requests finish; statuses stay as they are.

    Parameters
    ----------
    home : path-like, optional
        The store (default ``$LVKIT_HOME`` or ``~/.lvkit``).
    host, port : str, int
        Where to listen (default 127.0.0.1:8080); ignored when ``sock`` is given.
    credentials : mapping, optional
        Access key id -> secret; requests must then be SigV4-signed.
    insecure : bool, default False
        Allow a non-loopback ``host`` without credentials.
    hosting : HostingOptions, optional
        Queue and batch sizes of each hosted version.
    max_bytes : int, default 8 MiB
        DetectAnomalies body limit.
    device : str, default "auto"
        Where anomalib models run.
    max_body_bytes_in_flight : int, default 256 MiB
        Request body bytes held at once; a request beyond it gets ThrottlingException (429)
        before its body is read.
    body_timeout, body_idle_timeout : float, default 120 and 15
        Seconds a request body may take in all, and without a byte arriving; a stalled upload
        is answered ValidationException and its connection closed.
    max_inference_units : int, optional
        The most inference units (model workers) of all hosted versions together; default from
        the CPU cores (:func:`~lvkit.hosting.default_max_inference_units`).
    local_files : path-like, optional
        A folder whose files dataset entries may reference (``file://`` or paths); without it
        the server reads S3 references only.
    sock : socket.socket, optional
        A bound socket to serve instead of ``host``/``port``. Create it with
        ``socket.socket(AF_INET, SOCK_STREAM, IPPROTO_TCP)``: asyncio turns on TCP_NODELAY only
        for protocol 6, and without it every response waits ~40 ms for a delayed ACK.
    """
    service = LookoutVisionService(home, device=device, max_bytes=max_bytes, wait=False,
                                   hosting=hosting or HostingOptions(), max_inference_units=max_inference_units,
                                   local_files=Path(local_files).resolve() if local_files is not None else False,
                                   **service_options)
    try:
        service.store.claim_server(f"serving {host}:{port}" if sock is None else "")  # before uvicorn: a clear error
        server = make_server(service, host=host, port=port, credentials=credentials, insecure=insecure,
                             log_level=log_level, access_log=access_log,
                             max_body_bytes_in_flight=max_body_bytes_in_flight, body_timeout=body_timeout,
                             body_idle_timeout=body_idle_timeout)
        server.run(sockets=[sock] if sock is not None else None)
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled, after its graceful shutdown
        logger.info("stopped")
    finally:
        service.close()
