"""The hosting half of :class:`~lvkit.service.LookoutVisionService` (StartModel, StopModel, DetectAnomalies).

:class:`ModelHosting`, the service's base class, owns the versions loaded in this process (their
pools), the locks and threads of their transitions, and the operations that start, stop, host
again, wait for and serve them. It reads the service's settings (``store``, ``device``,
``max_bytes``, ``wait``, ``hosting``, ``quota``, the loader) at each call, so a change after
construction applies to the next call. Pools and quota are :mod:`lvkit.hosting`'s.

Hosting. ``start_model`` moves a TRAINED version to STARTING_HOSTING and loads its backend
in a background thread; when the load succeeds the status becomes HOSTED (HOSTING_FAILED,
with the reason in StatusMessage, when it does not). ``stop_model`` moves HOSTED to
STOPPING_HOSTING, waits for in-flight requests to finish, unloads and sets TRAINED. Both
answer the status at the moment they accept the call (STARTING_HOSTING, STOPPING_HOSTING),
as the service did; with ``wait=True`` (the in-process default) they return only once the
transition is complete. HOSTED is a persisted state: another process over the same store
(the CLI, a notebook) loads its own copy of a HOSTED model on its first request;
:meth:`ModelHosting.rehost` (called when ``lvkit serve`` starts) hosts again every
version left HOSTED, through STARTING_HOSTING.

Capacity. In process (``hosting=None``) the caller's thread runs the model
(:class:`~lvkit.hosting.InlinePool`). With :class:`~lvkit.hosting.HostingOptions` (the
server) each hosted version gets a :class:`~lvkit.hosting.ModelPool`: MinInferenceUnits
worker threads, up to MaxInferenceUnits under load, a bounded queue (ThrottlingException when
full) and dynamic batching.

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

The choices made where the public material is silent (which statuses StartModel and StopModel
accept, DetectAnomalies on a version that is not HOSTED) are listed in :mod:`lvkit.service`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lvkit.backends import Backend
from lvkit.errors import (
    ConflictException,
    InternalServerException,
    ServiceQuotaExceededException,
    StoreNotWritableError,
    ThrottlingException,
)
from lvkit.hosting import HostingOptions, InlinePool, ModelPool, Pool, UnitQuota
from lvkit.images import check_body, check_content_type
from lvkit.shapes import ModelStatus
from lvkit.store import ModelRecord, Store
from lvkit.validation import check_client_token, check_inference_units, check_project_name, check_version

if TYPE_CHECKING:
    from concurrent.futures import Future

    from lvkit.shapes import DetectAnomalyResult

__all__ = ["ModelHosting"]

# the service's logger name, as before hosting moved here: log configuration keyed on it still applies
logger = logging.getLogger("lvkit.service")

Key = tuple[str, int]


class ModelHosting:
    """Hosting for :class:`~lvkit.service.LookoutVisionService` (its base class; see the module docstring).

    The subclass sets the settings declared below (its constructor's parameters) in its
    ``__init__``, which calls ``super().__init__()`` for the state this class owns.
    """

    store: Store
    device: str
    max_bytes: int
    wait: bool
    hosting: HostingOptions | None
    quota: UnitQuota
    _loader: Callable[..., Backend]

    def __init__(self) -> None:
        self._hosted: dict[Key, Pool] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[Key, threading.Lock] = {}
        self._threads: dict[Key, threading.Thread] = {}

    def _model(self, project_name: str, model_version: str) -> ModelRecord:
        """The version's record, its fields checked first (400 before 404); the service's model
        operations use it too."""
        check_project_name(project_name)
        check_version(model_version)
        return self.store.get_model(project_name, model_version)

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


    def _reload_hosted(self, key: Key) -> None:
        """With a version loaded here, give its pool the backend its record now describes (an attached
        or detached recalibrator)."""
        project, version = key
        with self._key_lock(key):
            pool = self._hosted.get(key)
            if pool is not None:  # the workers pick the reloaded backend up on their next batch
                pool.backend = self._load(self.store.get_model(project, version))

    def _unload_all(self) -> None:
        """Drain and drop every loaded backend (statuses stay as they are)."""
        with self._lock:
            pools = list(self._hosted.values())
            self._hosted.clear()
        for pool in pools:
            pool.close(timeout=30.0)
