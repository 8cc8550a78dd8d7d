"""``lvkit serve`` in a child process: started, waited for, stopped; for notebooks, scripts and tests.

:func:`serving` runs ``python -m lvkit.server`` (the ``lvkit serve`` command) on a loopback
port, waits until it answers HTTP and until the versions it hosts again at startup have left
``STARTING_HOSTING``, and returns a :class:`BackgroundServer`: its ``url``, ``client()`` (a
ready boto3 ``lookoutvision`` client) and ``stop()``. Used as a context manager it stops the
server on exit; an ``atexit`` hook stops one that was never stopped (a notebook whose cell failed).

Choices made here:

* The server's stdout and stderr (the ``lvkit serve`` banner, uvicorn's log) are appended to a
  log file, ``<home>/serve.log`` by default, never to the caller's stderr: in Jupyter a child
  writing to the kernel's stderr shows as a red box. A failed start raises
  :class:`~lvkit.errors.LvkitError` with the tail of this start's log.
* A port asked for explicitly is checked before the child starts, so that a port held by
  another server is a clear error, not a readiness probe answered by the wrong server.
  ``port=0`` picks a free port (closed again before the child binds it: another program could
  take it in between, which then fails the start with the log tail).
* Stopping sends SIGINT, the signal ``lvkit serve`` shuts down on gracefully (queued requests
  finish, the service closes, exit status 0); after ``timeout`` seconds the process is killed.
  On Windows, where SIGINT cannot be sent to a child, it is terminated.

This module imports the standard library, :mod:`lvkit.errors` and :mod:`lvkit.store`;
boto3 (through :func:`lvkit.boto3_client`) only when a client is asked for. The ASGI server
runs in the child, never here.
"""

from __future__ import annotations

import atexit
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from lvkit.errors import LvkitError
from lvkit.store import default_home

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["BackgroundServer", "serving"]

#: what a server still starting says in DescribeModel: :func:`serving` waits until no version says it
_STARTING = "STARTING_HOSTING"


