"""Export a trained anomalib version to OpenVINO or ONNX as a new model version of its project.

:func:`export_version` (``lvkit export``) traces the version's torch model into one ONNX graph
that takes decoded images as uint8 (B, H, W, 3) and returns the raw scores (B,) and maps
(B, H, W) of :func:`~lvkit.backends.anomalib.models.predict_raw`: the scaling to [0, 1], the
antialiased bilinear resize to the model's side, anomalib's normalisation (its post-processing
stays off) and the bilinear resize of the map back to the image are inside the graph, so a
runtime needs nothing around it. The batch is dynamic; height and width are fixed to the
version's image size, or dynamic for a version trained with ``resize=True``. OpenVINO IR is
converted from that graph.

Precisions, and the choices made where the runtimes leave one:

* **fp32**: the traced graph as it is.
* **fp16** (OpenVINO only): the IR's weights stored in fp16 (``compress_to_fp16``); on CPU the
  runtime decompresses them and computes in fp32. ONNX fp16 is refused: onnxconverter-common's
  conversion of these graphs does not load in ONNX Runtime (mistyped ``Cast`` nodes), and with
  those nodes kept in fp32 the CPU provider runs fp16 too slowly to serve.
* **int8**: post-training static quantization of the convolutions (the backbone), calibrated on
  the first ``calibration_images`` of the version's ``fit`` split (training normals, paths
  sorted; listed in the manifest). Distances, matrix products and the anomaly head stay in
  fp32: quantizing PatchCore's nearest-neighbour search makes its scores useless. OpenVINO uses
  NNCF (``nncf.quantize``, default preset); ONNX uses ONNX Runtime's ``quantize_static`` (QDQ,
  per-channel int8 weights, uint8 activations). The decision stays the source's, fitted to fp32
  scores, and int8 shifts them: on the tiny test benchmark (PatchCore, 64 px) scores moved by up
  to 0.2-0.4 of their range, verdicts agreed with torch on 72-89% of the images, and the
  source's pixel threshold found no anomalous pixel any more. Re-fitting the decision on the
  validation split for the int8 network is not done.

The new version's ``lvkit.json`` is the source's (decision, labels, colours, labeller, splits,
image size...) with ``backend`` set to the format and an ``export`` record (source version,
format, precision, file, runtime versions, calibration images). Its Performance and
``evaluation`` are measured again with the exported network on the source's evaluation split
when those images are still readable (the source's are kept in ``export.source_performance``),
and copied otherwise (``export.performance_from`` says which): an int8 network's verdicts can
differ from the source's, while the thresholds are the source's.

Everything checkable is checked before the version is created (format, precision, the source
version and its backend, the packages, the calibration images); a failure during the export
itself leaves a TRAINING_FAILED version, as a failed training does.

Not supported: versions of models without an ONNX-traceable forward, CUDA export.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.backends import read_version_manifest, write_version_manifest
from lvkit.backends.anomalib.exported import EXTRAS, runtime_version
from lvkit.errors import BackendUnavailableError, ValidationException

if TYPE_CHECKING:
    import numpy.typing as npt

    from lvkit.store import Store

__all__ = ["CALIBRATION_IMAGES", "FORMATS", "PRECISIONS", "export_onnx", "export_version"]

FORMATS = ("onnx", "openvino")
PRECISIONS = ("fp32", "fp16", "int8")
#: default number of training images that calibrate an int8 export
CALIBRATION_IMAGES = 32
#: the network file of an exported version, by format
FILES = {"onnx": "model.onnx", "openvino": "model.xml"}
OPSET = 18  # ONNX Resize with antialias needs 18


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


@contextlib.contextmanager
def _quiet_logs(*names: str) -> Iterator[None]:
    """Raise these loggers (``""``: the root) to ERROR inside the block (quantizers log per layer)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


# --------------------------------------------------------------------------- the graph


