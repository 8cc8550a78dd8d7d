"""Persistent state: an embedded SQLite database plus one artifact folder per model version.

Layout under the home folder (``$LVKIT_HOME``, default ``~/.lvkit``)::

    lvkit.db                          projects, model versions, datasets and their entries, model
                                      packaging jobs, tags, idempotency tokens
    artifacts/<project>/<version>/    everything a backend needs to load that version
    artifacts/<project>/.tmp-*        work in progress; never read, removed on recovery
    datasets/<project>/<type>/        copies of a dataset's images and masks (:mod:`lvkit.catalog`)

Nothing above this module touches those files directly (but :mod:`lvkit.catalog`, which
owns ``datasets/``). Artifact folders are written in a
temporary folder and renamed into place (``os.replace``), then the database row is updated:
a crash at any point leaves either no version folder or a complete one.

Owners and recovery. TRAINING, STARTING_HOSTING and STOPPING_HOSTING rows, datasets
CREATE_IN_PROGRESS or UPDATE_IN_PROGRESS, packaging jobs CREATED or RUNNING (and ``.tmp-*``
folders and files) belong to the :class:`Store` instance that wrote them, named by a random
owner id that is alive while it holds a file lock (:mod:`lvkit.locks`; never a PID). Opening a
store, and reading a transient row another owner wrote, settles the rows of dead owners
(TRAINING_FAILED, TRAINED, CREATE_FAILED, UPDATE_FAILED_ROLLBACK_COMPLETE, FAILED) with a status
message that says so and removes their temporary files (:mod:`lvkit.store_recovery`); a live
owner's rows are never touched.

Idempotency. :meth:`Store.remember` records a ClientToken in the same transaction as the
writes it guards, under the ``(operation, token)`` primary key: a crash leaves both or
neither, and two processes given the same token at once give one effect and one answer.
Tokens expire :data:`TOKEN_TTL_SECONDS` (8 hours, as the service documented) after first use.

Locking. One re-entrant lock serialises this instance's use of its SQLite connection, and
``BEGIN IMMEDIATE`` serialises writers between processes. The store never calls out while it
holds its lock except to the ``run`` callable of :meth:`remember`, which must only use the
store: callers that need their own locks take them *before* calling into the store (lock
order: caller's locks, then the store's).

Names are checked here too (project names, version numbers), so no caller can make the store
touch a path outside its home.

Disks. A home on a read-only file system opens read-only (``Store.writable`` is False); a
full disk is found at the first write. Either way every read keeps working (Describe*, List*,
and DetectAnomalies on versions that are HOSTED), and every change raises
:class:`~lvkit.errors.StoreNotWritableError` (InternalServerException on the wire) with a
message that says what works and what to do; nothing is half-written (:mod:`lvkit.database`).

Parts. This module owns the home, the connection and its transactions, owners, projects, tags
and tokens; :mod:`lvkit.store_schema` the tables and their migrations; :mod:`lvkit.store_recovery`
the settling of dead owners' work; :mod:`lvkit.store_models` model versions (:class:`ModelRecord`,
re-exported here, and the methods :class:`Store` inherits from
:class:`~lvkit.store_models.ModelVersions`).

Imports ``lvkit.errors``, ``lvkit.shapes`` (:class:`~lvkit.shapes.ModelStatus`), ``lvkit.validation``,
``lvkit.locks``, ``lvkit.database`` and its parts ``lvkit.store_schema``, ``lvkit.store_recovery`` and
``lvkit.store_models`` only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvkit.database import Database
from lvkit.errors import (
    ConflictException,
    LvkitError,
    ResourceNotFoundException,
    StoreNotWritableError,
    ValidationException,
    redact_paths,
)
from lvkit.locks import OwnerLock, ServerLock, is_unwritable, why_unwritable
from lvkit.shapes import ModelStatus
from lvkit.store_models import ModelRecord, ModelVersions
from lvkit.store_recovery import remove_temporaries, settle_rows
from lvkit.store_schema import setup_schema
from lvkit.validation import check_project_name

__all__ = ["TOKEN_TTL_SECONDS", "ModelRecord", "ProjectRecord", "Store", "default_home"]

logger = logging.getLogger("lvkit.store")

#: how long a ClientToken is remembered: the service documented 8 hours
TOKEN_TTL_SECONDS = 8 * 3600


def default_home() -> Path:
    """``$LVKIT_HOME`` or ``~/.lvkit``."""
    return Path(os.environ.get("LVKIT_HOME") or Path.home() / ".lvkit").expanduser()


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    name: str
    arn: str
    created: float


class Store(ModelVersions):
    """SQLite state and atomic artifact folders under ``home``.

    The model-version methods (``get_model``, ``reserve_model``, ``build_model``, ``set_status``,
    ...) are :class:`~lvkit.store_models.ModelVersions`'.

    Parameters
    ----------
    home : path-like, optional
        Defaults to :func:`default_home`.
    region, account : str, optional
        Used in ARNs; fixed at the store's creation (``$AWS_REGION`` or us-east-1;
        ``$LVKIT_ACCOUNT_ID`` or 000000000000).

    Attributes
    ----------
    owner : str
        This instance's random owner id (32 hex digits), recorded on the transient rows and
        temporary folders it writes.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None, *, region: str | None = None,
                 account: str | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "artifacts").mkdir(exist_ok=True)
        except OSError as exc:
            if not (is_unwritable(exc) and (self.home / "lvkit.db").is_file()):
                raise LvkitError(f"cannot create the lvkit home ({exc.strerror})") from exc
        self._owners = OwnerLock(self.home)
        self._server = ServerLock(self.home)
        self.owner = self._owners.id
        defaults = (
            ("region", region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"),
            ("account", account or os.environ.get("LVKIT_ACCOUNT_ID") or "000000000000"),
        )
        self._database = Database(self.home / "lvkit.db", setup=lambda db: setup_schema(db, defaults))
        self._lock = self._database.lock
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        self.region, self.account = meta.get("region", defaults[0][1]), meta.get("account", defaults[1][1])
        try:
            self.recover()
        except StoreNotWritableError as exc:  # a full disk: serve what can be served, say why once
            logger.warning("could not settle interrupted work: %s", exc.message)

    # -- plumbing --------------------------------------------------------------------------
    @property
    def _db(self) -> sqlite3.Connection:
        return self._database.conn

    @property
    def writable(self) -> bool:
        """False when the home opened read-only; changes then raise StoreNotWritableError."""
        return self._database.writable

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._database.tx()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction on the database, for the modules that keep their tables in it
        (:mod:`lvkit.catalog`): ``with store.transaction() as db: db.execute(...)``."""
        return self._database.tx()

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Rows of one query, under the store's lock (the connection is shared between threads)."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def claim(self) -> str:
        """Become a live owner and return the owner id to record on transient rows (and in
        ``.tmp-<owner>-*`` names), which :meth:`recover` settles once this instance is gone."""
        return self._claim()

    def dataset_dir(self, project: str, dataset_type: str) -> Path:
        """Where a dataset's copies of its images and masks live."""
        if dataset_type not in ("train", "test"):
            raise ValidationException(f"DatasetType must be 'train' or 'test', got {str(dataset_type)[:32]!r}")
        return self.home / "datasets" / check_project_name(project) / dataset_type

    def close(self) -> None:
        """Close the database and give up ownership (this instance's transient rows become recoverable)."""
        with self._lock:
            self._database.close()
            self._server.release()
            self._owners.release()

    def project_arn(self, name: str) -> str:
        return f"arn:aws:lookoutvision:{self.region}:{self.account}:project/{name}"

    def model_arn(self, project: str, version: int | str) -> str:
        return f"arn:aws:lookoutvision:{self.region}:{self.account}:model/{project}/{version}"

    def redact(self, text: str) -> str:
        """``text`` fit for a client: the home folder becomes ``$LVKIT_HOME`` and other absolute
        paths keep only their last part (:func:`~lvkit.errors.redact_paths`)."""
        for home in sorted({str(self.home), str(self.home.resolve())}, key=len, reverse=True):
            if len(home) > 1:
                text = text.replace(home.rstrip("/"), "$LVKIT_HOME")
        return redact_paths(text)

    # -- owners ----------------------------------------------------------------------------
    def _claim(self) -> str:
        """Become a live owner (:class:`~lvkit.locks.OwnerLock`); returns the owner id."""
        with self._lock:
            if not self._owners.held and not self.writable:
                raise self._database.not_writable(self._database.read_only_reason)
            try:
                return self._owners.acquire()
            except OSError as exc:
                raise self._database.not_writable(why_unwritable(exc, self.home), exc) if is_unwritable(exc) else exc

    def owner_alive(self, owner: str | None) -> bool:
        """Whether the Store instance ``owner`` still holds its lock (None and unknown ids: no)."""
        return self._owners.alive(owner)

    def recover(self) -> list[tuple[str, int, ModelStatus]]:
        """Settle transient rows of dead owners; remove their temporary folders and lock files.

        Returns the (project, version, new status) rows it changed.
        """
        if not self.writable:
            return []
        with self._tx() as db:
            changed = settle_rows(db, self.owner_alive)
        remove_temporaries(self.home, self.owner_alive)
        self._owners.sweep()
        return changed

    def claim_server(self, where: str = "") -> None:
        """Become the one serving process of this home (:class:`~lvkit.locks.ServerLock`), or
        raise LvkitError naming the other; held until :meth:`close` or the process ends.
        In-process clients (``lvkit.client()``, the CLI) never claim and may run beside it."""
        with self._lock:
            self._server.acquire(where)

    # -- projects --------------------------------------------------------------------------
    def create_project(self, name: str) -> ProjectRecord:
        check_project_name(name)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM projects WHERE name=?", (name,)).fetchone():
                raise ConflictException(f"project {name!r} already exists", resource_id=name,
                                        resource_type="PROJECT", operation_name="CreateProject")
            created = round(time.time(), 3)
            db.execute("INSERT INTO projects (name, created) VALUES (?, ?)", (name, created))
        return ProjectRecord(name, self.project_arn(name), created)

    def get_project(self, name: str) -> ProjectRecord:
        check_project_name(name)
        with self._lock:  # the connection is shared: never read inside another thread's transaction
            row = self._db.execute("SELECT name, created FROM projects WHERE name=?", (name,)).fetchone()
        if row is None:
            raise ResourceNotFoundException(f"project {name!r} does not exist", resource_id=name,
                                            resource_type="PROJECT")
        return ProjectRecord(row["name"], self.project_arn(row["name"]), row["created"])

    def list_projects(self) -> list[ProjectRecord]:
        with self._lock:
            rows = self._db.execute("SELECT name, created FROM projects ORDER BY created, name").fetchall()
        return [ProjectRecord(r["name"], self.project_arn(r["name"]), r["created"]) for r in rows]

    def delete_project(self, name: str) -> ProjectRecord:
        with self._tx() as db:
            project = self.get_project(name)
            if db.execute("SELECT 1 FROM models WHERE project=?", (name,)).fetchone():
                raise ConflictException(f"project {name!r} still has model versions; delete them first",
                                        resource_id=name, resource_type="PROJECT", operation_name="DeleteProject")
            kinds = [r["type"] for r in db.execute("SELECT type FROM datasets WHERE project=? ORDER BY type DESC",
                                                   (name,))]
            if kinds:  # the service's rule: delete the models, then the datasets, then the project
                raise ConflictException(f"project {name!r} still has its {' and '.join(kinds)} dataset"
                                        f"{'s' if len(kinds) > 1 else ''}; delete them first (DeleteDataset)",
                                        resource_id=name, resource_type="PROJECT", operation_name="DeleteProject")
            db.execute("DELETE FROM tags WHERE arn=?", (project.arn,))
            db.execute("DELETE FROM packaging_jobs WHERE project=?", (name,))
            db.execute("DELETE FROM projects WHERE name=?", (name,))
        shutil.rmtree(self.home / "artifacts" / name, ignore_errors=True)
        shutil.rmtree(self.home / "datasets" / name, ignore_errors=True)
        return project

    # -- tags -------------------------------------------------------------------------------
    def set_tags(self, arn: str, tags: dict[str, str]) -> None:
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", [(arn, k, v) for k, v in tags.items()])

    def get_tags(self, arn: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM tags WHERE arn=? ORDER BY key", (arn,)).fetchall()
        return {r["key"]: r["value"] for r in rows}

    def delete_tags(self, arn: str, keys: list[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM tags WHERE arn=? AND key=?", [(arn, k) for k in keys])

    # -- idempotency ---------------------------------------------------------------------------
    def recall(self, operation: str, token: str, request: dict[str, Any], *, resource_id: str = "",
               resource_type: str = "PROJECT") -> dict[str, Any] | None:
        """The stored response of an earlier call with this token and request, or None; the same
        token with another request raises ConflictException (as :meth:`remember` does). Reads only."""
        with self._lock:
            row = self._db.execute(
                "SELECT request, response FROM tokens WHERE operation=? AND token=? AND created >= ?",
                (operation, token, time.time() - TOKEN_TTL_SECONDS),
            ).fetchone()
        if row is None:
            return None
        if row["request"] != json.dumps(request, sort_keys=True):
            raise ConflictException(f"ClientToken {token!r} was already used with a different {operation} request",
                                    resource_id=resource_id, resource_type=resource_type, operation_name=operation)
        return dict(json.loads(row["response"]))

    def remember(self, operation: str, token: str, request: dict[str, Any],
                 run: Callable[[], dict[str, Any]], *, resource_id: str = "",
                 resource_type: str = "PROJECT") -> tuple[dict[str, Any], bool]:
        """Run ``run()`` once per (operation, token) within :data:`TOKEN_TTL_SECONDS`.

        ``run()`` executes inside the same transaction that records the token, so its store
        writes and the token commit together or not at all; it must only use this store
        (no other locks, no threads started: do those after this returns). Returns
        ``(response, fresh)``: ``fresh`` is False when the response is the one stored by an
        earlier call with the same token and request. The same token with a different request
        raises ConflictException naming ``resource_id``/``resource_type`` (our choice: the
        public material says only that the same token and request give the same result). A
        ``run()`` that raises stores nothing and changes nothing.
        """
        key = json.dumps(request, sort_keys=True)
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM tokens WHERE created < ?", (now - TOKEN_TTL_SECONDS,))
            first = self.recall(operation, token, request, resource_id=resource_id, resource_type=resource_type)
            if first is not None:  # read inside this transaction: no other writer can add it meanwhile
                return first, False
            response = run()
            db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?)",
                       (operation, token, key, json.dumps(response), now))
        return response, True
