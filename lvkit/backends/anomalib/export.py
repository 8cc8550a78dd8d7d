"""Export a trained anomalib version to OpenVINO or ONNX as a new model version of its project.

:func:`export_version` (``lvkit export``) traces the version's torch model into one ONNX graph
(:mod:`~lvkit.backends.anomalib.network`) that takes decoded images as uint8 (B, H, W, 3) and
returns the raw scores (B,) and maps (B, H, W) of :func:`~lvkit.backends.anomalib.models.predict_raw`:
the scaling to [0, 1], the antialiased bilinear resize to the model's side, anomalib's
normalisation (its post-processing stays off) and the bilinear resize of the map back to the
image are inside the graph, so a runtime needs nothing around it. The batch is dynamic
(PatchCore's memory-bank search is traced unchunked, which torch.export otherwise fixed to the
example's batch at a 256 px model size; ``export.input.batch`` is null, or the one batch a
graph still came out with, which the backends pad to); height and width are fixed to the
version's image size, or dynamic for a version trained with ``resize=True``. OpenVINO IR is
converted from that graph.

Precisions, and the choices made where the runtimes leave one:

* **fp32**: the traced graph as it is; the decision is the source's.
* **fp16** (OpenVINO only): the IR's weights stored in fp16 (``compress_to_fp16``); on CPU the
  runtime decompresses them and computes in fp32. ONNX fp16 is refused: onnxconverter-common's
  conversion of these graphs does not load in ONNX Runtime (mistyped ``Cast`` nodes), and with
  those nodes kept in fp32 the CPU provider runs fp16 too slowly to serve.
* **int8**: post-training static quantization of the backbone's convolutions only, calibrated
  on the first ``calibration_images`` of the version's ``fit`` split (training normals, paths
  sorted; listed in the manifest). Everything after the backbone stays in fp32: distances,
  matrix products, the anomaly head and its Gaussian blur of the map (quantizing that blur
  flattened the maps: pixel AUROC 0.5 on the tiny test model, 0.95 without). OpenVINO uses
  NNCF (``nncf.quantize``, default preset, every other operation type ignored); ONNX uses ONNX
  Runtime's ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations).

**The decision is re-fitted for fp16 and int8.** A reduced-precision network's raw scores and
maps are on another scale (the tiny test model's int8 scores are about 0.6-0.8 x the fp32 ones
plus an offset; with the source's thresholds its masks were empty), so the image threshold,
Confidence slope, pixel threshold and region labeller are fitted again on the exported
network's outputs for the version's ``validation`` split: the same images and the same code
(:func:`~lvkit.backends.anomalib.train.fit_served_decision`) training used. The labels and
masks come from the version's dataset, reloaded from ``manifest["dataset"]``; a missing image
or dataset refuses an int8 export. fp16 is re-fitted too (the same path, one pass over the
validation images; its thresholds move by about 0.1-0.2%), and keeps the source's decision
when the images are gone. ``export.decision`` records ``refit``, the ``split`` and its
``images``, the ``source`` decision, and ``why_kept`` when it was not re-fitted.

The new version's ``lvkit.json`` is the source's (labels, colours, splits, image size...) with
``backend`` set to the format, the re-fitted ``decision`` and ``labeler``, and an ``export``
record (source version, format, precision, file, input, runtime versions, calibration images,
decision). Its Performance and ``evaluation`` are measured again with the exported network at
its decision on the source's evaluation split when those images are still readable (the
source's are kept in ``export.source_performance``), and copied otherwise
(``export.performance_from`` says which).

Everything checkable is checked before the version is created (format, precision, the source
version and its backend, the packages, the calibration and validation images); a failure during
the export itself leaves a TRAINING_FAILED version, as a failed training does.

Not supported: versions of models without an ONNX-traceable forward, CUDA export.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.backends import read_version_manifest, write_version_manifest
from lvkit.backends.anomalib.exported import EXTRAS, runtime_version
from lvkit.backends.anomalib.network import OPSET, export_onnx, onnx_batch, quantize_onnx, to_openvino
from lvkit.errors import BackendUnavailableError, ValidationException

if TYPE_CHECKING:
    import numpy.typing as npt

    from lvkit.backends.anomalib.decision import Decision
    from lvkit.backends.anomalib.regions import RegionLabeler
    from lvkit.datasets import Sample
    from lvkit.store import Store

__all__ = ["CALIBRATION_IMAGES", "FORMATS", "PRECISIONS", "export_version", "refit_decision"]

FORMATS = ("onnx", "openvino")
PRECISIONS = ("fp32", "fp16", "int8")
#: default number of training images that calibrate an int8 export
CALIBRATION_IMAGES = 32
#: the network file of an exported version, by format
FILES = {"onnx": "model.onnx", "openvino": "model.xml"}


def check_options(format: str, precision: str, calibration_images: int = CALIBRATION_IMAGES) -> None:
    """ValidationException for a format, precision or calibration size lvkit cannot export."""
    if format not in FORMATS:
        raise ValidationException(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if precision not in PRECISIONS:
        raise ValidationException(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if format == "onnx" and precision == "fp16":
        raise ValidationException("fp16 is OpenVINO-only (lvkit export --format openvino --precision fp16); "
                                  "for a smaller or faster ONNX model use int8")
    if isinstance(calibration_images, bool) or not isinstance(calibration_images, int) or calibration_images < 1:
        raise ValidationException(f"calibration_images must be a positive integer, got {calibration_images!r}")


def _require(format: str, precision: str) -> None:
    """BackendUnavailableError naming the extra for a package the export needs."""
    runtime_version(format)
    needs = ["onnx", "onnxscript"] + (["nncf"] if format == "openvino" and precision == "int8" else [])
    for name in needs:
        try:
            __import__(name)
        except ImportError as exc:
            raise BackendUnavailableError(f"exporting to {format} {precision} needs {name} ({exc}); install it "
                                          f"with: pip install 'lvkit[{EXTRAS[format]}]'") from exc


def _source(store: Store, project: str, version: str | int) -> tuple[str, Path, dict[str, Any]]:
    record = store.get_model(project, version)  # ResourceNotFoundException for a missing project or version
    folder = store.artifact_dir(project, record.version)
    try:
        manifest = read_version_manifest(folder)
    except FileNotFoundError:
        raise ValidationException(f"model {project}/{record.version} has no trained artifacts "
                                  f"(status {record.status}); export a trained version") from None
    if manifest.get("backend") != "anomalib":
        source = (manifest.get("export") or {}).get("source_version")
        hint = f" (it was exported from version {source}: export that one)" if source else ""
        raise ValidationException(f"model {project}/{record.version} is a {manifest.get('backend')!r} version; only "
                                  f"versions trained by the anomalib backend can be exported{hint}")
    return str(record.version), folder, manifest


def _calibration(manifest: dict[str, Any], n: int) -> list[str]:
    paths = sorted(str(p) for p in (manifest.get("splits") or {}).get("fit", []))[:n]
    if not paths:
        raise ValidationException("int8 needs the version's training ('fit') images to calibrate; its manifest "
                                  "lists none")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ValidationException(f"int8 calibrates on the version's training images, and {len(missing)} of the "
                                  f"first {len(paths)} are missing (first: {missing[0]}); restore the dataset")
    return paths


def _validation(manifest: dict[str, Any], precision: str) -> list[Sample]:
    """The source's validation samples (labels, masks), in its split's order, for re-fitting the
    decision: its dataset reloaded from ``manifest["dataset"]`` (the detected layout first, then
    the others, since one folder can hold several), the first whose samples include every
    validation image and whose anomaly labels are the version's."""
    from lvkit.datasets import load
    from lvkit.datasets.folder import LAYOUTS
    from lvkit.errors import DatasetError
    from lvkit.shapes import anomaly_name

    paths = [str(p) for p in (manifest.get("splits") or {}).get("validation", [])]
    root = manifest.get("dataset")
    why = f"{precision} re-fits the decision on the version's validation images"
    if not paths or not root:
        raise ValidationException(f"{why}; its manifest lists no validation split or dataset (export it as fp32)")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ValidationException(f"{why}, and {len(missing)} of the {len(paths)} are missing (first: {missing[0]}); "
                                  "restore the dataset")
    for layout in (None, *LAYOUTS):
        try:
            ds = load(root, layout=layout)
        except DatasetError:
            continue
        by_path = {str(s.image_path): s for s in ds.samples}
        labels = [anomaly_name(n) for n in ds.labels] if ds.is_segmentation else []
        if all(p in by_path for p in paths) and labels == list(manifest.get("labels") or []):
            return [by_path[p] for p in paths]
    raise ValidationException(f"{why} with their labels and masks, and the dataset at {root} no longer holds them "
                              "(moved, or its labels changed); restore the dataset")