def export_onnx(model: Any, path: str | os.PathLike[str], *, image_size: tuple[int, int],
                dynamic_size: bool = False) -> list[str]:
    """Trace ``model`` (from ``models.load_model``) into ``path``: uint8 (B, H, W, 3) in, raw outputs out.

    Parameters
    ----------
    model : AnomalibModule
        A model of :func:`~lvkit.backends.anomalib.models.load_model` (post-processing off).
    path : path-like
        The ``.onnx`` file to write.
    image_size : (width, height)
        The images' size (an example for a ``dynamic_size`` graph).
    dynamic_size : bool, default False
        Accept any height and width (the version was trained with ``resize=True``).

    Returns
    -------
    list of str
        The graph's outputs: ``["score", "map"]``, or ``["score"]`` for a model without maps.
    """
    import torch
    import torch.nn.functional as F

    from lvkit.backends.anomalib.models import CONFIG_ATTR, quiet

    side = int(getattr(model, CONFIG_ATTR)["image_size"])
    model = model.to("cpu").eval()

    class Graph(torch.nn.Module):  # what predict_raw does around the model, as one graph
        rows: torch.Tensor
        cols: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            width, height = image_size
            # (H, side) and (W, side), each the right operand (OpenVINO's CPU plugin fails to
            # compile fp16-compressed constants as the left operand of a MatMul)
            self.register_buffer("rows", _resize_matrix(height, side))
            self.register_buffer("cols", _resize_matrix(width, side))

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
            batch, height, width = images.shape[0], images.shape[1], images.shape[2]
            x = images.permute(0, 3, 1, 2).float() / 255.0
            if dynamic_size:  # models.resize_batch
                x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
            elif (height, width) != (side, side):  # the same resize as two constant matrix products
                x = torch.matmul(torch.matmul(x, self.cols).transpose(-1, -2), self.rows).transpose(-1, -2)
            out = self.model(x)
            score = out.pred_score.reshape(batch).float()
            if out.anomaly_map is None:
                return (score,)
            amap = out.anomaly_map.float().reshape(batch, 1, *out.anomaly_map.shape[-2:])
            if dynamic_size or tuple(amap.shape[-2:]) != (height, width):
                amap = F.interpolate(amap, size=(height, width), mode="bilinear", align_corners=False)
            return score, amap[:, 0]

    graph = Graph().eval()
    width, height = image_size
    example = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, height, width, 3), dtype=np.uint8))
    with torch.inference_mode():
        outputs = ["score", "map"][: len(graph(example))]
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=1024)}
    if dynamic_size:
        dims.update({1: torch.export.Dim("height", min=16, max=4096), 2: torch.export.Dim("width", min=16, max=4096)})
    with quiet(), _quiet_logs("torch.onnx", "onnxscript"):
        program = torch.onnx.export(graph, (example,), None, dynamo=True, input_names=["image"],
                                    output_names=outputs, dynamic_shapes={"images": dims}, opset_version=OPSET,
                                    optimize=False, verbose=False)
        if program is None:  # only when given a file name, which is not the case here
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(path))
    return outputs


def _resize_matrix(n: int, side: int) -> Any:
    """(n, side): the weights of torch's antialiased bilinear resize of a length-``n`` axis to ``side``.

    The resize is linear and separable, so resizing each unit vector gives its row. ONNX's
    ``Resize`` has an ``antialias`` attribute, but OpenVINO ignores it when downscaling (scores
    off by a quarter of their range on 300 px images into a 128 px model); two matrix products
    give every runtime the same pixels.
    """
    import torch
    import torch.nn.functional as F

    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, 1, n)
    out = F.interpolate(eye, size=(1, side), mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(n, side).float()


def _images(paths: list[str], batch: int = 1) -> list[npt.NDArray[np.uint8]]:
    """Calibration inputs: ``batch`` images each (the network's batch when it came out static;
    the last one padded with copies of its last image)."""
    from lvkit.images import read_rgb

    images = [read_rgb(p) for p in paths]
    chunks = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        chunk += [chunk[-1]] * (batch - len(chunk))
        chunks.append(np.stack(chunk))
    return chunks


def _onnx_batch(path: Path) -> int:
    """The batch of an ONNX graph's input when it is static, else 1."""
    import onnx

    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") else 1


def _to_openvino(onnx_path: Path, xml_path: Path, precision: str, calibration: list[str]) -> None:
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if precision == "int8":
        import nncf

        from lvkit.backends.anomalib.models import quiet

        data = _images(calibration, _onnx_batch(onnx_path))
        with quiet(), _quiet_logs("nncf"):
            model = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data),
                                  ignored_scope=nncf.IgnoredScope(types=["MatMul"], validate=False))
    ov.save_model(model, str(xml_path), compress_to_fp16=precision == "fp16")


