"""CreateModel: train a new model version from a project's datasets, in the background.

CreateModel answers at once with the new version TRAINING; a background thread then trains it
from the project's datasets (:meth:`lvkit.catalog.Catalog.training_manifests`: the labeled
entries) and the version becomes TRAINED or TRAINING_FAILED with the reason in StatusMessage
(too few images, a mask whose colours are not in its map, an unreadable image...), as the
service did. With a train dataset only, lvkit splits it into train and test as the service did;
with a test dataset too, the test dataset is the evaluation set (:func:`lvkit.training.plan_splits`).

Training output. After training, lvkit writes what the service wrote to
``OutputConfig.S3Location``: the evaluation manifest (each test line with the model's verdict)
and the evaluation result JSON (the contract's ``EvaluationResult`` shape), under
``<Prefix>/<project>/<version>/`` (the public material names the files, not their folder: we put
each version's in its own so versions never overwrite each other). DescribeModel then returns
``OutputConfig``, ``EvaluationManifest`` and ``EvaluationResult``. Writing them is part of
training: a version whose output cannot be written is TRAINING_FAILED, and the bucket is checked
(HeadBucket) before CreateModel answers, so a missing bucket is a ValidationException at once.

Choosing the model without changing the wire. CreateModel has no field for the model, so lvkit
reads it from the version's tags (kept as ordinary tags too)::

    lvkit:model       an anomalib model lvkit trains (patchcore, the default; padim, stfpm...)
    lvkit:backbone    a timm backbone (default the offline EfficientNet-Lite0)
    lvkit:image-size  the model's input side in pixels (default 256)
    lvkit:epochs      for models trained by gradient descent
    lvkit:resize      "true": accept DetectAnomalies images of any size
    lvkit:seed        seeds the splits and the model (default 0)
    lvkit:option:NAME one of the model's own options (``lvkit.train``'s ``model_kwargs``; the
                      value read as JSON where it parses, else as text): n_features=100 for
                      PaDiM, teacher_weights and imagenet_dir for EfficientAD...

Another ``lvkit:`` key is a ValidationException naming these, and so is an option the model
does not take. The options that name files (:data:`PATH_OPTIONS`) are read by the server, so
they follow its local-files rule: ``lvkit serve`` refuses them unless started with
``--local-files DIR`` and the path is inside DIR (in process, any path).

``KmsKeyId`` is accepted, checked against the API's pattern, stored and returned by
DescribeModel; lvkit encrypts nothing with it (its copies live in ``$LVKIT_HOME``, protected by
the file system). ``Description`` follows the API's rule (1 to 500 of ``[0-9A-Za-z.\\-_]``).

Imports ``lvkit.errors``, ``lvkit.validation``, ``lvkit.shapes``, ``lvkit.store``,
``lvkit.storage``, ``lvkit.catalog``, ``lvkit.training`` and ``lvkit.datasets``; the anomalib
trainer lazily.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lvkit import storage
from lvkit.backends.anomalib.construction import PATH_OPTIONS
from lvkit.catalog import Catalog
from lvkit.datasets.manifest import load_manifests
from lvkit.errors import ValidationException
from lvkit.shapes import ModelStatus
from lvkit.store import ModelRecord, Store
from lvkit.training import TrainedVersion, Trainer, TrainingPlan, build_version, check_dataset
from lvkit.validation import check_client_token, check_project_name, check_s3_location, check_tags

__all__ = ["MODEL_TAGS", "OPTION_TAG", "PATH_OPTIONS", "ModelOptions", "TrainingJobs", "check_description",
           "check_kms_key_id", "option_value", "options_from_tags", "output_from_wire", "pixel_class_metrics"]

logger = logging.getLogger("lvkit.training_jobs")

#: the tags that choose what CreateModel trains, and what each sets
MODEL_TAGS = {"lvkit:model": "model", "lvkit:backbone": "backbone", "lvkit:image-size": "image_size",
              "lvkit:epochs": "epochs", "lvkit:resize": "resize", "lvkit:seed": "seed"}
#: the prefix of the tags that set one of the model's own options
OPTION_TAG = "lvkit:option:"
_DESCRIPTION = re.compile(r"[0-9A-Za-z.\-_]{1,500}")
_KMS = re.compile(r"[A-Za-z0-9][A-Za-z0-9:_/+=,@.-]{0,2047}")


def output_from_wire(output_config: object) -> str:
    """CreateModel's ``OutputConfig`` -> its ``s3://bucket/prefix`` location.

    >>> output_from_wire({"S3Location": {"Bucket": "runs", "Prefix": "lvkit/"}})
    's3://runs/lvkit/'
    """
    if not isinstance(output_config, dict) or set(output_config) != {"S3Location"}:
        raise ValidationException('OutputConfig must be {"S3Location": {"Bucket": ..., "Prefix": ...}}')
    bucket, prefix = check_s3_location(output_config["S3Location"], "OutputConfig")
    return storage.s3_uri(bucket, prefix)


def check_description(description: object) -> str | None:
    """Description: 1 to 500 of ``[0-9A-Za-z.\\-_]`` (the API's ModelDescriptionMessage), or None."""
    if description is None:
        return None
    if not isinstance(description, str) or not _DESCRIPTION.fullmatch(description):
        raise ValidationException(f"Description {str(description)[:64]!r} is invalid: 1 to 500 letters, digits, "
                                  "'.', '-' and '_'")
    return description


def check_kms_key_id(key: object) -> str | None:
    """KmsKeyId: the API's pattern, or None."""
    if key is None:
        return None
    if not isinstance(key, str) or not _KMS.fullmatch(key):
        raise ValidationException(f"KmsKeyId {str(key)[:64]!r} is not a KMS key id, ARN or alias")
    return key


@dataclass(frozen=True)
class ModelOptions:
    """What a CreateModel trains: the trainer and the options of the plan."""

    trainer: Trainer
    seed: int = 0
    resize: bool = False


def _int_tag(tags: Mapping[str, str], key: str, default: int | None) -> int | None:
    if key not in tags:
        return default
    if not re.fullmatch(r"[0-9]{1,6}", tags[key]):
        raise ValidationException(f"tag {key} must be a whole number, got {tags[key][:32]!r}")
    return int(tags[key])


def option_value(name: str, text: str) -> Any:
    """Model option ``name``'s value from text: JSON where it parses (``"100"`` -> 100), else the
    text; an option that names a file (:data:`PATH_OPTIONS`) is always the text as given.

    >>> option_value("n_features", "100"), option_value("lr", "0.5"), option_value("pad_maps", "true")
    (100, 0.5, True)
    >>> option_value("teacher_weights", "100"), option_value("note", "/data/teacher.pth")
    ('100', '/data/teacher.pth')
    >>> option_value("lr", "NaN")
    Traceback (most recent call last):
    lvkit.errors.ValidationException: ... option lr: 'NaN' is not a finite number
    """
    if name in PATH_OPTIONS:
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationException(f"option {name}: {text[:32]!r} is not a finite number")
    return value


def _local_path(name: str, value: str, local_files: bool | Path) -> str:
    """The absolute, symlink-free path an option names, once the server's rule allows it."""
    if local_files is False:
        raise ValidationException(f"tag {OPTION_TAG}{name} names a file on this server, which reads none: start "
                                  "lvkit serve with --local-files DIR and give a path inside DIR")
    real = os.path.realpath(os.path.expanduser(value))  # what the training will read: it gets this path
    if local_files is not True and not Path(real).is_relative_to(os.path.realpath(local_files)):
        raise ValidationException(f"tag {OPTION_TAG}{name}: {value[:200]!r} is outside the folder this server "
                                  "reads local files from (--local-files)")
    return real


def options_from_tags(tags: Mapping[str, str], *, device: str = "auto",
                      local_files: bool | Path = True) -> ModelOptions:
    """The model a CreateModel trains, from its ``lvkit:`` tags (module docstring).

    ``local_files`` is the server's rule for the options that name files (:data:`PATH_OPTIONS`):
    True reads any path, False none, a folder only paths inside it.
    """
    unknown = sorted(k for k in tags if k.startswith("lvkit:") and k not in MODEL_TAGS
                     and not (k.startswith(OPTION_TAG) and len(k) > len(OPTION_TAG)))
    if unknown:
        raise ValidationException(f"unknown lvkit tag {unknown[0]!r}: the tags that choose the model are "
                                  f"{', '.join(MODEL_TAGS)} and {OPTION_TAG}NAME")
    model_kwargs = {k[len(OPTION_TAG):]: option_value(k[len(OPTION_TAG):], v) for k, v in tags.items()
                    if k.startswith(OPTION_TAG)}
    for name in sorted(PATH_OPTIONS & set(model_kwargs)):
        if model_kwargs[name]:  # empty: the trainer's check says so
            model_kwargs[name] = _local_path(name, model_kwargs[name], local_files)
    resize = tags.get("lvkit:resize", "false").lower()
    if resize not in ("true", "false"):
        raise ValidationException(f"tag lvkit:resize must be true or false, got {resize[:16]!r}")
    from lvkit.backends.anomalib.train import AnomalibTrainer

    trainer = AnomalibTrainer(model=tags.get("lvkit:model", "patchcore"), backbone=tags.get("lvkit:backbone"),
                              image_size=_int_tag(tags, "lvkit:image-size", 256) or 0, model_kwargs=model_kwargs,
                              epochs=_int_tag(tags, "lvkit:epochs", None), device=device)
    return ModelOptions(trainer, seed=_int_tag(tags, "lvkit:seed", 0) or 0, resize=resize == "true")


def pixel_class_metrics(folder: Path, plan: TrainingPlan, *, device: str = "cpu") -> list[dict[str, Any]]:
    """The evaluation result's ``PixelAnomalyClassMetrics``: per anomaly label, precision, recall
    and F1 of finding the label in a test image, and its average IoU (AIOU).

    The version in ``folder`` answers each evaluation image as DetectAnomalies would; a label is
    found in an image when the answer's mask has a pixel of it, and present when the image's
    true mask has one. AIOU is :func:`lvkit.eval.per_label_iou` (macro) over the images where
    the label is present or found. Empty for a classification version. The service's exact
    definitions were not public; these are lvkit's.
    """
    if not plan.labels:
        return []
    from lvkit.backends import load_backend
    from lvkit.backends.recalibrated import performance_at
    from lvkit.datasets import read_label_masks
    from lvkit.eval.masks import per_label_iou
    from lvkit.eval.report_masks import predicted_label_masks
    from lvkit.shapes import SUFFIX_TYPES, anomaly_name

    backend = load_backend(folder, device=device)
    colors = dict(zip(plan.labels, plan.colors))
    truth, found = [], []
    for sample in plan.splits["evaluation"]:
        result = backend.detect(sample.image_path.read_bytes(), SUFFIX_TYPES[sample.image_path.suffix.lower()])
        true = read_label_masks(sample) if sample.mask_path is not None else {}
        truth.append({anomaly_name(label): mask for label, mask in true.items()})
        found.append(predicted_label_masks(result.anomaly_mask, colors))
    ious = per_label_iou(truth, found, labels=plan.labels)
    rows = []
    for label in plan.labels:
        present = [int(bool(t.get(label, np.zeros(1, bool)).any())) for t in truth]
        detected = [bool(f.get(label, np.zeros(1, bool)).any()) for f in found]
        scores = performance_at(present, detected)
        rows.append({"ClassName": label, "Precision": scores.get("precision"), "Recall": scores.get("recall"),
                     "F1Score": scores.get("f1_score"), "AIOU": None if np.isnan(ious[label]) else ious[label]})
    return rows


class TrainingJobs:
    """CreateModel over a store and its catalog.

    Parameters
    ----------
    store, catalog
        The state.
    device : str
        Where anomalib trains.
    wait : bool
        Whether :meth:`create` returns only when training has ended.
    options : callable
        ``options(tags, device=..., local_files=...) -> ModelOptions``; default :func:`options_from_tags`.
    max_trainings : int, default 1
        Trainings run at once; later ones wait their turn, TRAINING (each uses every core).
    """

    def __init__(self, store: Store, catalog: Catalog, *, device: str = "auto", wait: bool = True,
                 options: Callable[..., ModelOptions] = options_from_tags, max_trainings: int = 1) -> None:
        self.store, self.catalog, self.device, self.wait = store, catalog, device, wait
        self._options = options
        self._threads: dict[tuple[str, int], threading.Thread] = {}
        self._slots = threading.Semaphore(max_trainings)

    def create(self, project: str, *, output: str | None, description: str | None = None,
               kms_key_id: str | None = None, tags: Mapping[str, str] | None = None,
               client_token: str | None = None, progress: bool | str = False) -> ModelRecord:
        """CreateModel: the new version, as it was when the call was answered (TRAINING).

        ``output`` is the OutputConfig location (``s3://bucket/prefix``; in process also a
        local folder), or None to write nothing outside the version.
        """
        check_project_name(project)
        check_description(description)
        check_kms_key_id(kms_key_id)
        token = check_client_token(client_token)
        tags = check_tags(dict(tags or {})) if tags else {}
        try:
            options = self._options(tags, device=self.device, local_files=self.catalog.local_files)
            options.trainer.check()
        except ImportError as exc:  # the anomalib extra is optional
            raise ValidationException(f"this lvkit cannot train: {exc.name or exc} is not installed "
                                      "(pip install 'lvkit[anomalib]')") from None
        self.store.get_project(project)
        self.catalog.check_trainable(project)
        if output is not None and storage.is_s3(output):
            try:
                storage.check_bucket(storage.split_s3(output)[0])
            except storage.StorageError as exc:
                raise ValidationException(f"OutputConfig: {exc}") from None
        request = {"ProjectName": project, "Output": output, "Description": description, "KmsKeyId": kms_key_id,
                   "Tags": tags}

        def run() -> dict[str, Any]:
            def tag(db: Any, version: int) -> None:
                self.catalog.check_trainable(project)  # again, in the transaction: no update slipped in
                arn = self.store.model_arn(project, version)
                db.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", [(arn, k, v) for k, v in tags.items()])

            version = self.store.reserve_model(project, backend=options.trainer.backend, description=description,
                                               kms_key_id=kms_key_id, output={"uri": output} if output else None,
                                               before=tag)
            return {"version": version}

        out, fresh = (run(), True) if token is None else self.store.remember(
            "CreateModel", token, request, run, resource_id=project, resource_type="PROJECT")
        version = int(out["version"])
        answer = self.store.get_model(project, version)
        if fresh:
            thread = threading.Thread(target=self._train, args=(project, version, options, output, progress),
                                      name=f"lvkit-training-{project}-{version}", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: train here
                self._train(project, version, options, output, progress)
            else:
                self._threads[(project, version)] = thread
                if self.wait:
                    thread.join()
        if answer.status != ModelStatus.TRAINING:  # a repeat after training: the first answer said TRAINING
            answer = replace(answer, status=ModelStatus.TRAINING, status_message="training in progress")
        return answer

    def _train(self, project: str, version: int, options: ModelOptions, output: str | None,
               progress: bool | str) -> None:
        locations: dict[str, Any] = {}

        def build(folder: Path) -> dict[str, float]:
            with tempfile.TemporaryDirectory(prefix="lvkit-train-") as staging:  # the manifests only
                manifests, originals = self.catalog.training_manifests(project, Path(staging))
                dataset = load_manifests(self.store.home / "datasets" / project, manifests)
            plan = check_dataset(dataset, resize=options.resize, seed=options.seed)
            performance, trained = build_version(options.trainer, plan, folder, weights_dir=self.store.home / "weights",
                                                 progress=progress)
            if output is not None:
                locations.update(self._write_output(project, version, output, plan, trained, performance, originals,
                                                    folder))
            return performance

        try:  # every failure, from the first step on, settles the version TRAINING_FAILED (build_model)
            with self._slots:  # one training at a time: each uses every core
                self.store.build_model(project, version, build, output=locations)  # filled by build()
        except Exception:
            logger.info("training %s/%s failed", project, version, exc_info=True)

    def _write_output(self, project: str, version: int, output: str, plan: TrainingPlan, trained: TrainedVersion,
                      performance: dict[str, float], originals: Mapping[str, str],
                      folder_of_version: Path) -> dict[str, Any]:
        """Write the evaluation manifest and result; their locations (DescribeModel's)."""
        from lvkit.eval.ranking import average_precision, image_auroc

        folder = storage.join(output, project, str(version))
        manifest_uri = storage.join(folder, f"EvaluationManifest-{project}.json")
        result_uri = storage.join(folder, f"EvaluationResult-{project}.json")
        samples = plan.splits["evaluation"]
        p = trained.evaluation_p_anomaly
        lines = []
        for i, sample in enumerate(samples):
            record = json.loads(originals[str(sample.image_path)])
            record["anomaly-label-detected"] = int(bool(trained.evaluation_anomalous[i]))
            record["anomaly-label-detected-metadata"] = {"type": "lvkit/evaluation", "p-anomaly": (
                round(float(p[i]), 6) if p is not None else None)}
            lines.append(json.dumps(record))
        truth = [int(s.label) for s in samples]
        scores = None if p is None or not 0 < sum(truth) < len(truth) else p
        end = time.time()
        result = {
            "Version": 1,
            "EvaluationDetails": {
                "ModelArn": self.store.model_arn(project, version),
                "EvaluationEndTimestamp": datetime.fromtimestamp(end, timezone.utc).isoformat(),
                "NumberOfTrainingImages": len(plan.splits["fit"]) + len(plan.splits["validation"]),
                "NumberOfTestingImages": len(samples),
            },
            "AggregatedEvaluationResults": {"Metrics": {
                "ROCAUC": None if scores is None else image_auroc(truth, scores),
                "AveragePrecision": None if scores is None else average_precision(truth, scores),
                "Precision": performance.get("precision"), "Recall": performance.get("recall"),
                "F1Score": performance.get("f1_score"),
                "PixelAnomalyClassMetrics": pixel_class_metrics(folder_of_version, plan),
            }},
        }
        try:
            storage.write_bytes(manifest_uri, "".join(line + "\n" for line in lines).encode(),
                                content_type="application/json")
            storage.write_bytes(result_uri, json.dumps(result, indent=2).encode(), content_type="application/json")
        except storage.StorageError as exc:
            raise RuntimeError(f"the training output could not be written: {exc}") from None
        return {"uri": output, "EvaluationManifest": manifest_uri, "EvaluationResult": result_uri}

    def wait_for(self, project: str, version: int, timeout: float | None = None) -> None:
        """Wait for this process's training of the version."""
        thread = self._threads.get((project, version))
        if thread is not None:
            thread.join(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Wait a while for trainings in progress (a training cut short by the process's end is
        TRAINING_FAILED when the store is next opened)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
