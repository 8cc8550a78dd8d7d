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
message that says so and removes their temporary files; a live owner's rows are never touched.

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

Imports ``lvkit.errors``, ``lvkit.shapes`` (:class:`~lvkit.shapes.ModelStatus`), ``lvkit.validation``,
``lvkit.locks`` and ``lvkit.database`` only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import time
import uuid
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
from lvkit.validation import check_project_name

__all__ = ["TOKEN_TTL_SECONDS", "ModelRecord", "ProjectRecord", "Store", "default_home"]

logger = logging.getLogger("lvkit.store")

#: how long a ClientToken is remembered: the service documented 8 hours
TOKEN_TTL_SECONDS = 8 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL,
    next_version INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS models (
    project TEXT NOT NULL REFERENCES projects(name),
    version INTEGER NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT NOT NULL DEFAULT '',
    description TEXT,
    backend TEXT NOT NULL,
    performance TEXT,
    evaluation_end REAL,
    min_units INTEGER,
    max_units INTEGER,
    owner_pid INTEGER,
    calibration TEXT,
    owner TEXT,
    kms_key_id TEXT,
    output TEXT,
    PRIMARY KEY (project, version)
);
CREATE TABLE IF NOT EXISTS tags (
    arn TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (arn, key)
);
CREATE TABLE IF NOT EXISTS datasets (
    project TEXT NOT NULL REFERENCES projects(name),
    type TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT NOT NULL DEFAULT '',
    owner TEXT,
    PRIMARY KEY (project, type)
);
CREATE TABLE IF NOT EXISTS entries (
    project TEXT NOT NULL, type TEXT NOT NULL, source_ref TEXT NOT NULL, line TEXT NOT NULL,
    created REAL NOT NULL, label INTEGER, image TEXT NOT NULL, mask TEXT, seq INTEGER NOT NULL,
    PRIMARY KEY (project, type, source_ref)
);
CREATE INDEX IF NOT EXISTS entries_order ON entries (project, type, seq);
CREATE TABLE IF NOT EXISTS packaging_jobs (
    project TEXT NOT NULL REFERENCES projects(name),
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT NOT NULL DEFAULT '',
    description TEXT,
    configuration TEXT NOT NULL,
    output TEXT,
    owner TEXT,
    PRIMARY KEY (project, name)
);
CREATE TABLE IF NOT EXISTS tokens (
    operation TEXT NOT NULL, token TEXT NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (operation, token)
);
"""

#: statuses owned by a live Store instance while they last, and what they settle to without it
_TRANSIENT = {ModelStatus.TRAINING: ModelStatus.TRAINING_FAILED, ModelStatus.STARTING_HOSTING: ModelStatus.TRAINED,
              ModelStatus.STOPPING_HOSTING: ModelStatus.TRAINED}
_INTERRUPTED = {ModelStatus.TRAINING: "training", ModelStatus.STARTING_HOSTING: "starting",
                ModelStatus.STOPPING_HOSTING: "stopping"}
#: dataset statuses owned by a live Store instance, what they settle to without it, and why
_DATASET_TRANSIENT = {
    "CREATE_IN_PROGRESS": ("CREATE_FAILED", "creating the dataset was interrupted (the process that owned it "
                           "ended); delete the dataset and create it again"),
    "UPDATE_IN_PROGRESS": ("UPDATE_FAILED_ROLLBACK_COMPLETE", "the update was interrupted (the process that owned "
                           "it ended); the entries are as they were before it"),
}
_TMP = re.compile(r"^\.tmp-([0-9a-f]{32})-")


def default_home() -> Path:
    """``$LVKIT_HOME`` or ``~/.lvkit``."""
    return Path(os.environ.get("LVKIT_HOME") or Path.home() / ".lvkit").expanduser()


def _version_number(version: object) -> int:
    """A stored version number: a positive int, or its decimal ASCII spelling without leading zeros."""
    if isinstance(version, int) and not isinstance(version, bool) and 1 <= version < 10**10:
        return version
    if isinstance(version, str) and re.fullmatch(r"[1-9][0-9]{0,9}", version, re.ASCII):
        return int(version)
    raise ValidationException(f"ModelVersion {str(version)[:32]!r} is not a version number (1, 2, ...)")


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    name: str
    arn: str
    created: float


@dataclass(frozen=True, slots=True)
class ModelRecord:
    project: str
    version: int
    arn: str
    created: float
    status: ModelStatus
    status_message: str
    description: str | None
    backend: str
    performance: dict[str, float] | None
    evaluation_end: float | None
    min_units: int | None
    max_units: int | None
    calibration: dict[str, Any] | None
    kms_key_id: str | None = None
    #: CreateModel's OutputConfig and, once trained, the EvaluationManifest/EvaluationResult locations
    output: dict[str, Any] | None = None


class Store:
    """SQLite state and atomic artifact folders under ``home``.

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

        def setup(db: sqlite3.Connection) -> None:
            for stmt in _SCHEMA.strip().split(";\n"):
                if stmt.strip():
                    db.execute(stmt)
            columns = {r["name"] for r in db.execute("PRAGMA table_info(models)")}
            for column in ("owner", "kms_key_id", "output"):  # homes written before these columns
                if column not in columns:
                    db.execute(f"ALTER TABLE models ADD COLUMN {column} TEXT")
            db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", defaults)

        self._database = Database(self.home / "lvkit.db", setup=setup)
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
        changed: list[tuple[str, int, ModelStatus]] = []
        if not self.writable:
            return changed
        with self._tx() as db:
            rows = db.execute(
                "SELECT project, version, status, owner FROM models WHERE status IN (?, ?, ?)",
                tuple(s.value for s in _TRANSIENT),
            ).fetchall()
            for row in rows:
                if self.owner_alive(row["owner"]):
                    continue
                new = _TRANSIENT[ModelStatus(row["status"])]
                db.execute(
                    "UPDATE models SET status=?, status_message=?, owner=NULL, owner_pid=NULL"
                    " WHERE project=? AND version=? AND status=?",
                    (new.value, f"{_INTERRUPTED[row['status']]} was interrupted (the process that owned it ended)",
                     row["project"], row["version"], row["status"]),
                )
                changed.append((row["project"], row["version"], new))
            for row in db.execute("SELECT project, type, status, owner FROM datasets WHERE status IN (?, ?)",
                                  tuple(_DATASET_TRANSIENT)).fetchall():
                if not self.owner_alive(row["owner"]):
                    status, message = _DATASET_TRANSIENT[row["status"]]
                    db.execute("UPDATE datasets SET status=?, status_message=?, owner=NULL, updated=?"
                               " WHERE project=? AND type=? AND status=?",
                               (status, message, round(time.time(), 3), row["project"], row["type"], row["status"]))
            for row in db.execute("SELECT project, name, status, owner FROM packaging_jobs WHERE status IN (?, ?)",
                                  ("CREATED", "RUNNING")).fetchall():
                if not self.owner_alive(row["owner"]):
                    db.execute("UPDATE packaging_jobs SET status='FAILED', status_message=?, owner=NULL, updated=?"
                               " WHERE project=? AND name=? AND status=?",
                               ("the packaging job was interrupted (the process that owned it ended); start it "
                                "again", round(time.time(), 3), row["project"], row["name"], row["status"]))
        for tmp in [*(self.home / "artifacts").glob("*/.tmp-*"), *(self.home / "datasets").glob("*/*/.tmp-*")]:
            match = _TMP.match(tmp.name)
            if match is None or not self.owner_alive(match.group(1)):
                shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
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

    # -- model versions --------------------------------------------------------------------
    def _model(self, row: sqlite3.Row) -> ModelRecord:
        return ModelRecord(
            project=row["project"], version=row["version"], arn=self.model_arn(row["project"], row["version"]),
            created=row["created"], status=ModelStatus(row["status"]), status_message=row["status_message"],
            description=row["description"], backend=row["backend"],
            performance=json.loads(row["performance"]) if row["performance"] else None,
            evaluation_end=row["evaluation_end"], min_units=row["min_units"], max_units=row["max_units"],
            calibration=json.loads(row["calibration"]) if row["calibration"] else None,
            kms_key_id=row["kms_key_id"], output=json.loads(row["output"]) if row["output"] else None,
        )

    def _orphaned(self, rows: list[sqlite3.Row]) -> bool:
        """Whether any of ``rows`` is transient and owned by a dead owner (so recover() would change it)."""
        return self.writable and any(
            r["status"] in _TRANSIENT and r["owner"] != self.owner and not self.owner_alive(r["owner"]) for r in rows)

    def list_models(self, project: str) -> list[ModelRecord]:
        self.get_project(project)
        for attempt in range(2):
            with self._lock:
                rows = self._db.execute("SELECT * FROM models WHERE project=? ORDER BY version",
                                        (project,)).fetchall()
            if attempt or not self._orphaned(rows):
                break
            with contextlib.suppress(StoreNotWritableError):  # a full disk: show it as it is, reads work
                self.recover()
        return [self._model(r) for r in rows]

    def get_model(self, project: str, version: str | int) -> ModelRecord:
        """The model version; ``"latest"`` resolves to the newest version of the project."""
        self.get_project(project)
        number = None if version == "latest" else _version_number(version)
        for attempt in range(2):
            with self._lock:
                if number is None:
                    row = self._db.execute("SELECT * FROM models WHERE project=? ORDER BY version DESC LIMIT 1",
                                           (project,)).fetchone()
                else:
                    row = self._db.execute("SELECT * FROM models WHERE project=? AND version=?",
                                           (project, number)).fetchone()
            if attempt or row is None or not self._orphaned([row]):
                break
            with contextlib.suppress(StoreNotWritableError):  # a full disk: show it as it is, reads work
                self.recover()  # its owner died: settle it before anyone acts on a stale status
        if row is None:
            what = "has no model versions" if version == "latest" else f"has no model version {version}"
            raise ResourceNotFoundException(f"project {project!r} {what}",
                                            resource_id=f"{project}/{version}", resource_type="MODEL")
        return self._model(row)

    def artifact_dir(self, project: str, version: int) -> Path:
        return self.home / "artifacts" / check_project_name(project) / str(_version_number(version))

    def add_model(
        self,
        project: str,
        *,
        backend: str,
        build: Callable[[Path], dict[str, float] | None],
        description: str | None = None,
    ) -> ModelRecord:
        """Create the next model version by running ``build(tmp_dir)``; atomic.

        The row is TRAINING while ``build`` writes the artifacts into a temporary folder; on
        success the folder is renamed into place and the row becomes TRAINED with the
        performance ``build`` returned; on failure the folder is removed and the row becomes
        TRAINING_FAILED with the error as its status message (the error is re-raised).
        :meth:`reserve_model` then :meth:`build_model` do the same in two steps (CreateModel
        answers between them).
        """
        version = self.reserve_model(project, backend=backend, description=description)
        return self.build_model(project, version, build)

    def reserve_model(self, project: str, *, backend: str, description: str | None = None,
                      kms_key_id: str | None = None, output: dict[str, Any] | None = None,
                      before: Callable[[sqlite3.Connection, int], None] | None = None) -> int:
        """Add the next version, TRAINING and owned by this instance; returns its number.

        ``before(db, version)`` runs in the same transaction (e.g. to record tags or a token).
        """
        owner = self._claim()
        with self._tx() as db:
            self.get_project(project)
            version = int(db.execute("SELECT next_version FROM projects WHERE name=?", (project,)).fetchone()[0])
            db.execute("UPDATE projects SET next_version=? WHERE name=?", (version + 1, project))
            db.execute(
                "INSERT INTO models (project, version, created, status, status_message, description, backend,"
                " owner, kms_key_id, output) VALUES (?, ?, ?, ?, 'training in progress', ?, ?, ?, ?, ?)",
                (project, version, round(time.time(), 3), ModelStatus.TRAINING.value, description, backend, owner,
                 kms_key_id, json.dumps(output) if output else None),
            )
            if before is not None:
                before(db, version)
        return version

    def build_model(self, project: str, version: int, build: Callable[[Path], dict[str, float] | None], *,
                    output: dict[str, Any] | None = None) -> ModelRecord:
        """Run ``build(tmp_dir)`` for a reserved version and settle it (see :meth:`add_model`).

        ``output`` (the training output's locations, :mod:`lvkit.training_jobs`), when not empty
        once ``build`` has run (it may fill it), replaces the reserved one in the transaction
        that makes the version TRAINED.
        """
        final = self.artifact_dir(project, version)
        tmp = final.parent / f".tmp-{self.owner}-{uuid.uuid4().hex[:8]}"
        try:
            self._claim()
            tmp.mkdir(parents=True)
            performance = build(tmp)
            if performance is not None and not isinstance(performance, dict):
                raise TypeError(f"build() must return the performance dict or None, got {type(performance).__name__}")
            if final.exists():  # left over by a deleted version of the same number: never reused
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                self.set_status(project, version, ModelStatus.TRAINING_FAILED,
                                self.redact(f"training failed: {exc}")[:1000])
            except StoreNotWritableError:  # a full disk: the row stays ours and is settled once we are gone
                logger.warning("could not record that %s/%s failed: the store cannot be written", project, version)
            raise
        with self._tx() as db:
            db.execute(
                "UPDATE models SET status=?, status_message='training completed', performance=?,"
                " evaluation_end=?, owner=NULL, owner_pid=NULL WHERE project=? AND version=?",
                (ModelStatus.TRAINED.value, json.dumps(performance) if performance else None, round(time.time(), 3),
                 project, version),
            )
            if output:
                db.execute("UPDATE models SET output=? WHERE project=? AND version=?",
                           (json.dumps(output), project, version))
        return self.get_model(project, version)

    def delete_model(self, project: str, version: str | int) -> ModelRecord:
        """Delete a model version that is not hosted or in a transition: its row, tags and folder.

        ConflictException while it is HOSTED or in a transient status (TRAINING,
        STARTING_HOSTING, STOPPING_HOSTING). (The API's DeleteModel builds on this; lvkit's CLI offers it as
        ``lvkit models delete`` so a failed version never blocks DeleteProject.)
        """
        with self._tx() as db:
            m = self.get_model(project, version)
            if m.status in _TRANSIENT or m.status == ModelStatus.HOSTED:
                raise ConflictException(f"model {m.project}/{m.version} cannot be deleted while its status is "
                                        f"{m.status}; stop it first", resource_id=m.arn, resource_type="MODEL",
                                        operation_name="DeleteModel")
            db.execute("DELETE FROM tags WHERE arn=?", (m.arn,))
            db.execute("DELETE FROM models WHERE project=? AND version=?", (m.project, m.version))
        shutil.rmtree(self.artifact_dir(m.project, m.version), ignore_errors=True)
        return m

    def set_status(self, project: str, version: int, status: ModelStatus, message: str, *,
                   expect: tuple[ModelStatus, ...] | None = None, **fields: Any) -> bool:
        """Set a model's status (and ``min_units``/``max_units``/``calibration``).

        With ``expect``, only when the current status is one of those (returns False otherwise).
        Transient statuses record this instance as the owner.
        """
        owner = self._claim() if status in _TRANSIENT else None
        sets = ["status=?", "status_message=?", "owner=?", "owner_pid=NULL"]
        args: list[Any] = [ModelStatus(status).value, message, owner]
        for key, value in fields.items():
            if key not in ("min_units", "max_units", "calibration"):
                raise TypeError(f"unknown model field {key!r}")
            sets.append(f"{key}=?")
            args.append(json.dumps(value) if key == "calibration" and value is not None else value)
        where = "project=? AND version=?"
        args += [check_project_name(project), _version_number(version)]
        if expect:
            where += f" AND status IN ({','.join('?' * len(expect))})"
            args += [ModelStatus(s).value for s in expect]
        with self._tx() as db:
            cur = db.execute(f"UPDATE models SET {', '.join(sets)} WHERE {where}", args)
        return cur.rowcount == 1

    def set_calibration(self, project: str, version: int, calibration: dict[str, Any] | None, *,
                        performance: dict[str, float] | None) -> None:
        """Attach (a dict) or detach (None) a recalibrator to a model version, with the
        Performance at the operating point that results (one transaction)."""
        with self._tx() as db:
            db.execute("UPDATE models SET calibration=?, performance=? WHERE project=? AND version=?",
                       (json.dumps(calibration) if calibration is not None else None,
                        json.dumps(performance) if performance else None,
                        check_project_name(project), _version_number(version)))

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
