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
(the CLI, a notebook) loads its own copy of a HOSTED model on its first request.

Choices where the public material is silent:

* DetectAnomalies on a model that is not HOSTED: ConflictException (ResourceType MODEL,
  ResourceId the model ARN).
* StartModel is accepted from TRAINED and HOSTING_FAILED; StopModel from HOSTED and
  HOSTING_FAILED. Other statuses: ConflictException naming the current status.
* DeleteProject with model versions: ConflictException.
* Request fields are validated first (400), then resources resolved (404), then the hosting
  state checked (409), then the image decoded by the backend (400).

Not emulated: inference-unit capacity and throttling (``lvkit serve``'s job), KMS, S3 output.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lvkit.backends import Backend, load_backend
from lvkit.errors import (
    ConflictException,
    InternalServerException,
    LookoutVisionError,
    ResourceNotFoundException,
    ValidationException,
)
from lvkit.images import DEFAULT_MAX_BYTES, check_body, check_content_type
from lvkit.shapes import ModelDescription, ModelPerformance, ProjectDescription
from lvkit.store import ModelRecord, Store
from lvkit.validation import (
    check_client_token,
    check_inference_units,
    check_max_results,
    check_project_name,
    check_version,
    decode_next_token,
    encode_next_token,
)

if TYPE_CHECKING:
    import os

    from lvkit.shapes import DetectAnomalyResult

__all__ = ["LookoutVisionService"]

Key = tuple[str, int]


@dataclass
class _Hosted:
    """A backend loaded in this process, with its in-flight request count."""

    backend: Backend
    inflight: int = 0
    idle: threading.Condition = field(default_factory=threading.Condition)


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
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        max_bytes: int = DEFAULT_MAX_BYTES,
        wait: bool = True,
        loader: Callable[..., Backend] = load_backend,
    ) -> None:
        self.store = store if isinstance(store, Store) else Store(store)
        self.device = device
        self.max_bytes = max_bytes
        self.wait = wait
        self._loader = loader
        self._hosted: dict[Key, _Hosted] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[Key, threading.Lock] = {}
        self._threads: dict[Key, threading.Thread] = {}

    # -- projects ---------------------------------------------------------------------------
    def create_project(self, project_name: str, *, client_token: str | None = None) -> ProjectDescription:
        check_project_name(project_name)
        token = check_client_token(client_token)

        def run() -> dict[str, Any]:
            p = self.store.create_project(project_name)
            return {"name": p.name, "arn": p.arn, "created": p.created}

        rec = run() if token is None else self.store.remember(
            "CreateProject", token, {"ProjectName": project_name}, run)
        return ProjectDescription(rec["name"], rec["arn"], rec["created"])

    def describe_project(self, project_name: str) -> ProjectDescription:
        check_project_name(project_name)
        p = self.store.get_project(project_name)
        return ProjectDescription(p.name, p.arn, p.created)

    def list_projects(self, *, next_token: str | None = None,
                      max_results: int | None = None) -> tuple[list[ProjectDescription], str | None]:
        limit, start = check_max_results(max_results), decode_next_token(next_token)
        rows = self.store.list_projects()
        page = [ProjectDescription(p.name, p.arn, p.created) for p in rows[start:start + limit]]
        return page, encode_next_token(start + limit) if start + limit < len(rows) else None

    def delete_project(self, project_name: str, *, client_token: str | None = None) -> str:
        check_project_name(project_name)
        check_client_token(client_token)
        return self.store.delete_project(project_name).arn

    # -- models -----------------------------------------------------------------------------
    def _model(self, project_name: str, model_version: str) -> ModelRecord:
        check_project_name(project_name)
        check_version(model_version)
        return self.store.get_model(project_name, model_version)

    @staticmethod
    def _describe(m: ModelRecord) -> ModelDescription:
        perf = m.performance
        return ModelDescription(
            model_version=str(m.version), model_arn=m.arn, creation_timestamp=m.created, status=m.status,
            status_message=m.status_message, description=m.description,
            performance=ModelPerformance(perf.get("f1_score"), perf.get("recall"), perf.get("precision"))
            if perf else None,
            evaluation_end_timestamp=m.evaluation_end, min_inference_units=m.min_units,
            max_inference_units=m.max_units,
        )

    def describe_model(self, project_name: str, model_version: str) -> ModelDescription:
        return self._describe(self._model(project_name, model_version))

    def list_models(self, project_name: str, *, next_token: str | None = None,
                    max_results: int | None = None) -> tuple[list[ModelDescription], str | None]:
        check_project_name(project_name)
        limit, start = check_max_results(max_results), decode_next_token(next_token)
        rows = self.store.list_models(project_name)
        page = [self._describe(m) for m in rows[start:start + limit]]
        return page, encode_next_token(start + limit) if start + limit < len(rows) else None

    # -- hosting ----------------------------------------------------------------------------
    def _key_lock(self, key: Key) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _load(self, m: ModelRecord) -> Backend:
        return self._loader(self.store.artifact_dir(m.project, m.version), device=self.device,
                            max_bytes=self.max_bytes, calibration=m.calibration)

    def start_model(self, project_name: str, model_version: str, min_inference_units: int, *,
                    max_inference_units: int | None = None, client_token: str | None = None) -> str:
        """Start hosting a model version; returns STARTING_HOSTING."""
        m = self._model(project_name, model_version)
        check_inference_units(min_inference_units, max_inference_units)
        check_client_token(client_token)
        key = (m.project, m.version)
        accepted = self.store.set_status(
            m.project, m.version, "STARTING_HOSTING", "hosting is starting", expect=("TRAINED", "HOSTING_FAILED"),
            min_units=min_inference_units, max_units=max_inference_units)
        if not accepted:
            current = self.store.get_model(m.project, m.version)
            raise ConflictException(
                f"model {m.project}/{m.version} cannot be started while its status is {current.status}",
                resource_id=m.arn, resource_type="MODEL", operation_name="StartModel")

        def host() -> None:
            try:
                backend = self._load(m)
            except Exception as exc:  # any load failure is reported through the model's status
                self.store.set_status(m.project, m.version, "HOSTING_FAILED", f"hosting failed: {exc}"[:1000])
                return
            with self._key_lock(key):
                self._hosted[key] = _Hosted(backend)
            self.store.set_status(m.project, m.version, "HOSTED", "hosted")

        self._run(key, host)
        return "STARTING_HOSTING"

    def stop_model(self, project_name: str, model_version: str, *, client_token: str | None = None) -> str:
        """Stop hosting; in-flight requests finish first. Returns STOPPING_HOSTING."""
        m = self._model(project_name, model_version)
        check_client_token(client_token)
        key = (m.project, m.version)
        if not self.store.set_status(m.project, m.version, "STOPPING_HOSTING", "hosting is stopping",
                                     expect=("HOSTED", "HOSTING_FAILED")):
            current = self.store.get_model(m.project, m.version)
            raise ConflictException(
                f"model {m.project}/{m.version} cannot be stopped while its status is {current.status}",
                resource_id=m.arn, resource_type="MODEL", operation_name="StopModel")

        def unhost() -> None:
            with self._key_lock(key):
                hosted = self._hosted.pop(key, None)
            if hosted is not None:
                with hosted.idle:
                    hosted.idle.wait_for(lambda: hosted.inflight == 0)
            self.store.set_status(m.project, m.version, "TRAINED", "hosting stopped", min_units=None, max_units=None)

        self._run(key, unhost)
        return "STOPPING_HOSTING"

    def _run(self, key: Key, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"lvkit-hosting-{key[0]}-{key[1]}", daemon=True)
        self._threads[key] = thread
        thread.start()
        if self.wait:
            thread.join()

    def wait_for(self, project_name: str, model_version: str, *, timeout: float | None = None) -> str:
        """Wait for this process's pending start/stop of the version to finish; its status."""
        m = self._model(project_name, model_version)
        thread = self._threads.get((m.project, m.version))
        if thread is not None:
            thread.join(timeout)
        return self.store.get_model(m.project, m.version).status

    def detect_anomalies(self, project_name: str, model_version: str, body: bytes,
                         content_type: str) -> DetectAnomalyResult:
        """Run DetectAnomalies on a hosted model version."""
        check_project_name(project_name)
        check_version(model_version)
        check_content_type(content_type)
        body = check_body(body, max_bytes=self.max_bytes)
        m = self.store.get_model(project_name, model_version)
        key = (m.project, m.version)
        if m.status != "HOSTED":
            with self._key_lock(key):
                self._hosted.pop(key, None) if m.status == "TRAINED" else None
            raise ConflictException(
                f"model {m.project}/{m.version} is not hosted (status {m.status}); "
                "call StartModel and wait for HOSTED",
                resource_id=m.arn, resource_type="MODEL")
        hosted = self._acquire(m)
        try:
            return hosted.backend.detect(body, content_type)  # type: ignore[arg-type]  # checked above
        except LookoutVisionError:
            raise
        except Exception as exc:
            raise InternalServerException(f"the model failed on this image: {type(exc).__name__}: {exc}") from exc
        finally:
            with hosted.idle:
                hosted.inflight -= 1
                hosted.idle.notify_all()

    def _acquire(self, m: ModelRecord) -> _Hosted:
        """The loaded backend of a HOSTED version (loaded here on first use), in-flight count taken."""
        key = (m.project, m.version)
        with self._key_lock(key):
            hosted = self._hosted.get(key)
            if hosted is None:  # HOSTED by another process over the same store
                try:
                    hosted = self._hosted[key] = _Hosted(self._load(m))
                except Exception as exc:
                    raise InternalServerException(f"model {m.project}/{m.version} could not be loaded: {exc}") from exc
            with hosted.idle:
                hosted.inflight += 1
        return hosted

    def loaded_backend(self, project_name: str, model_version: str) -> Backend:
        """The backend object serving a HOSTED version in this process (for evaluation tools)."""
        m = self._model(project_name, model_version)
        hosted = self._acquire(m)
        with hosted.idle:
            hosted.inflight -= 1
        return hosted.backend

    def attach_calibration(self, project_name: str, model_version: str,
                           calibration: dict[str, Any] | None) -> None:
        """Serve Confidence through a recalibrator (``lvkit.eval`` ``to_dict()``), or None to detach.

        The verdict (IsAnomalous) is unchanged; Confidence becomes ``p`` or ``1 - p`` of the
        recalibrated P(anomaly). Takes effect on the next request, hosted or not.
        """
        m = self._model(project_name, model_version)
        if calibration is not None:
            from lvkit.eval.calibration import calibrator_from_dict

            try:
                calibrator_from_dict(calibration)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValidationException(f"not a recalibrator lvkit can rebuild: {exc}") from exc
        self.store.set_calibration(m.project, m.version, calibration)
        key = (m.project, m.version)
        with self._key_lock(key):
            hosted = self._hosted.get(key)
            if hosted is not None:  # reload with the new calibration
                self._hosted[key] = _Hosted(self._load(self.store.get_model(m.project, m.version)))

    def close(self) -> None:
        """Drop loaded backends and close the store (statuses stay as they are)."""
        self._hosted.clear()
        self.store.close()
