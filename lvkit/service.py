"""LookoutVisionService: the behaviour of the API, with no HTTP in it.

Resolves ``(project, version)`` to a model version in the :class:`~lvkit.store.Store`,
enforces the hosting lifecycle, and hands DetectAnomalies to the version's backend. Every
operation is a snake_case method taking snake_case arguments and returning lvkit records;
``lvkit.client`` and ``lvkit.server`` translate to and from the wire.

Hosting. ``start_model`` moves a TRAINED version to STARTING_HOSTING and loads its backend
in a background thread; when the load succeeds the status becomes HOSTED (HOSTING_FAILED,
with the reason in StatusMessage, when it does not). ``stop_model`` moves HOSTED to
STOPPING_HOSTING, waits for in-flight requests to finish, unloads and sets TRAINED. Both
answer the status at the moment they accept the call (STARTING_HOSTING, STOPPING_HOSTING),
as the service did; with ``wait=True`` (the in-process default) they return only once the
transition is complete. HOSTED is a persisted state: another process over the same store
(the CLI, a notebook) loads its own copy of a HOSTED model on its first request;
:meth:`LookoutVisionService.rehost` (called when ``lvkit serve`` starts) hosts again every
version left HOSTED, through STARTING_HOSTING.

Capacity. In process (``hosting=None``) the caller's thread runs the model
(:class:`~lvkit.hosting.InlinePool`). With :class:`~lvkit.hosting.HostingOptions` (the
server) each hosted version gets a :class:`~lvkit.hosting.ModelPool`: MinInferenceUnits
worker threads, up to MaxInferenceUnits under load, a bounded queue (ThrottlingException when
full) and dynamic batching.

Idempotency. CreateProject, DeleteProject, StartModel and StopModel (and the dataset operations,
CreateModel, DeleteModel and StartModelPackagingJob) with a ClientToken act once: a repeat with
the same token and request returns the first response (for 8 hours,
:data:`~lvkit.store.TOKEN_TTL_SECONDS`); the same token with another request is a
ConflictException. The token is stored in the transaction that makes the change
(:meth:`~lvkit.store.Store.remember`), so it holds across crashes and processes.

Locks. A version's lock (``_key_lock``) is taken first; under it the store's lock (database
work only), ``self._lock`` (the table of version locks) and the quota's lock may be taken. The
last two are leaves: nothing else is ever taken while either is held. The store's lock is never
held while waiting for a model, a pool or a thread, and pools are closed (which waits for their
workers) and threads joined (``wait=True``) with no lock held.

Quota. MinInferenceUnits/MaxInferenceUnits are worker threads: the versions this process
hosts may reserve at most ``max_inference_units`` units together (MaxInferenceUnits, or
MinInferenceUnits without it; default :func:`~lvkit.hosting.default_max_inference_units`, 4 per core and at
least 8). Beyond it StartModel answers ServiceQuotaExceededException (402), as the service
did for its inference-unit quota; a version HOSTED by another process and loaded here by its
first DetectAnomalies reserves its units too (ThrottlingException with QuotaCode when they are
not free, as DetectAnomalies never answers 402). Anything that fails while a version is being
hosted ends in HOSTING_FAILED with the reason in StatusMessage, and frees what it took; when
the host refuses a thread the transition runs in the caller's thread instead.

Messages sent to clients never carry server paths (:meth:`~lvkit.store.Store.redact`).

Choices where the public material is silent:

* DetectAnomalies on a model that is not HOSTED: ConflictException (ResourceType MODEL,
  ResourceId the model ARN).
* StartModel is accepted from TRAINED and HOSTING_FAILED; StopModel from HOSTED and
  HOSTING_FAILED. Other statuses: ConflictException naming the current status.
* DeleteProject with model versions: ConflictException.
* Request fields are validated first (400), then resources resolved (404), then the hosting
  state checked (409), then the image decoded by the backend (400).

Tags: TagResource/ListTagsForResource/UntagResource take a project or model version ARN of this
store (another region or account: ResourceNotFoundException); at most 200 tags a resource
(ServiceQuotaExceededException beyond); keys starting ``aws:`` are refused.

Datasets are :mod:`lvkit.catalog`'s, CreateModel's training :mod:`lvkit.training_jobs`' and model
packaging jobs :mod:`lvkit.packaging`'s (their choices are listed there); this class hands their
operations on.

Not emulated: KMS.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvkit.backends import Backend, load_backend
from lvkit.catalog import Catalog
from lvkit.errors import (
    ConflictException,
    InternalServerException,
    ResourceNotFoundException,
    ServiceQuotaExceededException,
    StoreNotWritableError,
    ThrottlingException,
    ValidationException,
)
from lvkit.greengrass import GreengrassConfiguration
from lvkit.hosting import HostingOptions, InlinePool, ModelPool, Pool, UnitQuota, default_max_inference_units
from lvkit.images import DEFAULT_MAX_BYTES, check_body, check_content_type
from lvkit.packaging import Packaging
from lvkit.shapes import (
    DatasetDescription,
    DatasetStatus,
    ModelDescription,
    ModelPackagingJob,
    ModelPerformance,
    ModelStatus,
    ProjectDescription,
)
from lvkit.store import ModelRecord, Store
from lvkit.training_jobs import TrainingJobs
from lvkit.validation import (
    MAX_TAGS,
    check_client_token,
    check_inference_units,
    check_max_results,
    check_project_name,
    check_tag_keys,
    check_tags,
    check_version,
    decode_next_token,
    encode_next_token,
    parse_resource_arn,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

    from lvkit.shapes import DetectAnomalyResult

__all__ = ["LookoutVisionService"]

logger = logging.getLogger("lvkit.service")

Key = tuple[str, int]



class LookoutVisionService:
    """The Lookout for Vision API over a store.

    Parameters
    ----------
    store : Store, path-like or None
        The state; a path opens a Store there; None opens ``$LVKIT_HOME``.
    device : str, default "auto"
        Passed to backends that run models ("cpu", "cuda", "auto").
    max_bytes : int, default 8 MiB
        DetectAnomalies body limit.
    wait : bool, default True
        Whether start_model/stop_model return only after the transition completes.
    loader : callable, optional
        ``loader(artifact_dir, **options) -> Backend``; defaults to the manifest's backend.
    hosting : HostingOptions or None, default None
        None runs the model in the caller's thread (in process); options give each hosted
        version worker threads, a bounded queue and batching (``lvkit serve``).
    max_inference_units : int, optional
        The most inference units the versions hosted by this service may reserve together;
        default :func:`~lvkit.hosting.default_max_inference_units` (:attr:`quota`).
    local_files : bool or Path, default True
        Which local files dataset entries may name: any (in process), none (``lvkit serve``'s
        default: a remote client must not make the server copy its files), or those under a folder.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        max_bytes: int = DEFAULT_MAX_BYTES,
        wait: bool = True,
        loader: Callable[..., Backend] = load_backend,
        hosting: HostingOptions | None = None,
        max_inference_units: int | None = None,
        local_files: bool | Path = True,
    ) -> None:
        #: the inference units this service's hosted versions may reserve together
        self.quota = UnitQuota(default_max_inference_units() if max_inference_units is None
                               else max_inference_units)
        self.store = store if isinstance(store, Store) else Store(store)
        self.device = device
        self.max_bytes = max_bytes
        self.wait = wait
        self._loader = loader
        self.hosting = hosting
        self._hosted: dict[Key, Pool] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[Key, threading.Lock] = {}
        self._threads: dict[Key, threading.Thread] = {}
        #: the projects' datasets (:mod:`lvkit.catalog`)
        self.catalog = Catalog(self.store, wait=wait, local_files=local_files)
        #: CreateModel (:mod:`lvkit.training_jobs`)
        self.training = TrainingJobs(self.store, self.catalog, device=device, wait=wait)
        #: model packaging jobs (:mod:`lvkit.packaging`)
        self.packaging = Packaging(self.store, wait=wait)

    # -- projects ---------------------------------------------------------------------------
    def create_project(self, project_name: str, *, client_token: str | None = None) -> ProjectDescription:
        check_project_name(project_name)
        token = check_client_token(client_token)

        def run() -> dict[str, Any]:
            p = self.store.create_project(project_name)
            return {"name": p.name, "arn": p.arn, "created": p.created}

        rec = run() if token is None else self.store.remember(
            "CreateProject", token, {"ProjectName": project_name}, run, resource_id=project_name,
            resource_type="PROJECT")[0]
        return ProjectDescription(rec["name"], rec["arn"], rec["created"])

    def describe_project(self, project_name: str) -> ProjectDescription:
        check_project_name(project_name)
        p = self.store.get_project(project_name)
        datasets = tuple(d.to_wire(metadata=True) for d in self.catalog.of_project(p.name))
        return ProjectDescription(p.name, p.arn, p.created, datasets)

    def list_projects(self, *, next_token: str | None = None,
                      max_results: int | None = None) -> tuple[list[ProjectDescription], str | None]:
        limit, start = check_max_results(max_results), decode_next_token(next_token)
        rows = self.store.list_projects()
        page = [ProjectDescription(p.name, p.arn, p.created) for p in rows[start:start + limit]]
        return page, encode_next_token(start + limit) if start + limit < len(rows) else None

    def delete_project(self, project_name: str, *, client_token: str | None = None) -> str:
        check_project_name(project_name)
        token = check_client_token(client_token)

        def run() -> dict[str, Any]:
            return {"ProjectArn": self.store.delete_project(project_name).arn}

        out = run() if token is None else self.store.remember(
            "DeleteProject", token, {"ProjectName": project_name}, run, resource_id=project_name,
            resource_type="PROJECT")[0]
        return str(out["ProjectArn"])

    # -- datasets (lvkit.catalog) --------------------------------------------------------------
    def create_dataset(self, project_name: str, dataset_type: str, source: str | None = None, *,
                       version_id: str | None = None, client_token: str | None = None) -> DatasetDescription:
        """CreateDataset: empty, or from the manifest at ``source`` (``s3://``, ``file://`` or a path)."""
        return self.catalog.create(project_name, dataset_type, source, version_id=version_id,
                                   client_token=client_token)

    def describe_dataset(self, project_name: str, dataset_type: str) -> DatasetDescription:
        return self.catalog.describe(project_name, dataset_type)

    def list_dataset_entries(self, project_name: str, dataset_type: str,
                             **filters: Any) -> tuple[list[str], str | None]:
        """ListDatasetEntries; ``filters`` are :meth:`lvkit.catalog.Catalog.list_entries`'."""
        return self.catalog.list_entries(project_name, dataset_type, **filters)

    def update_dataset_entries(self, project_name: str, dataset_type: str, changes: bytes, *,
                               client_token: str | None = None) -> DatasetStatus:
        return self.catalog.update(project_name, dataset_type, changes, client_token=client_token)

    def delete_dataset(self, project_name: str, dataset_type: str, *, client_token: str | None = None) -> None:
        self.catalog.delete(project_name, dataset_type, client_token=client_token)

    # -- models -----------------------------------------------------------------------------
    def _model(self, project_name: str, model_version: str) -> ModelRecord:
        check_project_name(project_name)
        check_version(model_version)
        return self.store.get_model(project_name, model_version)

    @staticmethod
    def _describe(m: ModelRecord) -> ModelDescription:
        perf, output = m.performance, m.output or {}
        return ModelDescription(
            model_version=str(m.version), model_arn=m.arn, creation_timestamp=m.created, status=m.status,
            status_message=m.status_message, description=m.description,
            performance=ModelPerformance(perf.get("f1_score"), perf.get("recall"), perf.get("precision"))
            if perf else None,
            evaluation_end_timestamp=m.evaluation_end, min_inference_units=m.min_units,
            max_inference_units=m.max_units, kms_key_id=m.kms_key_id, output_uri=output.get("uri"),
            evaluation_manifest_uri=output.get("EvaluationManifest"),
            evaluation_result_uri=output.get("EvaluationResult"),
        )

    def create_model(self, project_name: str, *, output: str | None, description: str | None = None,
                     kms_key_id: str | None = None, tags: dict[str, str] | None = None,
                     client_token: str | None = None, progress: bool | str = False) -> ModelDescription:
        """CreateModel: train a new version from the project's datasets (:mod:`lvkit.training_jobs`)."""
        return self._describe(self.training.create(project_name, output=output, description=description,
                                                   kms_key_id=kms_key_id, tags=tags, client_token=client_token,
                                                   progress=progress))

    def delete_model(self, project_name: str, model_version: str, *, client_token: str | None = None) -> str:
        """DeleteModel: a version not hosted, starting, stopping or training; returns its ARN."""
        check_project_name(project_name)
        if not isinstance(model_version, str) or model_version == "latest":
            raise ValidationException(f"ModelVersion must be a version number (1, 2, ...), got {model_version!r}")
        check_version(model_version)
        token = check_client_token(client_token)

        def run() -> dict[str, Any]:
            return {"ModelArn": self.store.delete_model(project_name, model_version).arn}

        out = run() if token is None else self.store.remember(
            "DeleteModel", token, {"ProjectName": project_name, "ModelVersion": model_version}, run,
            resource_id=self.store.model_arn(project_name, model_version), resource_type="MODEL")[0]
        return str(out["ModelArn"])

    def describe_model(self, project_name: str, model_version: str) -> ModelDescription:
        return self._describe(self._model(project_name, model_version))

    def list_models(self, project_name: str, *, next_token: str | None = None,
                    max_results: int | None = None) -> tuple[list[ModelDescription], str | None]:
        check_project_name(project_name)
        limit, start = check_max_results(max_results), decode_next_token(next_token)
        rows = self.store.list_models(project_name)
        page = [self._describe(m) for m in rows[start:start + limit]]
        return page, encode_next_token(start + limit) if start + limit < len(rows) else None

    # -- model packaging jobs (lvkit.packaging) -------------------------------------------------
    def start_model_packaging_job(self, project_name: str, model_version: str,
                                  configuration: GreengrassConfiguration, *, job_name: str | None = None,
                                  description: str | None = None, client_token: str | None = None) -> str:
        """StartModelPackagingJob: package the version; returns the JobName.

        ``configuration.output`` is the S3OutputLocation (``s3://bucket/prefix``) or, in process,
        a local folder (an lvkit extension).
        """
        return self.packaging.start(project_name, model_version, configuration, job_name=job_name,
                                    description=description, client_token=client_token)

    def describe_model_packaging_job(self, project_name: str, job_name: str) -> ModelPackagingJob:
        return self.packaging.describe(project_name, job_name)

    def list_model_packaging_jobs(self, project_name: str, *, next_token: str | None = None,
                                  max_results: int | None = None) -> tuple[list[ModelPackagingJob], str | None]:
        return self.packaging.list(project_name, next_token=next_token, max_results=max_results)

    # -- hosting ----------------------------------------------------------------------------
    def _key_lock(self, key: Key) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _load(self, m: ModelRecord) -> Backend:
        """The version's backend, through its recalibrator if one is attached (every backend
        alike: ``lvkit.backends.recalibrated``)."""
        backend = self._loader(self.store.artifact_dir(m.project, m.version), device=self.device,
                               max_bytes=self.max_bytes)
        if m.calibration is not None:
            from lvkit.backends.recalibrated import Recalibrated

            backend = Recalibrated(backend, m.calibration)
        return backend

    def _pool(self, backend: Backend, m: ModelRecord) -> Pool:
        if self.hosting is None:
            return InlinePool(backend, name=f"{m.project}/{m.version}", resource_id=m.arn)
        return ModelPool(backend, min_units=m.min_units or 1, max_units=m.max_units, options=self.hosting,
                         name=f"{m.project}/{m.version}", resource_id=m.arn)

    def _host(self, m: ModelRecord) -> None:
        """Load a STARTING_HOSTING version and make it HOSTED (HOSTING_FAILED when anything fails)."""
        key = (m.project, m.version)
        try:
            pool = self._pool(self._load(m), m)
        except Exception as exc:  # any failure (load, threads, memory) is reported through the status
            with self._key_lock(key):
                self.quota.release(key)
                self.store.set_status(m.project, m.version, ModelStatus.HOSTING_FAILED,
                                      self.store.redact(f"hosting failed: {type(exc).__name__}: {exc}")[:1000],
                                      expect=(ModelStatus.STARTING_HOSTING,))
            return
        with self._key_lock(key):
            old = self._hosted.pop(key, None)
            self._hosted[key] = pool
            hosted = self.store.set_status(m.project, m.version, ModelStatus.HOSTED, "hosted",
                                           expect=(ModelStatus.STARTING_HOSTING,))
            if not hosted:  # the status moved on meanwhile: this load is not wanted
                self._hosted.pop(key, None)
        if old is not None:
            old.close()
        if not hosted:
            pool.close()

    def start_model(self, project_name: str, model_version: str, min_inference_units: int, *,
                    max_inference_units: int | None = None, client_token: str | None = None) -> ModelStatus:
        """Start hosting a model version; returns STARTING_HOSTING."""
        check_project_name(project_name)
        check_version(model_version)
        check_inference_units(min_inference_units, max_inference_units)
        token = check_client_token(client_token)
        m = self._model(project_name, model_version)
        key = (m.project, m.version)

        def run() -> dict[str, Any]:
            accepted = self.store.set_status(
                m.project, m.version, ModelStatus.STARTING_HOSTING, "hosting is starting",
                expect=(ModelStatus.TRAINED, ModelStatus.HOSTING_FAILED), min_units=min_inference_units,
                max_units=max_inference_units)
            if not accepted:
                current = self.store.get_model(m.project, m.version)
                raise ConflictException(
                    f"model {m.project}/{m.version} cannot be started while its status is {current.status}",
                    resource_id=m.arn, resource_type="MODEL", operation_name="StartModel")
            return {"Status": ModelStatus.STARTING_HOSTING.value}

        request = {"ProjectName": project_name, "ModelVersion": model_version,
                   "MinInferenceUnits": min_inference_units, "MaxInferenceUnits": max_inference_units}
        if token is not None and (first := self.store.recall("StartModel", token, request, resource_id=m.arn,
                                                             resource_type="MODEL")) is not None:
            return ModelStatus(first["Status"])  # a repeat gets the first answer, whatever the quota says now

        def host() -> None:
            self._host(self.store.get_model(m.project, m.version))

        with self._key_lock(key):
            previous = self.quota.reserve(key, max_inference_units or min_inference_units, arn=m.arn,
                                          operation="StartModel")
            try:
                status, fresh = (run(), True) if token is None else self.store.remember(
                    "StartModel", token, request, run, resource_id=m.arn, resource_type="MODEL")
            except BaseException:
                self.quota.release(key, previous)
                raise
            if not fresh:  # a repeat that raced the check above: whatever the first call reserved stands
                self.quota.release(key, previous)
            spawned = not fresh or self._spawn(key, host)
        if not spawned:
            host()
        self._settle(key)
        return ModelStatus(status["Status"])

    def stop_model(self, project_name: str, model_version: str, *,
                   client_token: str | None = None) -> ModelStatus:
        """Stop hosting; queued and in-flight requests finish first. Returns STOPPING_HOSTING."""
        check_project_name(project_name)
        check_version(model_version)
        token = check_client_token(client_token)
        m = self._model(project_name, model_version)
        key = (m.project, m.version)

        def unhost() -> None:
            with self._key_lock(key):
                pool = self._hosted.pop(key, None)
            if pool is not None:
                pool.close()  # queued and running requests finish first
            with self._key_lock(key):
                self.quota.release(key)
                self.store.set_status(m.project, m.version, ModelStatus.TRAINED, "hosting stopped", min_units=None,
                                      max_units=None)

        def run() -> dict[str, Any]:
            accepted = self.store.set_status(m.project, m.version, ModelStatus.STOPPING_HOSTING, "hosting is stopping",
                                             expect=(ModelStatus.HOSTED, ModelStatus.HOSTING_FAILED))
            if not accepted:
                current = self.store.get_model(m.project, m.version)
                raise ConflictException(
                    f"model {m.project}/{m.version} cannot be stopped while its status is {current.status}",
                    resource_id=m.arn, resource_type="MODEL", operation_name="StopModel")
            return {"Status": ModelStatus.STOPPING_HOSTING.value}

        with self._key_lock(key):  # no new request reaches the pool once the status has changed
            status, fresh = (run(), True) if token is None else self.store.remember(
                "StopModel", token, {"ProjectName": project_name, "ModelVersion": model_version}, run,
                resource_id=m.arn, resource_type="MODEL")
            spawned = not fresh or self._spawn(key, unhost)
        if not spawned:
            unhost()
        self._settle(key)  # with no lock held: unhost() takes the version's lock
        return ModelStatus(status["Status"])

    def rehost(self) -> list[tuple[str, int]]:
        """Host again every version the store says is HOSTED but this process has not loaded.

        Each goes through STARTING_HOSTING (loading in the background) to HOSTED, with the
        inference units it had. ``lvkit serve`` calls this when it starts. Returns the versions.
        """
        started = []
        for p in self.store.list_projects():
            for m in self.store.list_models(p.name):
                key = (m.project, m.version)
                if m.status != ModelStatus.HOSTED or key in self._hosted:
                    continue
                try:
                    self.quota.reserve(key, m.max_units or m.min_units or 1, arn=m.arn, operation="StartModel")
                    if self.store.set_status(m.project, m.version, ModelStatus.STARTING_HOSTING,
                                             "hosting again after a restart", expect=(ModelStatus.HOSTED,)):
                        again = functools.partial(self._rehost_one, m.project, m.version)
                        if not self._spawn(key, again):
                            again()
                        started.append(key)
                    else:
                        self.quota.release(key)
                except ServiceQuotaExceededException as exc:
                    with contextlib.suppress(StoreNotWritableError):
                        self.store.set_status(m.project, m.version, ModelStatus.HOSTING_FAILED,
                                              f"not hosted again after a restart: {exc.message}",
                                              expect=(ModelStatus.HOSTED,))
                except StoreNotWritableError as exc:
                    # the status cannot move through STARTING_HOSTING: it stays HOSTED, and the version
                    # is loaded by its first DetectAnomalies (submit_detect) instead of now
                    self.quota.release(key)
                    logger.warning("%s/%s stays HOSTED and loads on its first request: %s",
                                   m.project, m.version, exc.message)
        for key in started:
            self._settle(key)
        return started

    def _rehost_one(self, project: str, version: int) -> None:
        self._host(self.store.get_model(project, version))

    def _spawn(self, key: Key, target: Callable[[], None]) -> bool:
        """Run a transition in the background; False when the host refused a thread (the caller
        then runs ``target`` itself, with no lock held)."""
        thread = threading.Thread(target=target, name=f"lvkit-hosting-{key[0]}-{key[1]}", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            logger.warning("no thread for %s/%s's transition: running it in the caller's thread", *key)
            return False
        self._threads[key] = thread
        return True

    def _settle(self, key: Key) -> None:
        """With ``wait=True``, wait for the version's pending transition."""
        thread = self._threads.get(key)
        if self.wait and thread is not None:
            thread.join()

    def wait_for(self, project_name: str, model_version: str, *, timeout: float | None = None) -> ModelStatus:
        """Wait for this process's pending start/stop of the version to finish; its status."""
        m = self._model(project_name, model_version)
        thread = self._threads.get((m.project, m.version))
        if thread is not None:
            thread.join(timeout)
        return self.store.get_model(m.project, m.version).status

    def submit_detect(self, project_name: str, model_version: str, body: bytes,
                      content_type: str) -> Future[DetectAnomalyResult]:
        """Validate a DetectAnomalies request and hand it to the hosted version's workers.

        Field and hosting errors raise here; the future resolves to the result, or to the
        ValidationException (bad image) or InternalServerException (model failure) of the
        request. ThrottlingException when the version's queue is full.
        """
        check_project_name(project_name)
        check_version(model_version)
        check_content_type(content_type)
        body = check_body(body, max_bytes=self.max_bytes)
        m = self.store.get_model(project_name, model_version)
        key = (m.project, m.version)
        stale: Pool | None = None
        with self._key_lock(key):
            pool = self._hosted.get(key)
            if m.status != ModelStatus.HOSTED or pool is None:
                m = self.store.get_model(m.project, m.version)  # re-read under the lock: StopModel may be running
            if m.status == ModelStatus.TRAINED and pool is not None:  # stopped by another process
                stale = self._hosted.pop(key)
                self.quota.release(key)
            if m.status == ModelStatus.HOSTED and pool is None:  # HOSTED by another process over the same store
                pool = self._adopt(m)
        if stale is not None:
            stale.close()  # with no lock held: it waits for its workers
        if m.status != ModelStatus.HOSTED or pool is None:
            raise ConflictException(
                f"model {m.project}/{m.version} is not hosted (status {m.status}); "
                "call StartModel and wait for HOSTED",
                resource_id=m.arn, resource_type="MODEL")
        # outside the lock: an InlinePool runs the model right here. A StopModel that took the
        # pool away meanwhile makes submit() answer ConflictException.
        return pool.submit(body, content_type)  # type: ignore[arg-type]  # checked above

    def _adopt(self, m: ModelRecord) -> Pool:
        """Load a version that is HOSTED by the store but not loaded here (another process hosted
        it, or a read-only home kept it HOSTED); with the version's lock held."""
        key = (m.project, m.version)
        if self.hosting is not None:  # worker threads: they count against the quota
            try:
                self.quota.reserve(key, m.max_units or m.min_units or 1, arn=m.arn, operation="DetectAnomalies")
            except ServiceQuotaExceededException as exc:
                raise ThrottlingException(f"model {m.project}/{m.version} cannot be loaded now: {exc.message}",
                                          quota_code="inference-units", service_code="lookoutvision") from exc
        try:
            pool = self._hosted[key] = self._pool(self._load(m), m)
        except Exception as exc:
            self.quota.release(key)
            raise InternalServerException(self.store.redact(
                f"model {m.project}/{m.version} could not be loaded: {type(exc).__name__}: {exc}")) from exc
        return pool

    def detect_anomalies(self, project_name: str, model_version: str, body: bytes,
                         content_type: str) -> DetectAnomalyResult:
        """Run DetectAnomalies on a hosted model version."""
        return self.submit_detect(project_name, model_version, body, content_type).result()

    def hosted(self) -> dict[str, dict[str, Any]]:
        """The versions loaded in this process: ``"project/version"`` -> pool statistics."""
        with self._lock:
            items = list(self._hosted.items())
        return {f"{p}/{v}": pool.stats() for (p, v), pool in items}

    def loaded_backend(self, project_name: str, model_version: str) -> Backend:
        """The backend object serving a HOSTED version in this process (for evaluation tools)."""
        m = self._model(project_name, model_version)
        key = (m.project, m.version)
        with self._key_lock(key):
            pool = self._hosted.get(key)
            if pool is None:
                if m.status != ModelStatus.HOSTED:
                    raise ConflictException(f"model {m.project}/{m.version} is not hosted (status {m.status})",
                                            resource_id=m.arn, resource_type="MODEL")
                pool = self._adopt(m)
        return pool.backend

    def version_splits(self, project_name: str, model_version: str) -> dict[str, list[str]]:
        """The image paths a trained version used: ``fit``, ``validation`` (chose its thresholds)
        and ``evaluation`` (held out: score it on these). ValidationException for a version
        trained without recorded splits (a recording, a fake model)."""
        from lvkit.backends import read_version_manifest

        m = self._model(project_name, model_version)
        splits = read_version_manifest(self.store.artifact_dir(m.project, m.version)).get("splits")
        if not isinstance(splits, dict):
            raise ValidationException(f"model {m.project}/{m.version} has no recorded splits: it was not "
                                      "trained by lvkit.train")
        return {name: [str(p) for p in paths] for name, paths in splits.items()}

    def attach_calibration(self, project_name: str, model_version: str,
                           calibration: dict[str, Any] | None) -> None:
        """Serve through a recalibrator (``lvkit.eval`` ``to_dict()``), or None to detach.

        The recalibrated P(anomaly) ``p`` decides: IsAnomalous is ``p > 0.5`` and Confidence
        ``max(p, 1 - p)`` (``lvkit.backends.recalibrated``). DescribeModel's Performance becomes
        the one at that operating point on the version's evaluation images, when training
        recorded them; detaching restores the trained one. Takes effect on the next request,
        hosted or not, for every backend.
        """
        from lvkit.backends import read_version_manifest
        from lvkit.backends.recalibrated import operating_point

        if calibration is not None:  # fields first, then resources (see the module docstring)
            from lvkit.eval.calibration import calibrator_from_dict

            try:
                calibrator_from_dict(calibration)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValidationException(f"not a recalibrator lvkit can rebuild: {exc}") from exc
        m = self._model(project_name, model_version)
        manifest = read_version_manifest(self.store.artifact_dir(m.project, m.version))
        performance = manifest.get("performance") or None
        if calibration is not None:
            performance = operating_point(manifest.get("evaluation"), calibration) or performance
        self.store.set_calibration(m.project, m.version, calibration, performance=performance)
        key = (m.project, m.version)
        with self._key_lock(key):
            pool = self._hosted.get(key)
            if pool is not None:  # the workers pick the reloaded backend up on their next batch
                pool.backend = self._load(self.store.get_model(m.project, m.version))

    # -- tags -------------------------------------------------------------------------------
    def _resource(self, resource_arn: object) -> tuple[str, str]:
        """The (ARN, resource type) of an existing project or model version of this store, else
        ResourceNotFoundException; callers validate their other fields before this (400 before 404)."""
        region, account, kind, project, version = parse_resource_arn(resource_arn)
        arn = str(resource_arn)
        if (region, account) != (self.store.region, self.store.account):
            raise ResourceNotFoundException(f"{arn} is not a resource of this service "
                                            f"({self.store.region}, account {self.store.account})",
                                            resource_id=arn, resource_type=kind)
        if version is None:
            self.store.get_project(project)
        else:
            self.store.get_model(project, version)
        return arn, kind

    def tag_resource(self, resource_arn: str, tags: dict[str, str]) -> None:
        """Add or overwrite tags on a project or model version."""
        parse_resource_arn(resource_arn)
        check_tags(tags)
        arn, kind = self._resource(resource_arn)
        if len(set(self.store.get_tags(arn)) | set(tags)) > MAX_TAGS:
            raise ServiceQuotaExceededException(
                f"{arn} would have more than {MAX_TAGS} tags", quota_code="tags-per-resource",
                service_code="lookoutvision", resource_id=arn, resource_type=kind, operation_name="TagResource")
        self.store.set_tags(arn, tags)

    def list_tags_for_resource(self, resource_arn: str) -> dict[str, str]:
        """The tags of a project or model version."""
        arn, _ = self._resource(resource_arn)
        return self.store.get_tags(arn)

    def untag_resource(self, resource_arn: str, tag_keys: list[str]) -> None:
        """Remove tags by key (keys that are not there are ignored)."""
        parse_resource_arn(resource_arn)
        check_tag_keys(tag_keys)
        arn, _ = self._resource(resource_arn)
        self.store.delete_tags(arn, tag_keys)

    def close(self) -> None:
        """Drain and drop loaded backends, close the store (statuses stay as they are)."""
        with self._lock:
            pools = list(self._hosted.values())
            self._hosted.clear()
        for pool in pools:
            pool.close(timeout=30.0)
        self.catalog.close()
        self.training.close()
        self.packaging.close()
        self.store.close()

