"""Persistent state: an embedded SQLite database plus one artifact folder per model version.

Layout under the home folder (``$LVKIT_HOME``, default ``~/.lvkit``)::

    lvkit.db                          projects, model versions, tags, idempotency tokens
    artifacts/<project>/<version>/    everything a backend needs to load that version
    artifacts/<project>/.tmp-*        work in progress; never read, removed on recovery

Nothing above this module touches those files directly. Artifact folders are written in a
temporary folder and renamed into place (``os.replace``), then the database row is updated:
a crash at any point leaves either no version folder or a complete one. Opening a store
recovers from a crash of another process: TRAINING, STARTING_HOSTING and STOPPING_HOSTING
rows whose owner process is gone are settled (TRAINING_FAILED, TRAINED) with a status
message that says so, and orphaned temporary folders are removed.

Imports ``lvkit.errors`` only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvkit.errors import ConflictException, ResourceNotFoundException

__all__ = ["ModelRecord", "ProjectRecord", "Store", "default_home"]

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
    PRIMARY KEY (project, version)
);
CREATE TABLE IF NOT EXISTS tags (
    arn TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (arn, key)
);
CREATE TABLE IF NOT EXISTS tokens (
    operation TEXT NOT NULL, token TEXT NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (operation, token)
);
"""

#: statuses owned by a live process while they last
_TRANSIENT = {"TRAINING": "TRAINING_FAILED", "STARTING_HOSTING": "TRAINED", "STOPPING_HOSTING": "TRAINED"}


