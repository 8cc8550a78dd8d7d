"""Model versions in the store: their records, their numbers and their lifecycle.

Owns :class:`ModelRecord` (a row of the ``models`` table as the service reads it), what a version
number may be, and the :class:`~lvkit.store.Store` methods that read and change model versions
(:class:`ModelVersions`, which ``Store`` inherits): reserving the next number, building the
artifact folder atomically (a ``.tmp-<owner>-*`` folder renamed into place, then the row made
TRAINED), setting statuses and recalibrators, and deleting. A version in a transient status
(:data:`~lvkit.store_recovery.TRANSIENT`) belongs to the owner that set it; a dead owner's
versions are settled (:meth:`~lvkit.store.Store.recover`) before anyone reads them.

``ModelVersions`` holds no state of its own: it uses the database, lock, owner and projects of
the ``Store`` it is part of (declared below for the type checker only).

Imports ``lvkit.errors``, ``lvkit.shapes``, ``lvkit.validation`` and ``lvkit.store_recovery`` only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvkit.errors import ConflictException, ResourceNotFoundException, StoreNotWritableError, ValidationException
from lvkit.shapes import ModelStatus
from lvkit.store_recovery import TRANSIENT
from lvkit.validation import check_project_name

__all__ = ["ModelRecord", "ModelVersions", "version_number"]

logger = logging.getLogger("lvkit.store")


def version_number(version: object) -> int:
    """A stored version number: a positive int, or its decimal ASCII spelling without leading zeros."""
    if isinstance(version, int) and not isinstance(version, bool) and 1 <= version < 10**10:
        return version
    if isinstance(version, str) and re.fullmatch(r"[1-9][0-9]{0,9}", version, re.ASCII):
        return int(version)
    raise ValidationException(f"ModelVersion {str(version)[:32]!r} is not a version number (1, 2, ...)")


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


class ModelVersions:
    """The model-version methods of :class:`~lvkit.store.Store` (``Store`` inherits them)."""

    if TYPE_CHECKING:  # what these methods use of the Store they are part of
        home: Path
        owner: str
        _lock: threading.RLock

        @property
        def _db(self) -> sqlite3.Connection: ...
        @property
        def writable(self) -> bool: ...
        def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _claim(self) -> str: ...
        def owner_alive(self, owner: str | None) -> bool: ...
        def recover(self) -> list[tuple[str, int, ModelStatus]]: ...
        def get_project(self, name: str) -> object: ...
        def model_arn(self, project: str, version: int | str) -> str: ...
        def redact(self, text: str) -> str: ...

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
            r["status"] in TRANSIENT and r["owner"] != self.owner and not self.owner_alive(r["owner"]) for r in rows)

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
        number = None if version == "latest" else version_number(version)
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
        return self.home / "artifacts" / check_project_name(project) / str(version_number(version))

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
            if m.status in TRANSIENT or m.status == ModelStatus.HOSTED:
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
        owner = self._claim() if status in TRANSIENT else None
        sets = ["status=?", "status_message=?", "owner=?", "owner_pid=NULL"]
        args: list[Any] = [ModelStatus(status).value, message, owner]
        for key, value in fields.items():
            if key not in ("min_units", "max_units", "calibration"):
                raise TypeError(f"unknown model field {key!r}")
            sets.append(f"{key}=?")
            args.append(json.dumps(value) if key == "calibration" and value is not None else value)
        where = "project=? AND version=?"
        args += [check_project_name(project), version_number(version)]
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
                        check_project_name(project), version_number(version)))
