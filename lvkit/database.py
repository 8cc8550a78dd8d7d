"""One SQLite database file of a home: WAL, write transactions, and what happens when the file
system refuses a write.

A read-only file system opens the file read-only (``mode=ro``, or ``immutable=1`` where WAL's
``-shm`` file cannot be made); a full disk is met at the first write. Either way reads go on and
every write transaction raises :class:`~lvkit.errors.StoreNotWritableError` with a message that
says what works and what to do, and nothing is half-written. A database that opened read-only
because its disk was full tries read-write again (at most every 2 s) on the next write: freeing
space is enough, no restart needed.

Imports ``lvkit.errors`` and ``lvkit.locks`` only.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lvkit.errors import StoreNotWritableError
from lvkit.locks import FULL, READ_ONLY, is_unwritable, why_unwritable

__all__ = ["Database"]

logger = logging.getLogger("lvkit.store")


class Database:
    """A WAL SQLite file with re-entrant write transactions (:meth:`tx`).

    Parameters
    ----------
    path : Path
        The database file; its folder is the home (for messages about its file system).
    setup : callable
        ``setup(connection)``: creates or upgrades the schema, inside the first transaction.

    Attributes
    ----------
    conn : sqlite3.Connection
        Shared by the threads of this process: use it under :attr:`lock` only.
    lock : threading.RLock
        Serialises this process's use of :attr:`conn`; ``BEGIN IMMEDIATE`` serialises processes.
    writable : bool
        False while the file is open read-only.
    """

    def __init__(self, path: Path, *, setup: Callable[[sqlite3.Connection], None]) -> None:
        self.path, self.home = path, path.parent
        self.lock = threading.RLock()
        self._depth = 0  # transaction nesting of the thread holding the lock
        self.writable = True
        self.read_only_reason = ""
        self._reopen_after = 0.0  # monotonic time of the next attempt to open read-write again
        try:
            self.conn = self._open(read_only=False)
            with self.tx() as db:
                setup(db)
        except (sqlite3.OperationalError, StoreNotWritableError) as exc:
            cause = exc.__cause__ if isinstance(exc, StoreNotWritableError) and exc.__cause__ else exc
            if not is_unwritable(cause) or not path.is_file():
                raise
            self.conn = self._open(read_only=True)
            self.writable, self.read_only_reason = False, why_unwritable(cause, self.home)
            logger.warning("the lvkit home opened read-only (%s): reads and DetectAnomalies work, changes fail",
                           self.read_only_reason)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def _open(self, *, read_only: bool) -> sqlite3.Connection:
        path = self.path
        if read_only:
            uri = "file:" + urllib.parse.quote(str(path.resolve()))
            try:  # WAL needs its -shm file; where it cannot be made, read the file as it is
                db = sqlite3.connect(uri + "?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
                db.execute("SELECT 1 FROM meta").fetchall()
            except sqlite3.OperationalError:
                db = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None,
                                     check_same_thread=False)
        else:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            try:
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                db.close()
                raise
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def _reopen(self) -> bool:
        """A home that opened read-only because its disk was full: try read-write again (at most
        every 2 s), so freeing space is enough, no restart needed. With self.lock held."""
        if self.read_only_reason == READ_ONLY or time.monotonic() < self._reopen_after:
            return False
        self._reopen_after = time.monotonic() + 2.0
        try:
            db = self._open(read_only=False)
        except sqlite3.OperationalError:
            return False
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            db.close()
            return False
        self.conn.close()
        self.conn, self.writable, self.read_only_reason = db, True, ""
        logger.warning("the lvkit home is writable again")
        return True

    def not_writable(self, why: str, cause: BaseException | None = None) -> StoreNotWritableError:
        error = StoreNotWritableError(
            f"lvkit cannot save this change: {why}. Reads (Describe*, List*) and DetectAnomalies on HOSTED "
            "models still work; creating, deleting, starting, stopping, tagging and training need "
            + ("free space on the disk" if why == FULL else "a writable LVKIT_HOME"),
            retry_after_seconds=None if why == READ_ONLY else 60)
        error.__cause__ = cause
        return error

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested use (same thread) joins the outer one."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            if not self.writable and not self._reopen():
                raise self.not_writable(self.read_only_reason)
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self.not_writable(why_unwritable(exc, self.home), exc) if is_unwritable(exc) else exc
            self._depth = 1
            try:
                yield self.conn
            except BaseException as exc:
                self._depth = 0
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if is_unwritable(exc) and not isinstance(exc, StoreNotWritableError):
                    raise self.not_writable(why_unwritable(exc, self.home), exc) from exc
                raise
            self._depth = 0
            try:
                self.conn.execute("COMMIT")
            except BaseException as exc:  # e.g. a full disk: leave no transaction open behind us
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if is_unwritable(exc):
                    raise self.not_writable(why_unwritable(exc, self.home), exc) from exc
                raise