def default_home() -> Path:
    """``$LVKIT_HOME`` or ``~/.lvkit``."""
    return Path(os.environ.get("LVKIT_HOME") or Path.home() / ".lvkit").expanduser()


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
    status: str
    status_message: str
    description: str | None
    backend: str
    performance: dict[str, float] | None
    evaluation_end: float | None
    min_units: int | None
    max_units: int | None
    calibration: dict[str, Any] | None


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """SQLite state and atomic artifact folders under ``home``.

    Parameters
    ----------
    home : path-like, optional
        Defaults to :func:`default_home`.
    region, account : str, optional
        Used in ARNs; fixed at the store's creation (``$AWS_REGION`` or us-east-1;
        ``$LVKIT_ACCOUNT_ID`` or 000000000000).
    """

    def __init__(self, home: str | os.PathLike[str] | None = None, *, region: str | None = None,
                 account: str | None = None) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "artifacts").mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.home / "lvkit.db", isolation_level=None, check_same_thread=False,
                                   timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        for stmt in _SCHEMA.strip().split(";\n"):
            if stmt.strip():
                self._db.execute(stmt)
        with self._tx() as db:
            for key, value in (
                ("region", region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"),
                ("account", account or os.environ.get("LVKIT_ACCOUNT_ID") or "000000000000"),
            ):
                db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self.region, self.account = meta["region"], meta["account"]
        self.recover()

    # -- plumbing --------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def project_arn(self, name: str) -> str:
        return f"arn:aws:lookoutvision:{self.region}:{self.account}:project/{name}"

    def model_arn(self, project: str, version: int | str) -> str:
        return f"arn:aws:lookoutvision:{self.region}:{self.account}:model/{project}/{version}"

    def recover(self) -> list[tuple[str, int, str]]:
        """Settle rows left transient by a process that is gone; remove orphaned temp folders.

        Returns the (project, version, new status) rows it changed.
        """
        changed = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT project, version, status, owner_pid FROM models WHERE status IN (?, ?, ?)",
                tuple(_TRANSIENT),
            ).fetchall()
            for row in rows:
                if _pid_alive(row["owner_pid"]):
                    continue
                new = _TRANSIENT[row["status"]]
                what = {"TRAINING": "training", "STARTING_HOSTING": "starting", "STOPPING_HOSTING": "stopping"}
                db.execute(
                    "UPDATE models SET status=?, status_message=?, owner_pid=NULL WHERE project=? AND version=?",
                    (new, f"{what[row['status']]} was interrupted (process {row['owner_pid']} ended)",
                     row["project"], row["version"]),
                )
                changed.append((row["project"], row["version"], new))
        for tmp in (self.home / "artifacts").glob("*/.tmp-*"):
            pid = re.match(r"\.tmp-(\d+)-", tmp.name)
            if pid is None or not _pid_alive(int(pid.group(1))):
                shutil.rmtree(tmp, ignore_errors=True)
        return changed

    # -- projects --------------------------------------------------------------------------
    def create_project(self, name: str) -> ProjectRecord:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM projects WHERE name=?", (name,)).fetchone():
                raise ConflictException(f"project {name!r} already exists", resource_id=name,
                                        resource_type="PROJECT", operation_name="CreateProject")
            created = round(time.time(), 3)
            db.execute("INSERT INTO projects (name, created) VALUES (?, ?)", (name, created))
        return ProjectRecord(name, self.project_arn(name), created)

    def get_project(self, name: str) -> ProjectRecord:
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
        project = self.get_project(name)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM models WHERE project=?", (name,)).fetchone():
                raise ConflictException(f"project {name!r} still has model versions; delete them first",
                                        resource_id=name, resource_type="PROJECT", operation_name="DeleteProject")
            db.execute("DELETE FROM tags WHERE arn=?", (project.arn,))
            db.execute("DELETE FROM projects WHERE name=?", (name,))
        shutil.rmtree(self.home / "artifacts" / name, ignore_errors=True)
        return project

    # -- model versions --------------------------------------------------------------------
    def _model(self, row: sqlite3.Row) -> ModelRecord:
        return ModelRecord(
            project=row["project"], version=row["version"], arn=self.model_arn(row["project"], row["version"]),
            created=row["created"], status=row["status"], status_message=row["status_message"],
            description=row["description"], backend=row["backend"],
            performance=json.loads(row["performance"]) if row["performance"] else None,
            evaluation_end=row["evaluation_end"], min_units=row["min_units"], max_units=row["max_units"],
            calibration=json.loads(row["calibration"]) if row["calibration"] else None,
        )

    def list_models(self, project: str) -> list[ModelRecord]:
        self.get_project(project)
        with self._lock:
            rows = self._db.execute("SELECT * FROM models WHERE project=? ORDER BY version", (project,)).fetchall()
        return [self._model(r) for r in rows]

    def get_model(self, project: str, version: str | int) -> ModelRecord:
        """The model version; ``"latest"`` resolves to the newest version of the project."""
        self.get_project(project)
        with self._lock:
            if version == "latest":
                row = self._db.execute("SELECT * FROM models WHERE project=? ORDER BY version DESC LIMIT 1",
                                       (project,)).fetchone()
            else:
                row = self._db.execute("SELECT * FROM models WHERE project=? AND version=?",
                                       (project, int(version))).fetchone()
        if row is None:
            what = "has no model versions" if version == "latest" else f"has no model version {version}"
            raise ResourceNotFoundException(f"project {project!r} {what}",
                                            resource_id=f"{project}/{version}", resource_type="MODEL")
        return self._model(row)

    def artifact_dir(self, project: str, version: int) -> Path:
        return self.home / "artifacts" / project / str(version)

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
        """
        self.get_project(project)
        with self._tx() as db:
            version = db.execute("SELECT next_version FROM projects WHERE name=?", (project,)).fetchone()[0]
            db.execute("UPDATE projects SET next_version=? WHERE name=?", (version + 1, project))
            db.execute(
                "INSERT INTO models (project, version, created, status, status_message, description, backend,"
                " owner_pid) VALUES (?, ?, ?, 'TRAINING', 'training in progress', ?, ?, ?)",
                (project, version, round(time.time(), 3), description, backend, os.getpid()),
            )
        final = self.artifact_dir(project, version)
        tmp = final.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            performance = build(tmp)
            if final.exists():  # left over by a deleted version of the same number: never reused
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            self.set_status(project, version, "TRAINING_FAILED", f"training failed: {exc}"[:1000])
            raise
        with self._tx() as db:
            db.execute(
                "UPDATE models SET status='TRAINED', status_message='training completed', performance=?,"
                " evaluation_end=?, owner_pid=NULL WHERE project=? AND version=?",
                (json.dumps(performance) if performance else None, round(time.time(), 3), project, version),
            )
        return self.get_model(project, version)

    def set_status(self, project: str, version: int, status: str, message: str, *,
                   expect: tuple[str, ...] | None = None, **fields: Any) -> bool:
        """Set a model's status (and ``min_units``/``max_units``/``calibration``).

        With ``expect``, only when the current status is one of those (returns False otherwise).
        Transient statuses record this process as the owner.
        """
        sets = ["status=?", "status_message=?", "owner_pid=?"]
        args: list[Any] = [status, message, os.getpid() if status in _TRANSIENT else None]
        for key, value in fields.items():
            if key not in ("min_units", "max_units", "calibration"):
                raise TypeError(f"unknown model field {key!r}")
            sets.append(f"{key}=?")
            args.append(json.dumps(value) if key == "calibration" and value is not None else value)
        where = "project=? AND version=?"
        args += [project, version]
        if expect:
            where += f" AND status IN ({','.join('?' * len(expect))})"
            args += list(expect)
        with self._tx() as db:
            cur = db.execute(f"UPDATE models SET {', '.join(sets)} WHERE {where}", args)
        return cur.rowcount == 1

    def set_calibration(self, project: str, version: int, calibration: dict[str, Any] | None) -> None:
        """Attach (a dict) or detach (None) a recalibrator to a model version."""
        with self._tx() as db:
            db.execute("UPDATE models SET calibration=? WHERE project=? AND version=?",
                       (json.dumps(calibration) if calibration is not None else None, project, version))

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
    def remember(self, operation: str, token: str, request: dict[str, Any],
                 run: Callable[[], dict[str, Any]], *, resource_id: str = "",
                 resource_type: str = "PROJECT") -> dict[str, Any]:
        """Run ``run()`` once per (operation, token); a repeat returns the stored response.

        The same token with a different request raises ConflictException naming
        ``resource_id``/``resource_type`` (our choice: the public material says only that the
        same token and request give the same result). A ``run()`` that raises stores nothing.
        """
        key = json.dumps(request, sort_keys=True)
        with self._lock:
            row = self._db.execute("SELECT request, response FROM tokens WHERE operation=? AND token=?",
                                   (operation, token)).fetchone()
            if row is not None:
                if row["request"] != key:
                    raise ConflictException(
                        f"ClientToken {token!r} was already used with a different {operation} request",
                        resource_id=resource_id, resource_type=resource_type, operation_name=operation)
                return dict(json.loads(row["response"]))
            response = run()
            with self._tx() as db:
                db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?)",
                           (operation, token, key, json.dumps(response), time.time()))
            return response
