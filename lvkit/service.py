"""LookoutVisionService: the behaviour of the API, with no HTTP in it.

Resolves ``(project, version)`` to a model version in the :class:`~lvkit.store.Store`,
enforces the hosting lifecycle, and hands DetectAnomalies to the version's backend. Every
operation is a snake_case method taking snake_case arguments and returning lvkit records;
``lvkit.client`` and ``lvkit.server`` translate to and from the wire.

Hosting (StartModel, StopModel, DetectAnomalies: the lifecycle, capacity, quota and locks) is
:class:`~lvkit.service_hosting.ModelHosting`'s, this class's base; its module docstring describes it.

Idempotency. CreateProject, DeleteProject, StartModel and StopModel (and the dataset operations,
CreateModel, DeleteModel and StartModelPackagingJob) with a ClientToken act once: a repeat with
the same token and request returns the first response (for 8 hours,
:data:`~lvkit.store.TOKEN_TTL_SECONDS`); the same token with another request is a
ConflictException. The token is stored in the transaction that makes the change
(:meth:`~lvkit.store.Store.remember`), so it holds across crashes and processes.

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

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lvkit.backends import Backend, load_backend
from lvkit.catalog import Catalog
from lvkit.errors import ResourceNotFoundException, ServiceQuotaExceededException, ValidationException
from lvkit.greengrass import GreengrassConfiguration
from lvkit.hosting import HostingOptions, UnitQuota, default_max_inference_units
from lvkit.images import DEFAULT_MAX_BYTES
from lvkit.packaging import Packaging
from lvkit.service_hosting import ModelHosting
from lvkit.shapes import (
    DatasetDescription,
    DatasetStatus,
    ModelDescription,
    ModelPackagingJob,
    ModelPerformance,
    ProjectDescription,
)
from lvkit.store import ModelRecord, Store
from lvkit.training_jobs import TrainingJobs
from lvkit.validation import (
    MAX_TAGS,
    check_client_token,
    check_max_results,
    check_project_name,
    check_tag_keys,
    check_tags,
    check_version,
    decode_next_token,
    encode_next_token,
    parse_resource_arn,
)

__all__ = ["LookoutVisionService"]


class LookoutVisionService(ModelHosting):
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
        super().__init__()  # the loaded versions, their locks and threads (lvkit.service_hosting)
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

    # -- hosting: start_model, stop_model, rehost, wait_for, submit_detect, detect_anomalies, hosted and
    # loaded_backend are inherited from ModelHosting (lvkit.service_hosting)

    # -- trained versions: recorded splits, calibration --------------------------------------------
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
        self._reload_hosted((m.project, m.version))

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
        self._unload_all()
        self.catalog.close()
        self.training.close()
        self.packaging.close()
        self.store.close()
