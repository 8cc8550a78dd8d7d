"""Recovery of dead owners: the rows and temporary files a :class:`~lvkit.store.Store` instance
left behind when its process ended.

Owns which statuses belong to a live owner (:data:`TRANSIENT` for model versions,
:data:`DATASET_TRANSIENT` for datasets, ``CREATED`` and ``RUNNING`` for packaging jobs), what
each settles to once its owner is dead and the status message that says so, and which
``.tmp-<owner>-*`` folders and files under ``artifacts/`` and ``datasets/`` may be removed.
Whether an owner is alive is the caller's to say (``alive``: :meth:`lvkit.store.Store.owner_alive`,
a file lock of :mod:`lvkit.locks`); :meth:`lvkit.store.Store.recover` runs :func:`settle_rows`
inside one write transaction, then :func:`remove_temporaries`. A live owner's rows and files are
never touched.

Imports ``lvkit.shapes`` (:class:`~lvkit.shapes.ModelStatus`) only.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from lvkit.shapes import ModelStatus

__all__ = ["DATASET_TRANSIENT", "INTERRUPTED", "TRANSIENT", "remove_temporaries", "settle_rows"]

#: statuses owned by a live Store instance while they last, and what they settle to without it
TRANSIENT = {ModelStatus.TRAINING: ModelStatus.TRAINING_FAILED, ModelStatus.STARTING_HOSTING: ModelStatus.TRAINED,
             ModelStatus.STOPPING_HOSTING: ModelStatus.TRAINED}
INTERRUPTED = {ModelStatus.TRAINING: "training", ModelStatus.STARTING_HOSTING: "starting",
               ModelStatus.STOPPING_HOSTING: "stopping"}
#: dataset statuses owned by a live Store instance, what they settle to without it, and why
DATASET_TRANSIENT = {
    "CREATE_IN_PROGRESS": ("CREATE_FAILED", "creating the dataset was interrupted (the process that owned it "
                           "ended); delete the dataset and create it again"),
    "UPDATE_IN_PROGRESS": ("UPDATE_FAILED_ROLLBACK_COMPLETE", "the update was interrupted (the process that owned "
                           "it ended); the entries are as they were before it"),
}
_TMP = re.compile(r"^\.tmp-([0-9a-f]{32})-")


def settle_rows(db: sqlite3.Connection, alive: Callable[[str | None], bool]) -> list[tuple[str, int, ModelStatus]]:
    """Settle the transient model, dataset and packaging job rows whose owner is not ``alive``.

    Runs its statements on ``db``, inside the caller's write transaction. Returns the
    (project, version, new status) model rows it changed.
    """
    changed: list[tuple[str, int, ModelStatus]] = []
    rows = db.execute(
        "SELECT project, version, status, owner FROM models WHERE status IN (?, ?, ?)",
        tuple(s.value for s in TRANSIENT),
    ).fetchall()
    for row in rows:
        if alive(row["owner"]):
            continue
        new = TRANSIENT[ModelStatus(row["status"])]
        db.execute(
            "UPDATE models SET status=?, status_message=?, owner=NULL, owner_pid=NULL"
            " WHERE project=? AND version=? AND status=?",
            (new.value, f"{INTERRUPTED[row['status']]} was interrupted (the process that owned it ended)",
             row["project"], row["version"], row["status"]),
        )
        changed.append((row["project"], row["version"], new))
    for row in db.execute("SELECT project, type, status, owner FROM datasets WHERE status IN (?, ?)",
                          tuple(DATASET_TRANSIENT)).fetchall():
        if not alive(row["owner"]):
            status, message = DATASET_TRANSIENT[row["status"]]
            db.execute("UPDATE datasets SET status=?, status_message=?, owner=NULL, updated=?"
                       " WHERE project=? AND type=? AND status=?",
                       (status, message, round(time.time(), 3), row["project"], row["type"], row["status"]))
    for row in db.execute("SELECT project, name, status, owner FROM packaging_jobs WHERE status IN (?, ?)",
                          ("CREATED", "RUNNING")).fetchall():
        if not alive(row["owner"]):
            db.execute("UPDATE packaging_jobs SET status='FAILED', status_message=?, owner=NULL, updated=?"
                       " WHERE project=? AND name=? AND status=?",
                       ("the packaging job was interrupted (the process that owned it ended); start it "
                        "again", round(time.time(), 3), row["project"], row["name"], row["status"]))
    return changed


def remove_temporaries(home: Path, alive: Callable[[str | None], bool]) -> None:
    """Remove the ``.tmp-*`` folders and files under ``home``'s ``artifacts/`` and ``datasets/``
    whose owner is not ``alive`` (and those whose name names no owner)."""
    for tmp in [*(home / "artifacts").glob("*/.tmp-*"), *(home / "datasets").glob("*/*/.tmp-*")]:
        match = _TMP.match(tmp.name)
        if match is None or not alive(match.group(1)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
