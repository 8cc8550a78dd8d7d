"""A project's datasets: CreateDataset, DescribeDataset, ListDatasetEntries, UpdateDatasetEntries, DeleteDataset.

A project has at most a ``train`` and a ``test`` dataset. Each is a row of the store's
``datasets`` table and its entries (one JSON line each, keyed by ``source-ref``) in ``entries``,
with copies of their images and masks under ``$LVKIT_HOME/datasets/<project>/<type>/objects``
(:mod:`lvkit.ingest`). The copies are what training reads (:meth:`Catalog.training_manifests`).

Asynchronous, as the service was. CreateDataset from a manifest answers CREATE_IN_PROGRESS
and reads the manifest in a background thread; UpdateDatasetEntries answers
UPDATE_IN_PROGRESS likewise. The thread commits every entry in one transaction with
CREATE_COMPLETE / UPDATE_COMPLETE, or none of them with CREATE_FAILED /
UPDATE_FAILED_ROLLBACK_COMPLETE and a StatusMessage listing the first problems (line number and
what was wrong): nothing half-made. A process that dies mid-way leaves its row owned by a dead
owner, which the store settles the same way on next open (:meth:`lvkit.store.Store.recover`).
With ``wait=True`` (in process) the call returns once the work is done, still answering the
IN_PROGRESS status the service answered.

Choices where the public material is silent:

* A manifest that cannot be found (no such bucket or key) is a ValidationException before
  anything is created; one found but unreadable later fails the creation.
* A manifest with no entries, or one line that fails its checks, fails the whole creation
  (CREATE_FAILED); a failed dataset is deleted and created again, as with the service.
* Relative references resolve against the manifest's location; an UpdateDatasetEntries line
  must use absolute references (it has no location).
* A source-ref given twice keeps its last line. An update adds new source-refs and replaces
  the lines of known ones (their creation date becomes the update's).
* ListDatasetEntries' BeforeCreationDate/AfterCreationDate compare the time an entry was added
  to the dataset (not the ``creation-date`` inside the line); AnomalyClass filters on
  ``anomaly-label`` (1 anomaly, 0 normal; unlabeled lines match neither).
* UpdateDatasetEntries and DeleteDataset answer ConflictException while the dataset is being
  created or updated, or while a model of the project is TRAINING (training reads the copies).
* An empty dataset (CreateDataset without DatasetSource) is CREATE_COMPLETE at once.

Imports ``lvkit.errors``, ``lvkit.shapes``, ``lvkit.validation``, ``lvkit.store``,
``lvkit.storage`` and ``lvkit.ingest`` only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lvkit import storage
from lvkit.errors import ConflictException, ResourceNotFoundException, ValidationException
from lvkit.ingest import Ingest
from lvkit.shapes import DatasetDescription, DatasetStatus, ModelStatus
from lvkit.store import Store
from lvkit.validation import (
    check_client_token,
    check_dataset_source,
    check_max_results,
    check_project_name,
    decode_next_token,
    encode_next_token,
)

__all__ = ["DATASET_TYPES", "MAX_CHANGES_BYTES", "Catalog", "check_dataset_type", "source_from_wire"]

logger = logging.getLogger("lvkit.catalog")

DATASET_TYPES = ("train", "test")
#: the largest UpdateDatasetEntries ``Changes`` (the API's DatasetChanges shape: 10 MiB)
MAX_CHANGES_BYTES = 10 * 1024 * 1024
#: statuses in which a dataset's entries may change (UpdateDatasetEntries) or be used
_SETTLED = (DatasetStatus.CREATE_COMPLETE, DatasetStatus.UPDATE_COMPLETE,
            DatasetStatus.UPDATE_FAILED_ROLLBACK_COMPLETE)
_BUSY = (DatasetStatus.CREATE_IN_PROGRESS, DatasetStatus.UPDATE_IN_PROGRESS)

Key = tuple[str, str]


def check_dataset_type(dataset_type: object) -> str:
    """DatasetType: ``train`` or ``test``.

    >>> check_dataset_type("test")
    'test'
    """
    if dataset_type not in DATASET_TYPES:
        raise ValidationException(f"DatasetType must be 'train' or 'test', got {str(dataset_type)[:32]!r}")
    return str(dataset_type)


def source_from_wire(dataset_source: object) -> tuple[str | None, str | None]:
    """CreateDataset's ``DatasetSource`` -> (manifest ``s3://`` URI or None, VersionId or None).

    >>> source_from_wire({"GroundTruthManifest": {"S3Object": {"Bucket": "lines", "Key": "train.manifest"}}})
    ('s3://lines/train.manifest', None)
    """
    checked = check_dataset_source(dataset_source)
    if checked is None:
        return None, None
    bucket, key, version = checked
    return storage.s3_uri(bucket, key), version


def _epoch(value: object, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):  # a naive one is UTC, as botocore takes it
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return _epoch(datetime.fromisoformat(value.replace("Z", "+00:00")), field)
        except ValueError:
            pass
    raise ValidationException(f"{field} must be a date and time (ISO 8601 or epoch seconds), got {str(value)[:40]!r}")


class Catalog:
    """The datasets of a store's projects.

    Parameters
    ----------
    store : Store
    wait : bool, default True
        Whether create/update return only once their background work is done.
    local_files : bool or Path, default True
        Which local files entries may reference (:class:`lvkit.ingest.Ingest`): any, none (what
        ``lvkit serve`` does unless given ``--local-files DIR``), or those under a folder.
    """

    def __init__(self, store: Store, *, wait: bool = True, local_files: bool | Path = True) -> None:
        self.store = store
        self.wait = wait
        self.local_files = local_files
        self._threads: dict[Key, threading.Thread] = {}
        self._stop = threading.Event()

    # -- reading -------------------------------------------------------------------------------
    def _row(self, project: str, dataset_type: str) -> Any:
        self.store.get_project(project)
        rows = self.store.read("SELECT * FROM datasets WHERE project=? AND type=?", (project, dataset_type))
        if rows and rows[0]["status"] in _BUSY and not self.store.owner_alive(rows[0]["owner"]):
            self.store.recover()  # its owner died: settle it before anyone acts on a stale status
            rows = self.store.read("SELECT * FROM datasets WHERE project=? AND type=?", (project, dataset_type))
        if not rows:
            raise ResourceNotFoundException(f"project {project!r} has no {dataset_type} dataset",
                                            resource_id=f"{project}/{dataset_type}", resource_type="DATASET")
        return rows[0]

    def _describe(self, row: Any) -> DatasetDescription:
        stats = self.store.read(
            "SELECT COUNT(*) AS total, COUNT(label) AS labeled, COALESCE(SUM(label = 0), 0) AS normal,"
            " COALESCE(SUM(label = 1), 0) AS anomaly FROM entries WHERE project=? AND type=?",
            (row["project"], row["type"]))[0]
        return DatasetDescription(row["project"], row["type"], row["created"], row["updated"],
                                  DatasetStatus(row["status"]), row["status_message"], stats["total"],
                                  stats["labeled"], stats["normal"], stats["anomaly"])

    def describe(self, project: str, dataset_type: str) -> DatasetDescription:
        """DescribeDataset."""
        check_project_name(project)
        check_dataset_type(dataset_type)
        return self._describe(self._row(project, dataset_type))

    def of_project(self, project: str) -> list[DatasetDescription]:
        """The project's datasets (DescribeProject's ``Datasets``), train first."""
        rows = self.store.read("SELECT * FROM datasets WHERE project=? ORDER BY type DESC", (project,))
        return [self._describe(r) for r in rows]

    def list_entries(self, project: str, dataset_type: str, *, labeled: bool | None = None,
                     anomaly_class: str | None = None, before: object = None, after: object = None,
                     source_ref_contains: str | None = None, next_token: str | None = None,
                     max_results: int | None = None) -> tuple[list[str], str | None]:
        """ListDatasetEntries: the JSON lines, oldest first, filtered and paginated."""
        check_project_name(project)
        check_dataset_type(dataset_type)
        limit, start = check_max_results(max_results), decode_next_token(next_token)
        where: list[str] = ["project=?", "type=?"]
        args: list[object] = [project, dataset_type]
        if labeled is not None:
            if not isinstance(labeled, bool):
                raise ValidationException(f"Labeled must be true or false, got {labeled!r}")
            where.append("label IS NOT NULL" if labeled else "label IS NULL")
        if anomaly_class is not None:
            if anomaly_class not in ("normal", "anomaly"):
                raise ValidationException(
                    f"AnomalyClass must be 'normal' or 'anomaly', got {str(anomaly_class)[:32]!r}")
            where.append("label=?")
            args.append(int(anomaly_class == "anomaly"))
        for value, name, op in ((before, "BeforeCreationDate", "<"), (after, "AfterCreationDate", ">")):
            if (epoch := _epoch(value, name)) is not None:
                where.append(f"created {op} ?")
                args.append(epoch)
        if source_ref_contains is not None:
            if not isinstance(source_ref_contains, str) or not 1 <= len(source_ref_contains) <= 2048 \
                    or not source_ref_contains.strip():
                raise ValidationException("SourceRefContains must be 1 to 2048 characters, not only spaces")
            where.append("instr(source_ref, ?) > 0")
            args.append(source_ref_contains)
        self._row(project, dataset_type)
        rows = self.store.read(f"SELECT line FROM entries WHERE {' AND '.join(where)} ORDER BY seq LIMIT ? OFFSET ?",
                               (*args, limit + 1, start))
        more = len(rows) > limit
        return [r["line"] for r in rows[:limit]], encode_next_token(start + limit) if more else None

    # -- creating --------------------------------------------------------------------------------
    def create(self, project: str, dataset_type: str, source: str | None, *, version_id: str | None = None,
               client_token: str | None = None) -> DatasetDescription:
        """CreateDataset: empty (``source`` None) or from the manifest at ``source``.

        ``source`` is an ``s3://`` URI, a ``file://`` URI or a local path (:mod:`lvkit.storage`).
        """
        check_project_name(project)
        check_dataset_type(dataset_type)
        token = check_client_token(client_token)
        self.store.get_project(project)
        if source is not None:  # an unusable or missing manifest is the caller's error, before anything is made
            if self.local_files is not True and not storage.is_s3(source):
                raise ValidationException("DatasetSource: this server reads manifests from S3 only")
            try:
                found = storage.exists(storage.resolve(source)) if version_id is None else True
            except storage.StorageError as exc:
                raise ValidationException(f"DatasetSource: {exc}") from None
            if not found:
                raise ValidationException(f"DatasetSource: no manifest at {source} (check the bucket and the key)")
        request = {"ProjectName": project, "DatasetType": dataset_type, "Source": source, "VersionId": version_id}
        holder: dict[str, str] = {}

        def run() -> dict[str, Any]:
            with self.store.transaction() as db:
                if db.execute("SELECT 1 FROM datasets WHERE project=? AND type=?", (project, dataset_type)).fetchone():
                    raise ConflictException(f"project {project!r} already has a {dataset_type} dataset",
                                            resource_id=f"{project}/{dataset_type}", resource_type="DATASET",
                                            operation_name="CreateDataset")
                now = round(time.time(), 3)
                status = DatasetStatus.CREATE_IN_PROGRESS if source else DatasetStatus.CREATE_COMPLETE
                message = "reading the manifest" if source else "created empty"
                holder["owner"] = owner = self.store.claim() if source else ""
                db.execute("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (project, dataset_type, now, now, status.value, message, owner or None))
            return {"created": now, "status": status.value, "message": message}

        out, fresh = (run(), True) if token is None else self.store.remember(
            "CreateDataset", token, request, run, resource_id=f"{project}/{dataset_type}", resource_type="DATASET")
        if fresh and source is not None:
            self._start((project, dataset_type), lambda: self._fill(project, dataset_type, source, version_id,
                                                                     holder["owner"]))
        return DatasetDescription(project, dataset_type, out["created"], out["created"],
                                  DatasetStatus(out["status"]), out["message"])

    def _fill(self, project: str, dataset_type: str, source: str, version_id: str | None, owner: str) -> None:
        ingest = Ingest(self.store.dataset_dir(project, dataset_type), owner, base=source, stop=self._stop,
                        local_files=self.local_files)
        try:
            ingest.add_lines(storage.iter_lines(source, version_id=version_id))
            failure = ingest.failure() or (None if ingest.entries else "the manifest has no entries")
        except storage.StorageError as exc:
            failure = f"cannot read the manifest: {exc}"
        except Exception as exc:  # anything else must still settle the row
            logger.exception("creating dataset %s/%s failed", project, dataset_type)
            failure = f"creating the dataset failed on an internal error: {self.store.redact(str(exc))}"
        self._settle(project, dataset_type, owner, ingest, failure, create=True)

    # -- updating --------------------------------------------------------------------------------
    def update(self, project: str, dataset_type: str, changes: bytes, *,
               client_token: str | None = None) -> DatasetStatus:
        """UpdateDatasetEntries: add or replace entries (by source-ref) from JSON lines."""
        check_project_name(project)
        check_dataset_type(dataset_type)
        token = check_client_token(client_token)
        if not isinstance(changes, (bytes, bytearray)) or not 1 <= len(changes) <= MAX_CHANGES_BYTES:
            got = f"{len(changes):,} bytes" if isinstance(changes, (bytes, bytearray)) else type(changes).__name__
            raise ValidationException(f"Changes must be 1 byte to 10 MiB of JSON lines, got {got}")
        try:
            text = bytes(changes).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationException(f"Changes is not UTF-8 text (byte {exc.start})") from None
        # "\n" only, as a manifest is read (str.splitlines also splits on U+2028, \x0c...)
        lines = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
        if not lines:
            raise ValidationException("Changes holds no JSON lines")
        self._row(project, dataset_type)
        request = {"ProjectName": project, "DatasetType": dataset_type,  # the token table keeps a digest, not 10 MiB
                   "Changes": hashlib.sha256(changes).hexdigest()}
        holder: dict[str, str] = {}

        def run() -> dict[str, Any]:
            with self.store.transaction() as db:
                row = self._row(project, dataset_type)
                self._check_free(db, project, row, "UpdateDatasetEntries")
                holder["owner"] = owner = self.store.claim()
                db.execute("UPDATE datasets SET status=?, status_message=?, owner=?, updated=?"
                           " WHERE project=? AND type=?",
                           (DatasetStatus.UPDATE_IN_PROGRESS.value, "updating the entries", owner,
                            round(time.time(), 3), project, dataset_type))
            return {"Status": DatasetStatus.UPDATE_IN_PROGRESS.value}

        out, fresh = (run(), True) if token is None else self.store.remember(
            "UpdateDatasetEntries", token, request, run, resource_id=f"{project}/{dataset_type}",
            resource_type="DATASET")
        if fresh:
            self._start((project, dataset_type), lambda: self._apply(project, dataset_type, lines, holder["owner"]))
        return DatasetStatus(out["Status"])

    def _apply(self, project: str, dataset_type: str, lines: list[tuple[int, str]], owner: str) -> None:
        ingest = Ingest(self.store.dataset_dir(project, dataset_type), owner, base=None, stop=self._stop,
                        local_files=self.local_files)
        try:
            ingest.add_lines(lines)
            failure = ingest.failure()
        except Exception as exc:
            logger.exception("updating dataset %s/%s failed", project, dataset_type)
            failure = f"the update failed on an internal error: {self.store.redact(str(exc))}"
        self._settle(project, dataset_type, owner, ingest, failure, create=False)

    def _check_free(self, db: Any, project: str, row: Any, operation: str) -> None:
        status = DatasetStatus(row["status"])
        if status in _BUSY or (operation == "UpdateDatasetEntries" and status not in _SETTLED):
            raise ConflictException(f"the {row['type']} dataset of project {project!r} is {status}; "
                                    f"{operation} waits until it is settled",
                                    resource_id=f"{project}/{row['type']}", resource_type="DATASET",
                                    operation_name=operation)
        if db.execute("SELECT 1 FROM models WHERE project=? AND status=?",
                      (project, ModelStatus.TRAINING.value)).fetchone():
            raise ConflictException(f"a model of project {project!r} is TRAINING from its datasets; "
                                    f"{operation} waits until training ends", resource_id=f"{project}/{row['type']}",
                                    resource_type="DATASET", operation_name=operation)

    def _settle(self, project: str, dataset_type: str, owner: str, ingest: Ingest, failure: str | None, *,
                create: bool) -> None:
        """Commit the ingest's entries with the COMPLETE status, or none with the FAILED one.

        Copies no entry refers to any more are removed in the same transaction, while the
        dataset is still ours (IN_PROGRESS): no other ingest of it can be copying then.
        """
        ok = DatasetStatus.CREATE_COMPLETE if create else DatasetStatus.UPDATE_COMPLETE
        failed = DatasetStatus.CREATE_FAILED if create else DatasetStatus.UPDATE_FAILED_ROLLBACK_COMPLETE
        busy = DatasetStatus.CREATE_IN_PROGRESS if create else DatasetStatus.UPDATE_IN_PROGRESS
        now = round(time.time(), 3)
        message = self.store.redact(failure)[:1000] if failure else ""
        try:
            with self.store.transaction() as db:
                if failure is None:
                    seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM entries WHERE project=? AND type=?",
                                     (project, dataset_type)).fetchone()[0]
                    db.executemany(
                        "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(project, dataset_type, e.source_ref, e.line, now, e.label, e.image, e.mask, seq + i)
                         for i, e in enumerate(ingest.entries.values(), start=1)])
                    message = f"{len(ingest.entries)} entries {'read' if create else 'added or replaced'}"
                self._collect(db, project, dataset_type)
                db.execute("UPDATE datasets SET status=?, status_message=?, owner=NULL, updated=?"
                           " WHERE project=? AND type=? AND status=? AND owner=?",
                           ((failed if failure else ok).value, message, now, project, dataset_type, busy.value,
                            owner))
        except Exception:
            logger.exception("could not settle dataset %s/%s; it is settled when this process ends", project,
                             dataset_type)

    def _collect(self, db: Any, project: str, dataset_type: str) -> None:
        """Remove copies no entry refers to (an update's replaced files, a failed ingest's)."""
        objects = self.store.dataset_dir(project, dataset_type) / "objects"
        if not objects.is_dir():
            return
        keep = {name for row in db.execute("SELECT image, mask FROM entries WHERE project=? AND type=?",
                                           (project, dataset_type)) for name in row if name}
        for path in objects.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    # -- deleting --------------------------------------------------------------------------------
    def delete(self, project: str, dataset_type: str, *, client_token: str | None = None) -> None:
        """DeleteDataset: the entries and the copies (the source images are not touched)."""
        check_project_name(project)
        check_dataset_type(dataset_type)
        token = check_client_token(client_token)

        def run() -> dict[str, Any]:
            with self.store.transaction() as db:
                row = self._row(project, dataset_type)
                self._check_free(db, project, row, "DeleteDataset")
                db.execute("DELETE FROM entries WHERE project=? AND type=?", (project, dataset_type))
                db.execute("DELETE FROM datasets WHERE project=? AND type=?", (project, dataset_type))
                # in the transaction: a CreateDataset of the same type waits for it, then copies afresh
                shutil.rmtree(self.store.dataset_dir(project, dataset_type), ignore_errors=True)
            return {}

        if token is None:
            run()
        else:
            self.store.remember("DeleteDataset", token, {"ProjectName": project, "DatasetType": dataset_type}, run,
                                resource_id=f"{project}/{dataset_type}", resource_type="DATASET")

    # -- training ------------------------------------------------------------------------------
    def check_trainable(self, project: str) -> None:
        """ValidationException unless the project has a train dataset, and its datasets are settled."""
        for dataset_type in DATASET_TYPES:
            rows = self.store.read("SELECT status FROM datasets WHERE project=? AND type=?", (project, dataset_type))
            if not rows:
                if dataset_type == "train":
                    raise ValidationException(f"project {project!r} has no train dataset: create one (CreateDataset) "
                                              "before CreateModel")
                continue
            if DatasetStatus(rows[0]["status"]) not in _SETTLED:
                raise ValidationException(f"the {dataset_type} dataset of project {project!r} is {rows[0]['status']};"
                                          " CreateModel needs it CREATE_COMPLETE or UPDATE_COMPLETE")

    def training_manifests(self, project: str, folder: Path) -> tuple[list[tuple[Path, str]], dict[str, str]]:
        """Write the project's labeled entries as manifests under ``folder`` for training.

        The manifests name the dataset's copies (absolute paths): while a model of the project
        is TRAINING no update or delete may change them (:meth:`update`, :meth:`delete`).
        Returns ``[(manifest, split), ...]`` (the train dataset, and the test dataset when
        there is one) and each image's original line (by its path). ValidationException as
        :meth:`check_trainable`.
        """
        self.check_trainable(project)
        out: list[tuple[Path, str]] = []
        originals: dict[str, str] = {}
        for dataset_type in DATASET_TYPES:
            if not self.store.read("SELECT 1 FROM datasets WHERE project=? AND type=?", (project, dataset_type)):
                continue
            objects = Path(os.path.normpath(self.store.dataset_dir(project, dataset_type).absolute())) / "objects"
            lines = []
            for r in self.store.read("SELECT line, image, mask FROM entries WHERE project=? AND type=? AND label IS"
                                     " NOT NULL ORDER BY seq", (project, dataset_type)):
                record = json.loads(r["line"])
                record["source-ref"] = str(objects / r["image"])
                originals[record["source-ref"]] = r["line"]
                if r["mask"] is not None:
                    record["anomaly-mask-ref"] = str(objects / r["mask"])
                lines.append(json.dumps(record))
            manifest = folder / f"{dataset_type}.manifest"
            manifest.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            out.append((manifest, dataset_type))
        return out, originals

    # -- threads --------------------------------------------------------------------------------
    def _start(self, key: Key, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"lvkit-dataset-{key[0]}-{key[1]}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: do it here
            target()
            return
        self._threads[key] = thread
        if self.wait:
            thread.join()

    def wait_for(self, project: str, dataset_type: str, *, timeout: float | None = None) -> DatasetStatus:
        """Wait for this process's pending create/update of the dataset; its status."""
        thread = self._threads.get((project, dataset_type))
        if thread is not None:
            thread.join(timeout)
        return self.describe(project, dataset_type).status

    def close(self, timeout: float = 30.0) -> None:
        """Stop pending ingests at their next line (they fail, as after a crash) and wait for them."""
        self._stop.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)