def _url(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _free_port(host: str) -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port(host: str, port: int) -> None:
    """LvkitError if ``host:port`` cannot be bound (another server listens there)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise LvkitError(f"cannot serve on {_url(host, port)}: the port is in use or not available "
                             f"({exc}); choose another port, or port=0 for a free one") from exc


def _flags(options: Mapping[str, Any]) -> list[str]:
    """``lvkit serve`` options from keywords: ``max_batch=4`` -> ``--max-batch 4``, ``True`` -> the flag."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not None and value is not False:
            args += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return args


class BackgroundServer:
    """A running ``lvkit serve`` child process; made by :func:`serving`.

    Attributes
    ----------
    url : str
        The endpoint, ``http://127.0.0.1:<port>``: boto3's ``endpoint_url``.
    host, port : str, int
        Where it listens.
    home : Path
        The store it serves.
    log_path : Path
        The file its output is appended to.
    process : subprocess.Popen
        The child process.
    """

    def __init__(self, process: subprocess.Popen[bytes], *, host: str, port: int, home: Path, log_path: Path,
                 log_file: IO[bytes], log_offset: int) -> None:
        self.process = process
        self.host, self.port, self.home = host, port, home
        self.url = _url(host, port)
        self.log_path = log_path
        self._log_file = log_file
        self._log_offset = log_offset
        atexit.register(self._stop_at_exit)

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.process.returncode}"
        return f"<BackgroundServer {self.url} pid {self.process.pid} {state}; log {self.log_path}>"

    @property
    def running(self) -> bool:
        """Whether the child process is still alive."""
        return self.process.poll() is None

    def client(self, **kwargs: Any) -> Any:
        """A boto3 ``lookoutvision`` client for this server (:func:`lvkit.boto3_client`).

        Keyword arguments go to ``boto3.Session.client`` (``aws_access_key_id``, ``config``, ...).
        """
        from lvkit.boto import boto3_client

        return boto3_client(self.url, **kwargs)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines this server wrote to its log (this start only)."""
        if not self._log_file.closed:
            self._log_file.flush()
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(log {self.log_path} unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def _failed(self, what: str) -> LvkitError:
        tail = self.log_tail()
        return LvkitError(f"lvkit serve on {self.url} {what}; the end of its log ({self.log_path}):\n"
                          + (tail or "(nothing)"))

    def wait_answering(self, timeout: float = 120.0) -> None:
        """Return once the server answers HTTP; LvkitError (with the log tail) if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise self._failed(f"exited with status {self.process.returncode} before it answered")
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            try:
                conn.request("GET", "/")
                conn.getresponse().read()
                return
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise self._failed(f"did not answer within {timeout:g} s") from None
                time.sleep(0.05)
            finally:
                conn.close()

    def wait_hosted(self, timeout: float = 600.0, **client_options: Any) -> dict[str, str]:
        """Wait until no model version is ``STARTING_HOSTING``; returns ``"project/version"`` -> status.

        At startup the server hosts again every version that was ``HOSTED`` when the store's
        last server stopped; this waits for those (and any other start in progress).
        ``client_options`` go to :meth:`client` (credentials when the server checks SigV4).

        Raises
        ------
        LvkitError
            If a version is still starting after ``timeout`` seconds.
        """
        lv = self.client(**client_options)
        deadline = time.monotonic() + timeout
        while True:
            statuses: dict[str, str] = {}
            for page in lv.get_paginator("list_projects").paginate():
                for project in page["Projects"]:
                    name = project["ProjectName"]
                    for models in lv.get_paginator("list_models").paginate(ProjectName=name):
                        statuses |= {f"{name}/{m['ModelVersion']}": m["Status"] for m in models["Models"]}
            starting = sorted(k for k, s in statuses.items() if s == _STARTING)
            if not starting:
                return statuses
            if time.monotonic() > deadline:
                raise self._failed(f"still starting {', '.join(starting)} after {timeout:g} s")
            time.sleep(0.1)

    def stop(self, timeout: float = 60.0) -> int | None:
        """Stop the server gracefully (SIGINT), killing it after ``timeout`` seconds; returns its exit status.

        Idempotent: a server that has exited already is only reaped.
        """
        if self.running:
            if os.name == "nt":  # pragma: no cover - no SIGINT for a child on Windows
                self.process.terminate()
            else:
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        else:
            self.process.wait()
        self._log_file.close()
        atexit.unregister(self._stop_at_exit)
        return self.process.returncode

    def _stop_at_exit(self) -> None:
        self.stop(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serving(home: str | os.PathLike[str] | None = None, *, port: int = 0, host: str = "127.0.0.1",
            device: str = "auto", log_level: str = "warning", log: str | os.PathLike[str] | None = None,
            wait_hosted: bool = True, timeout: float = 120.0, env: Mapping[str, str] | None = None,
            args: Sequence[str] = (), **options: Any) -> BackgroundServer:
    """Start ``lvkit serve`` in a child process and return once it answers.

    Parameters
    ----------
    home : path-like, optional
        The store to serve; default ``$LVKIT_HOME`` or ``~/.lvkit``.
    port : int, default 0
        The port; 0 picks a free one. A port in use is an error before anything starts.
    host : str, default "127.0.0.1"
        The address to bind (a non-loopback one needs ``credentials=`` or ``insecure=True``).
    device : str, default "auto"
        Where anomalib models run (``--device``).
    log_level : str, default "warning"
        uvicorn's log level (``--log-level``).
    log : path-like, optional
        The log file the server's output is appended to; default ``<home>/serve.log`` (a
        temporary file when the home is not writable).
    wait_hosted : bool, default True
        Also wait until the versions it hosts again at startup are ``HOSTED`` (see
        :meth:`BackgroundServer.wait_hosted`).
    timeout : float, default 120
        Seconds to wait for the server to answer.
    env : mapping, optional
        The child's environment (default this process's).
    args : sequence of str
        More ``lvkit serve`` arguments, as on the command line.
    **options
        ``lvkit serve`` options by name: ``max_batch=4`` is ``--max-batch 4``, ``credentials=PATH``
        is ``--credentials PATH``, ``insecure=True`` is ``--insecure``.

    Returns
    -------
    BackgroundServer
        Running; a context manager that stops it on exit.

    Raises
    ------
    LvkitError
        If the port is in use, or the server exits or does not answer in time; the message
        ends with the tail of its log.

    Examples
    --------
    >>> import tempfile, lvkit
    >>> with lvkit.serving(tempfile.mkdtemp()) as server:        # doctest: +SKIP
    ...     server.client().list_projects()["Projects"]
    []
    >>> server = lvkit.serving()      # in a notebook: stop it in a later cell  # doctest: +SKIP
    >>> server.stop()                                            # doctest: +SKIP
    0
    """
    home_path = Path(home).expanduser() if home is not None else default_home()
    if port:
        _check_port(host, port)
    else:
        port = _free_port(host)
    log_path, log_file = _open_log(home_path, log)
    log_offset = log_file.tell()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    log_file.write(f"--- lvkit serve on {_url(host, port)}, started {started}\n".encode())
    log_file.flush()
    command = [sys.executable, "-m", "lvkit.server", "--home", str(home_path), "--host", host, "--port", str(port),
               "--device", device, "--log-level", log_level, *_flags(options), *args]
    child_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=child_env, start_new_session=True)
    except BaseException:
        log_file.close()
        raise
    server = BackgroundServer(process, host=host, port=port, home=home_path, log_path=log_path, log_file=log_file,
                              log_offset=log_offset)
    try:
        server.wait_answering(timeout)
        if wait_hosted:
            server.wait_hosted()
    except BaseException:
        server.stop(timeout=10)
        raise
    return server


def _open_log(home: Path, log: str | os.PathLike[str] | None) -> tuple[Path, IO[bytes]]:
    """The log file, opened for appending: ``log``, else ``<home>/serve.log``, else a temporary file."""
    if log is not None:
        path = Path(log)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, open(path, "ab")
    try:
        home.mkdir(parents=True, exist_ok=True)
        return home / "serve.log", open(home / "serve.log", "ab")
    except OSError:  # a read-only home: the log goes to a temporary file
        import tempfile

        fd, name = tempfile.mkstemp(prefix="lvkit-serve-", suffix=".log")
        return Path(name), os.fdopen(fd, "ab")
