"""Model packaging jobs: StartModelPackagingJob, DescribeModelPackagingJob, ListModelPackagingJobs.

The service compiled a model version into an AWS IoT Greengrass V2 component for an edge
device. lvkit's job writes a self-contained package of the version instead, one zip at
``<S3OutputLocation>/<ComponentName>-<ComponentVersion>.zip`` (:mod:`lvkit.greengrass`)::

    model/                   the version's folder as the store holds it: lvkit.json (the decision:
                             thresholds, labels, colours) and the anomalib checkpoint, or the
                             ONNX/OpenVINO network of a version made by ``lvkit export``
    model/calibration.json   the recalibrator attached to the version, when there is one
    run.py                   ``python run.py IMAGE...``: one DetectAnomalies answer per image
    recipe.yaml              a Greengrass component recipe whose lifecycle runs run.py
    README.txt               what the package is and how to run it

Asynchronous, as the service was. StartModelPackagingJob answers the JobName once the job is
CREATED; a background thread makes it RUNNING, builds the zip in a temporary file of the
store (``artifacts/<project>/.tmp-<owner>-package-*.zip``), writes it with :mod:`lvkit.storage`
and settles the job SUCCEEDED (with ModelPackagingOutputDetails) or FAILED with the reason in
StatusMessage, in one statement that checks the job is still this owner's. A process that dies
mid-way leaves its job owned by a dead owner: the store settles it FAILED on next open, or when
the job is read, and removes the temporary zip (:meth:`lvkit.store.Store.recover`). With
``wait=True`` (in process) the call returns once the job has ended, still answering only the
JobName, as the service did. A ClientToken makes the call act once: a repeat within 8 hours
answers the first JobName (:meth:`lvkit.store.Store.remember`).

What each Greengrass field does in lvkit:

* ``ComponentName``, ``ComponentVersion``, ``ComponentDescription``: name the zip and go into
  recipe.yaml. ComponentVersion defaults to ``<model version>.0.0``, as the API documented.
* ``S3OutputLocation``: where the zip is written, through boto3's default chain; its bucket is
  checked (HeadBucket) before the call is answered. In process the configuration's ``output``
  may also be a local folder (:class:`GreengrassConfiguration`; an lvkit extension: the wire
  takes S3 only, and DescribeModelPackagingJob then shows no S3OutputLocation).
* ``CompilerOptions``: checked (3 to 1024 characters; not with TargetDevice; naming
  ``gpu-code``, ``trt-ver`` and ``cuda-ver`` with Accelerator NVIDIA, as the API required),
  stored, returned and written into the recipe's configuration. lvkit compiles nothing: the
  package holds the version as trained, or as exported by ``lvkit export``.
* ``TargetDevice`` / ``TargetPlatform``: checked (one or the other, never both), stored,
  returned and written into the recipe as its Platform (linux; ``ARM64`` and ``jetson_xavier``
  as aarch64, ``X86_64`` as amd64). lvkit's runner is the same Python on every platform;
  ``Accelerator: NVIDIA`` only means the backend may run on CUDA where it is installed.
* ``Tags``: checked, stored with the job and returned in its configuration; the service put
  them on the Greengrass component, which lvkit does not make.
* ``ComponentVersionArn`` (output): the ARN the component would have,
  ``arn:aws:greengrass:<region>:<account>:components:<ComponentName>:versions:<ComponentVersion>``;
  nothing is registered with Greengrass. (The description's pattern puts ``aws`` where the
  account stands, as AWS's own public components have; a user's component has the account.)
* ``ModelPackagingMethod``: :data:`PACKAGING_METHOD` (``lvkit``); the service named the AWS
  service that packaged the job, Greengrass.

Choices where the public material is silent:

* The version must have finished training: TRAINED or a hosting status (hosting does not change
  its folder). TRAINING, TRAINING_FAILED and DELETING answer ConflictException (ResourceType
  MODEL). ``latest`` resolves when the job starts; the job records the number.
* A JobName already used in the project answers ConflictException (ResourceType
  MODEL_PACKAGE_JOB); so does the ComponentName and ComponentVersion of a job of this store that
  has not FAILED (the API: no two components with the same name and version).
* Without a JobName lvkit names the job ``<project>-<version>-<8 hex digits>`` (the project
  name's ``_`` as ``-``, cut to fit 64 characters).
* Neither TargetDevice nor TargetPlatform is accepted too: the recipe's platform is then linux,
  any architecture.
* DescribeModelPackagingJob returns the configuration as stored, with ComponentVersion filled
  in when it was left to its default. Jobs are listed oldest first; they are kept, FAILED ones
  too, until their project is deleted (the API has no DeleteModelPackagingJob).
* Request fields are checked first (ValidationException), then the project and version
  (ResourceNotFoundException), then the version's status and the names (ConflictException),
  then the bucket (ValidationException naming it); the name checks are made again in the
  transaction that creates the job. A version deleted while its package is written fails the job.

Imports ``lvkit.errors``, ``lvkit.shapes``, ``lvkit.validation``, ``lvkit.store``,
``lvkit.storage`` and ``lvkit.greengrass`` only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from lvkit import storage
from lvkit.errors import ConflictException, ResourceNotFoundException, StoreNotWritableError, ValidationException
from lvkit.greengrass import GreengrassConfiguration, check_description, write_package
from lvkit.shapes import ModelPackagingJob, ModelStatus, PackagingJobStatus
from lvkit.store import Store
from lvkit.validation import (
    check_client_token,
    check_max_results,
    check_project_name,
    check_version,
    decode_next_token,
    encode_next_token,
)

__all__ = ["PACKAGING_METHOD", "Packaging", "check_job_name"]

logger = logging.getLogger("lvkit.packaging")

#: ModelPackagingMethod as lvkit reports it
PACKAGING_METHOD = "lvkit"
#: the model statuses a version may be packaged in: training has ended and written its folder
_PACKABLE = (ModelStatus.TRAINED, ModelStatus.STARTING_HOSTING, ModelStatus.HOSTED, ModelStatus.HOSTING_FAILED,
             ModelStatus.STOPPING_HOSTING, ModelStatus.SYSTEM_UPDATING)
_BUSY = (PackagingJobStatus.CREATED.value, PackagingJobStatus.RUNNING.value)

_JOB_NAME = re.compile(r"[a-zA-Z0-9-]{1,64}")


def check_job_name(name: object) -> str:
    """JobName: 1 to 64 ASCII letters, digits and ``-``.

    >>> check_job_name("line-1-edge")
    'line-1-edge'
    """
    if not isinstance(name, str) or not _JOB_NAME.fullmatch(name):
        raise ValidationException(f"JobName {str(name)[:72]!r} is invalid: 1 to 64 ASCII letters, digits and '-'")
    return name


class Packaging:
    """The model packaging jobs of a store's projects.

    Parameters
    ----------
    store : Store
    wait : bool, default True
        Whether :meth:`start` returns only once its job has ended.
    """

    def __init__(self, store: Store, *, wait: bool = True) -> None:
        self.store = store
        self.wait = wait
        self._threads: dict[tuple[str, str], threading.Thread] = {}

    # -- reading -------------------------------------------------------------------------------
    def _row(self, project: str, name: str) -> Any:
        self.store.get_project(project)
        sql = "SELECT * FROM packaging_jobs WHERE project=? AND name=?"
        rows = self.store.read(sql, (project, name))
        if rows and rows[0]["status"] in _BUSY and not self.store.owner_alive(rows[0]["owner"]):
            self._recover()  # its owner died: settle it before anyone reads a stale status
            rows = self.store.read(sql, (project, name))
        if not rows:
            raise ResourceNotFoundException(f"project {project!r} has no model packaging job {name!r}",
                                            resource_id=name, resource_type="MODEL_PACKAGE_JOB")
        return rows[0]

    def _recover(self) -> None:
        with contextlib.suppress(StoreNotWritableError):  # a full disk: show it as it is, reads work
            self.store.recover()

    @staticmethod
    def _job(row: Any) -> ModelPackagingJob:
        config = GreengrassConfiguration.from_dict(json.loads(row["configuration"]))
        output = json.loads(row["output"]) if row["output"] else {}
        status = PackagingJobStatus(row["status"])
        details = {"Greengrass": output["Greengrass"]} if status is PackagingJobStatus.SUCCEEDED else None
        return ModelPackagingJob(row["name"], row["project"], str(row["version"]), row["created"], row["updated"],
                                 status, row["status_message"], PACKAGING_METHOD, config.to_wire(),
                                 row["description"], details, output.get("uri"))

    def describe(self, project: str, job_name: str) -> ModelPackagingJob:
        """DescribeModelPackagingJob."""
        check_project_name(project)
        check_job_name(job_name)
        return self._job(self._row(project, job_name))

    def list(self, project: str, *, next_token: str | None = None,
             max_results: int | None = None) -> tuple[list[ModelPackagingJob], str | None]:
        """ListModelPackagingJobs: oldest first, paginated."""
        check_project_name(project)
        limit, start = check_max_results(max_results), decode_next_token(next_token)
        self.store.get_project(project)
        sql = "SELECT * FROM packaging_jobs WHERE project=? ORDER BY created, name LIMIT ? OFFSET ?"
        rows = self.store.read(sql, (project, limit + 1, start))
        if any(r["status"] in _BUSY and not self.store.owner_alive(r["owner"]) for r in rows):
            self._recover()
            rows = self.store.read(sql, (project, limit + 1, start))
        more = len(rows) > limit
        return [self._job(r) for r in rows[:limit]], encode_next_token(start + limit) if more else None

    # -- starting --------------------------------------------------------------------------------
    def start(self, project: str, model_version: str, configuration: GreengrassConfiguration, *,
              job_name: str | None = None, description: str | None = None,
              client_token: str | None = None) -> str:
        """StartModelPackagingJob: the job's name (the job is CREATED; its work runs in the background)."""
        check_project_name(project)
        check_version(model_version)
        if job_name is not None:
            check_job_name(job_name)
        check_description(description, "Description")
        token = check_client_token(client_token)
        if not isinstance(configuration, GreengrassConfiguration):
            raise ValidationException("Configuration must be a Greengrass configuration")
        configuration.check()
        m = self.store.get_model(project, model_version)
        config = configuration if configuration.component_version else GreengrassConfiguration.from_dict(
            {**configuration.to_dict(), "component_version": f"{m.version}.0.0"})
        request = {"ProjectName": project, "ModelVersion": model_version, "JobName": job_name,
                   "Description": description, "Configuration": configuration.to_dict()}
        if token is not None and (first := self.store.recall(
                "StartModelPackagingJob", token, request, resource_id=job_name or project,
                resource_type="MODEL_PACKAGE_JOB")) is not None:
            return str(first["JobName"])  # a repeat gets the first answer
        with self.store.transaction() as db:  # checked here for the order of errors, and again below atomically
            self._check_free(db, project, m.version, m.arn, job_name, config)
        if storage.is_s3(config.output):
            try:
                storage.check_bucket(storage.split_s3(config.output)[0])
            except storage.StorageError as exc:
                raise ValidationException(f"S3OutputLocation: {exc}") from None
        package = storage.join(config.output, f"{config.component_name}-{config.component_version}.zip")
        holder: dict[str, str] = {}

        def run() -> dict[str, Any]:
            name = job_name or _generated_name(project, m.version)
            with self.store.transaction() as db:
                self._check_free(db, project, m.version, m.arn, name, config)
                holder["owner"] = owner = self.store.claim()
                now = round(time.time(), 3)
                db.execute("INSERT INTO packaging_jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (project, name, m.version, now, now, PackagingJobStatus.CREATED.value,
                            "the job is created", description, json.dumps(config.to_dict()),
                            json.dumps({"uri": package}), owner))
            return {"JobName": name}

        out, fresh = (run(), True) if token is None else self.store.remember(
            "StartModelPackagingJob", token, request, run, resource_id=job_name or project,
            resource_type="MODEL_PACKAGE_JOB")
        name = str(out["JobName"])
        if fresh:
            self._start((project, name), lambda: self._package(project, name, m.version, config, package,
                                                               holder["owner"]))
        return name

    @staticmethod
    def _check_free(db: sqlite3.Connection, project: str, version: int, model_arn: str, job_name: str | None,
                    config: GreengrassConfiguration) -> None:
        """ConflictException unless the version has finished training and the names are free."""
        row = db.execute("SELECT status FROM models WHERE project=? AND version=?", (project, version)).fetchone()
        if row is None:
            raise ResourceNotFoundException(f"project {project!r} has no model version {version}",
                                            resource_id=f"{project}/{version}", resource_type="MODEL")
        if row["status"] not in _PACKABLE:
            raise ConflictException(f"model {project}/{version} cannot be packaged while its status is "
                                    f"{row['status']}; it must have finished training", resource_id=model_arn,
                                    resource_type="MODEL", operation_name="StartModelPackagingJob")
        if job_name is not None and db.execute("SELECT 1 FROM packaging_jobs WHERE project=? AND name=?",
                                               (project, job_name)).fetchone():
            raise ConflictException(f"project {project!r} already has a model packaging job {job_name!r}",
                                    resource_id=job_name, resource_type="MODEL_PACKAGE_JOB",
                                    operation_name="StartModelPackagingJob")
        for other in db.execute("SELECT project, name, configuration FROM packaging_jobs WHERE status != ?",
                                (PackagingJobStatus.FAILED.value,)):
            theirs = json.loads(other["configuration"])
            if (theirs["component_name"], theirs["component_version"]) == (config.component_name,
                                                                           config.component_version):
                raise ConflictException(
                    f"component {config.component_name} version {config.component_version} is already the output "
                    f"of model packaging job {other['name']!r} of project {other['project']!r}; choose another "
                    "ComponentVersion", resource_id=str(other["name"]), resource_type="MODEL_PACKAGE_JOB",
                    operation_name="StartModelPackagingJob")

    # -- the job -------------------------------------------------------------------------------
    def _package(self, project: str, name: str, version: int, config: GreengrassConfiguration, package: str,
                 owner: str) -> None:
        failure: str | None = None
        details: dict[str, Any] = {}
        tmp = self.store.home / "artifacts" / project / f".tmp-{owner}-package-{uuid.uuid4().hex[:8]}.zip"
        try:
            self._set(project, name, owner, PackagingJobStatus.RUNNING, f"packaging model version {version}")
            m = self.store.get_model(project, version)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            write_package(tmp, self.store.artifact_dir(project, version), project=project, version=version,
                          backend=m.backend, calibration=m.calibration, config=config, package_uri=package)
            if self.store.get_model(project, version).status not in _PACKABLE:
                raise ResourceNotFoundException(f"model version {version} was deleted while it was packaged")
            storage.upload_file(tmp, package, content_type="application/zip")
            details = {"ComponentVersionArn": (f"arn:aws:greengrass:{self.store.region}:{self.store.account}:"
                                               f"components:{config.component_name}:versions:"
                                               f"{config.component_version}"),
                       "ComponentName": config.component_name, "ComponentVersion": config.component_version}
        except storage.StorageError as exc:
            failure = self.store.redact(f"the package could not be written: {exc}")
        except ResourceNotFoundException as exc:
            failure = f"packaging failed: {exc.message}"
        except Exception as exc:  # anything else must still settle the job
            logger.exception("model packaging job %s/%s failed", project, name)
            failure = self.store.redact(f"packaging failed on an internal error: {type(exc).__name__}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
        try:
            if failure is None:
                self._set(project, name, owner, PackagingJobStatus.SUCCEEDED, f"the package is at {package}",
                          output={"uri": package, "Greengrass": details})
            else:
                self._set(project, name, owner, PackagingJobStatus.FAILED, failure[:1000])
        except Exception:
            logger.exception("could not settle model packaging job %s/%s; it is settled when this process ends",
                             project, name)

    def _set(self, project: str, name: str, owner: str, status: PackagingJobStatus, message: str, *,
             output: dict[str, Any] | None = None) -> None:
        """Move this owner's job to ``status`` (the owner is released when it settles)."""
        settled = status in (PackagingJobStatus.SUCCEEDED, PackagingJobStatus.FAILED)
        with self.store.transaction() as db:
            db.execute("UPDATE packaging_jobs SET status=?, status_message=?, updated=?, owner=?,"
                       " output=COALESCE(?, output) WHERE project=? AND name=? AND owner=? AND status IN (?, ?)",
                       (status.value, message, round(time.time(), 3), None if settled else owner,
                        json.dumps(output) if output else None, project, name, owner, *_BUSY))

    # -- threads --------------------------------------------------------------------------------
    def _start(self, key: tuple[str, str], target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"lvkit-packaging-{key[0]}-{key[1]}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: do it here
            target()
            return
        self._threads[key] = thread
        if self.wait:
            thread.join()

    def wait_for(self, project: str, job_name: str, *, timeout: float | None = None) -> PackagingJobStatus:
        """Wait for this process's job; its status."""
        thread = self._threads.get((project, job_name))
        if thread is not None:
            thread.join(timeout)
        return self.describe(project, job_name).status

    def close(self, timeout: float = 30.0) -> None:
        """Wait for this process's jobs (a job still running afterwards is settled FAILED once the store closes)."""
        for thread in list(self._threads.values()):
            thread.join(timeout)


def _generated_name(project: str, version: int) -> str:
    """``<project>-<version>-<8 hex digits>``, within JobName's pattern and 64 characters."""
    tail = f"-{version}-{uuid.uuid4().hex[:8]}"
    return project.replace("_", "-")[:64 - len(tail)] + tail