def _quantize_onnx(src: Path, dst: Path, calibration: list[str], work: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # untyped base
        def __init__(self) -> None:
            self.items = iter([{"image": image} for image in _images(calibration, _onnx_batch(src))])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.items, None)

    prepared = work / "prepared.onnx"
    with _quiet_logs(""):
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        op_types_to_quantize=["Conv"], activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)


# --------------------------------------------------------------------------- the version


def _remeasure(folder: Path, manifest: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]] | None:
    """(Performance, evaluation) of the exported network on the source's evaluation split, or
    None when the split or its labels are unknown or an image is no longer readable."""
    from lvkit.backends import load_backend
    from lvkit.backends.recalibrated import performance_at
    from lvkit.images import read_rgb

    paths = (manifest.get("splits") or {}).get("evaluation") or []
    labels = (manifest.get("evaluation") or {}).get("labels")
    if not paths or labels is None or len(labels) != len(paths) or not all(Path(p).is_file() for p in paths):
        return None
    backend = load_backend(folder, device="cpu")
    verdicts, p_anomaly = [], []
    for path in paths:
        rgb = read_rgb(path)
        backend.check_size(rgb)  # type: ignore[attr-defined]  # an ExportedBackend
        scores, _ = backend.raw(rgb[None])  # type: ignore[attr-defined]
        verdicts.append(bool(scores[0] > backend.decision.image_threshold))  # type: ignore[attr-defined]
        p_anomaly.append(round(backend.decision.probability(float(scores[0])), 6))  # type: ignore[attr-defined]
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
        fp16 is OpenVINO-only; int8 calibrates on the version's training images (module docstring).
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
        version, missing calibration images.
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
            target = folder / FILES[format]
            if format == "openvino":
                _to_openvino(onnx_path, target, precision, calibration)
            elif precision == "int8":
                _quantize_onnx(onnx_path, target, calibration, work)
            else:
                os.replace(onnx_path, target)
        import anomalib
        import torch

        export = {
            "source_version": source_version, "format": format, "precision": precision, "file": FILES[format],
            "input": {"name": "image", "dtype": "uint8", "layout": "NHWC",
                      "size": None if dynamic_size else list(image_size)},
            "outputs": outputs, "opset": OPSET, "runtime": runtime_version(format),
            "torch": torch.__version__, "anomalib": anomalib.__version__, "exported_at": time.time(),
            "calibration": {"split": "fit", "rule": "the first n paths of the split, sorted", "n": len(calibration),
                            "images": calibration} if calibration else None,
            "source_performance": source.get("performance"),
        }
        manifest = {**source, "backend": format, "export": export}
        write_version_manifest(folder, manifest)
        measured = _remeasure(folder, manifest)
        export["performance_from"] = "source" if measured is None else "exported"
        if measured is not None:
            manifest["performance"], manifest["evaluation"] = measured
        write_version_manifest(folder, manifest)
        return dict(manifest.get("performance") or {})

    text = description or f"{format} {precision} export of version {source_version}"
    return str(store.add_model(project, backend=format, build=build, description=text).version)
