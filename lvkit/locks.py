"""The files of a home besides its database: owner locks, the one-server lock, and what a
refused write means.

Owners. Work in progress (TRAINING, STARTING_HOSTING, STOPPING_HOSTING rows, ``.tmp-*``
folders) names the :class:`~lvkit.store.Store` instance that started it by a random owner id
(``uuid4``), never a PID: PIDs repeat (a container's server is PID 1 after every restart) and
a process in another PID namespace cannot see ours. An owner is alive exactly while it holds an
exclusive ``flock`` on ``owners/<id>.lock``; the kernel drops the lock when the process ends,
however it ends (kill -9 included), and the lock is seen across PID namespaces on one host.
Checking takes no time and no timeout, unlike a heartbeat. Not supported: a home shared over a
network file system whose ``flock`` is not coherent between hosts.

One server per home. ``lvkit serve`` hosts models, re-hosts HOSTED versions at start and owns
their hosting states, so two servers over one home would undo each other's work:
:class:`ServerLock` (``serve.lock``) lets one in and tells the second who holds it.

Refused writes. :func:`is_unwritable` and :func:`why_unwritable` tell a read-only file system
or a full disk (which the store reports as StoreNotWritableError) from a bug.

Imports ``lvkit.errors`` only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import sqlite3
import time
import uuid
from pathlib import Path

from lvkit.errors import LvkitError

__all__ = ["FULL", "READ_ONLY", "OwnerLock", "ServerLock", "is_unwritable", "why_unwritable"]

logger = logging.getLogger("lvkit.store")

FULL, READ_ONLY = "its disk is full", "its file system is read-only"
#: errno values that mean "this file system will not take a change"
_UNWRITABLE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}
#: SQLite's messages for the same
_UNWRITABLE_SQLITE = ("readonly database", "disk is full", "unable to open database file", "disk i/o error",
                      "read-only file system")
_OWNER = re.compile(r"[0-9a-f]{32}")


def is_unwritable(exc: BaseException) -> bool:
    """Whether ``exc`` says the file system is read-only or full (not a bug, not bad input)."""
    if isinstance(exc, OSError) and exc.errno in _UNWRITABLE_ERRNOS:
        return True
    return isinstance(exc, sqlite3.OperationalError) and any(m in str(exc).lower() for m in _UNWRITABLE_SQLITE)


def why_unwritable(exc: BaseException, home: Path) -> str:
    """:data:`FULL`, :data:`READ_ONLY` or another reason; SQLite often says only "unable to open
    database file", so the file system is asked."""
    if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or "full" in str(exc).lower():
        return FULL
    if (isinstance(exc, OSError) and exc.errno == errno.EROFS) or "read-only" in str(exc).lower():
        return READ_ONLY
    try:
        fs = os.statvfs(home)
    except OSError:
        return READ_ONLY
    if fs.f_flag & os.ST_RDONLY:
        return READ_ONLY
    what = getattr(exc, "strerror", None) or type(exc).__name__  # never the path: this reaches clients
    return FULL if fs.f_bavail * fs.f_frsize < 1024 * 1024 else f"its file system refused the write ({what})"


def _contended(exc: OSError) -> bool:
    return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)


class OwnerLock:
    """One Store instance's owner id, and the lock that says it is alive.

    Examples
    --------
    >>> import tempfile
    >>> home = Path(tempfile.mkdtemp())
    >>> a, b = OwnerLock(home), OwnerLock(home)
    >>> b.alive(a.id), a.acquire() == a.id, b.alive(a.id)
    (False, True, True)
    >>> a.release(); b.alive(a.id)
    False
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.id = uuid.uuid4().hex
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> str:
        """Hold ``owners/<id>.lock`` (idempotent); OSError when the home refuses the file."""
        if self._fd is None:
            folder = self.home / "owners"
            folder.mkdir(exist_ok=True)
            # locked under a name nobody checks, then renamed into place: whoever finds
            # <id>.lock finds it locked (no window in which a checker could take it and call us dead)
            staging = folder / f".{self.id}.staging"
            fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never contended
                with contextlib.suppress(OSError):  # for people reading the folder; a full disk may refuse it
                    os.write(fd, f"pid {os.getpid()} since {time.time():.3f}\n".encode())
                os.rename(staging, folder / f"{self.id}.lock")
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    staging.unlink()
                raise
            self._fd = fd
        return self.id

    def release(self) -> None:
        """Give the lock up: this owner's work in progress becomes recoverable."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(OSError):
                (self.home / "owners" / f"{self.id}.lock").unlink(missing_ok=True)

    def alive(self, owner: str | None) -> bool:
        """Whether ``owner`` still holds its lock (None, malformed and unknown ids: no)."""
        if owner is None or not _OWNER.fullmatch(owner):
            return False
        if owner == self.id:
            return self.held
        try:
            fd = os.open(self.home / "owners" / f"{owner}.lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if _contended(exc):
                return True
            raise
        finally:
            os.close(fd)  # releases the lock if we took it
        return False

    def sweep(self) -> None:
        """Remove the lock files of owners that are gone (and staging files a crash left)."""
        for lock in (self.home / "owners").glob("*.lock"):
            if lock.stem != self.id and not self.alive(lock.stem):
                with contextlib.suppress(OSError):
                    lock.unlink(missing_ok=True)
        for staging in (self.home / "owners").glob(".*.staging"):
            with contextlib.suppress(OSError):  # a minute old: its owner died between open and rename
                if time.time() - staging.stat().st_mtime > 60:
                    staging.unlink()


class ServerLock:
    """``serve.lock``: at most one ``lvkit serve`` per home, held until :meth:`release` or exit."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._fd: int | None = None

    def acquire(self, where: str = "") -> None:
        """Take the lock, or raise LvkitError naming the process that holds it."""
        if self._fd is not None:
            return
        path = self.home / "serve.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if not is_unwritable(exc):
                raise
            try:  # a read-only home: a read-only descriptor still takes the lock
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                logger.warning("serving a read-only home without the one-server lock: %s", exc.strerror)
                self._fd = -1  # taken as far as it can be: do not warn again
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            other = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if not _contended(exc):
                raise
            raise LvkitError(f"another lvkit server already serves this home ({other}); stop it first, "
                             "or give this one another --home / LVKIT_HOME") from None
        with contextlib.suppress(OSError):  # who holds it, for the next one's message
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}{', ' + where if where else ''}, since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None and self._fd >= 0:
            os.close(self._fd)
        self._fd = None