def _refit_images(manifest: dict[str, Any], precision: str) -> tuple[list[Sample], str | None]:
    """The validation samples to re-fit the decision on, and why there are none: fp32 keeps the
    source's decision, and so does fp16 when the images are gone (int8 is refused instead)."""
    if precision == "fp32":
        return [], "fp32 runs the source's network: its decision holds"
    try:
        return _validation(manifest, precision), None
    except ValidationException as exc:
        if precision == "int8":
            raise
        return [], f"{exc} (fp16 scores are within 1% of the score range of fp32's: the source's decision is kept)"


def refit_decision(backend: Any, validation: list[Sample], labels: list[str]) -> tuple[Decision, RegionLabeler | None]:
    """The decision (and region labeller) re-fitted on ``backend``'s raw outputs for ``validation``.

    The images and the fitting code are training's (:func:`~lvkit.backends.anomalib.train.fit_served_decision`);
    only the network that scores them changes. Maps of images of another size than the first
    (versions trained with ``resize``) are resized to it bilinearly, as the training worker does.

    Parameters
    ----------
    backend : AnomalibBackend
        Any backend with ``raw`` (an exported one, or the source's torch backend).
    validation : list of Sample
        The version's validation split (``manifest["splits"]["validation"]``, in order).
    labels : list of str
        The version's anomaly labels (``manifest["labels"]``; empty: classification).

    Returns
    -------
    decision : Decision
    labeler : RegionLabeler or None
    """
    from lvkit.backends.anomalib.train import fit_served_decision
    from lvkit.images import read_rgb

    scores: list[float] = []
    maps: list[npt.NDArray[np.float32]] = []
    for sample in validation:
        rgb = read_rgb(sample.image_path)
        backend.check_size(rgb)
        score, amap = backend.raw(rgb[None])
        scores.append(float(score[0]))
        maps.append(amap[0] if not maps or amap[0].shape == maps[0].shape else _map_at(amap[0], maps[0].shape))
    return fit_served_decision(validation, labels, np.asarray(scores), np.stack(maps))


