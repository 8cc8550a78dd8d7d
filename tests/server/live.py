"""A live ``lvkit serve`` for tests: uvicorn in a thread on 127.0.0.1 and a free port.

Used by ``tests/server/conftest.py`` and by the ``lvkit_server`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from lvkit.hosting import HostingOptions
from lvkit.server import make_server
from lvkit.service import LookoutVisionService

__all__ = ["LiveServer", "serving_service"]


class LiveServer:
    """``lvkit serve`` (uvicorn) for ``service`` in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, service: LookoutVisionService, **options: Any) -> None:
        self.service = service
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only for proto 6
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options.setdefault("log_level", "warning")
        self.server = make_server(service, host="127.0.0.1", port=self.port, **options)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name=f"lvkit-test-server-{self.port}")
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.service.close()


def serving_service(home: Path, **options: Any) -> LookoutVisionService:
    """A service as ``lvkit serve`` builds it: asynchronous hosting, worker pools."""
    options.setdefault("hosting", HostingOptions(max_queue=16, max_batch=8, idle_timeout=0.5))
    return LookoutVisionService(home, wait=False, **options)
