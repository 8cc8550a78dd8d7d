"""The tables of ``lvkit.db`` and how the database of an older home is brought up to date.

Owns the ``CREATE TABLE`` statements of every table in the database (``meta``, ``projects``,
``models``, ``tags``, ``datasets``, ``entries``, ``packaging_jobs``, ``tokens``), the columns
added to homes written before them, and the ``meta`` rows (region, account) fixed when a home is
created. :class:`~lvkit.store.Store` passes :func:`setup_schema` to its :class:`~lvkit.database.Database`,
which runs it inside the first transaction; the modules that keep their rows in these tables
(:mod:`lvkit.catalog`: datasets and entries; :mod:`lvkit.packaging`: packaging jobs) write them
through the store's transactions.

Imports the standard library only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

__all__ = ["SCHEMA", "setup_schema"]

#: every table of the database; :func:`setup_schema` runs it one statement (ending ``;\n``) at a time
SCHEMA = """
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


def setup_schema(db: sqlite3.Connection, defaults: Iterable[tuple[str, str]]) -> None:
    """Create the missing tables, add the columns older homes lack, and record the ``meta``
    ``defaults`` (``(key, value)`` pairs) where the home has none yet."""
    for stmt in SCHEMA.strip().split(";\n"):
        if stmt.strip():
            db.execute(stmt)
    columns = {r["name"] for r in db.execute("PRAGMA table_info(models)")}
    for column in ("owner", "kms_key_id", "output"):  # homes written before these columns
        if column not in columns:
            db.execute(f"ALTER TABLE models ADD COLUMN {column} TEXT")
    db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", defaults)