def _map_at(amap: npt.NDArray[np.float32], shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(amap, np.float32))[None, None]
    return np.asarray(F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy())


def _remeasure(backend: Any, manifest: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]] | None:
    """(Performance, evaluation) of the exported network at its decision on the source's
    evaluation split, or None when the split or its labels are unknown or an image is no longer
    readable."""
    from lvkit.backends.recalibrated import performance_at
    from lvkit.images import read_rgb

    paths = (manifest.get("splits") or {}).get("evaluation") or []
    labels = (manifest.get("evaluation") or {}).get("labels")
    if not paths or labels is None or len(labels) != len(paths) or not all(Path(p).is_file() for p in paths):
        return None
    verdicts, p_anomaly = [], []
    for path in paths:
        rgb = read_rgb(path)
        backend.check_size(rgb)
        scores, _ = backend.raw(rgb[None])
        verdicts.append(bool(scores[0] > backend.decision.image_threshold))
        p_anomaly.append(round(backend.decision.probability(float(scores[0])), 6))
    return performance_at(labels, verdicts), {"labels": list(labels), "p_anomaly": p_anomaly}


def export_version(
    store_or_home: Store | str | os.PathLike[str] | None,
    project: str,
    version: str | int = "latest",
    *,
    format: str,
    precision: str = "fp32",
    calibration_images: int = CALIBRATION_IMAGES,
    description: str | None = None,
) -> str:
    """Export an anomalib model version to OpenVINO or ONNX as a new version of the same project.

    Parameters
    ----------
    store_or_home : Store or path-like or None
        The store (or its home; None: the default home).
    project : str
        The project.
    version : str or int, default "latest"
        The source version; it must have been trained by the anomalib backend.
    format : {"openvino", "onnx"}
        The runtime the new version runs on (its backend).
    precision : {"fp32", "fp16", "int8"}, default "fp32"
        fp16 is OpenVINO-only; int8 calibrates on the version's training images; both re-fit
        the decision on its validation images (module docstring).
    calibration_images : int, default 32
        How many of the sorted ``fit`` images calibrate an int8 export.
    description : str, optional
        The new version's Description (default: what it was exported from).

    Returns
    -------
    str
        The new model version.

    Raises
    ------
    lvkit.ValidationException
        Unknown format or precision, ONNX fp16, a source version that is not a trained anomalib
        version, missing calibration images, or for int8 missing validation images (or their dataset).
    lvkit.ResourceNotFoundException
        The project or version does not exist.
    lvkit.errors.BackendUnavailableError
        The runtime or the exporter is not installed; the message names the extra.

    Examples
    --------
    Skipped: it traces a trained model (about a minute).

    >>> v = export_version("~/.lvkit", "brick", "1", format="openvino", precision="int8")  # doctest: +SKIP
    >>> lvkit.client().describe_model(ProjectName="brick", ModelVersion=v)  # doctest: +SKIP
    """
    from lvkit.store import Store

    check_options(format, precision, calibration_images)
    store = store_or_home if isinstance(store_or_home, Store) else Store(store_or_home)
    source_version, source_dir, source = _source(store, project, version)
    _require(format, precision)
    calibration = _calibration(source, calibration_images) if precision == "int8" else []
    validation, why_kept = _refit_images(source, precision)
    from lvkit.backends.anomalib.backend import _core

    core = _core()  # BackendUnavailableError without torch/anomalib
    model = core.load_model(source_dir / "model", device="cpu")
    image_size = (int(source["image_size"][0]), int(source["image_size"][1]))
    dynamic_size = bool(source.get("resize", False))
    if dynamic_size and format == "openvino":
        raise ValidationException(f"model {project}/{source_version} accepts images of any size (trained with "
                                  "resize): its graph resizes with ONNX's antialiased Resize, which OpenVINO does not "
                                  "apply when downscaling; export it with --format onnx")

    def build(folder: Path) -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="lvkit-export-") as tmp:
            work = Path(tmp)
            onnx_path = work / "model.onnx"
            outputs = export_onnx(model, onnx_path, image_size=image_size, dynamic_size=dynamic_size)
            batch = onnx_batch(onnx_path)
            target = folder / FILES[format]
            if format == "openvino":
                to_openvino(onnx_path, target, precision, calibration)
            elif precision == "int8":
                quantize_onnx(onnx_path, target, calibration, work)
            else:
                os.replace(onnx_path, target)
        import anomalib
        import torch

        from lvkit.backends import load_backend

        export = {
            "source_version": source_version, "format": format, "precision": precision, "file": FILES[format],
            "input": {"name": "image", "dtype": "uint8", "layout": "NHWC",
                      "size": None if dynamic_size else list(image_size), "batch": batch},
            "outputs": outputs, "opset": OPSET, "runtime": runtime_version(format),
            "torch": torch.__version__, "anomalib": anomalib.__version__, "exported_at": time.time(),
            "calibration": {"split": "fit", "rule": "the first n paths of the split, sorted", "n": len(calibration),
                            "images": calibration} if calibration else None,
            "decision": {"refit": bool(validation), "split": "validation" if validation else None,
                         "images": [str(s.image_path) for s in validation], "source": source["decision"],
                         "why_kept": why_kept},
            "source_performance": source.get("performance"),
        }
        manifest = {**source, "backend": format, "export": export}
        write_version_manifest(folder, manifest)
        backend: Any = load_backend(folder, device="cpu")
        if validation:
            decision, labeler = refit_decision(backend, validation, list(source.get("labels") or []))
            manifest["decision"] = decision.to_dict()
            manifest["labeler"] = labeler.to_dict() if labeler is not None else None
            backend = type(backend)(backend.model, manifest, device=backend.device)
        measured = _remeasure(backend, manifest)
        export["performance_from"] = "source" if measured is None else "exported"
        if measured is not None:
            manifest["performance"], manifest["evaluation"] = measured
        write_version_manifest(folder, manifest)
        return dict(manifest.get("performance") or {})

    text = description or f"{format} {precision} export of version {source_version}"
    return str(store.add_model(project, backend=format, build=build, description=text).version)
