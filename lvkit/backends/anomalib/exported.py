"""OpenVINOBackend and OnnxBackend: an anomalib version exported to another runtime, answering DetectAnomalies.

A version made by :func:`lvkit.backends.anomalib.export.export_version` holds one network file
(``model.onnx``, or ``model.xml`` + ``model.bin``) and the ``lvkit.json`` of its source version
with an ``export`` record (source version, format, precision, input layout). The network takes
the decoded images as they are, uint8 (B, H, W, 3), and does inside the graph everything
:func:`lvkit.backends.anomalib.models.predict_raw` does around the torch model (scale to [0, 1],
antialiased bilinear resize to the model's side, normalisation, the network, the map resized
back to the image), so it returns the same raw scores (B,) and maps (B, H, W).

Both backends are :class:`~lvkit.backends.anomalib.backend.AnomalibBackend`\\ s with another
``raw``: lvkit's decision (image threshold, Confidence, pixel threshold, region labels) is
applied unchanged; only the network changes. Serving needs numpy and the runtime, neither torch
nor anomalib. A recalibrator attached to the version wraps it in the service, as for every backend.

Not emulated or supported: CUDA or other accelerators for OpenVINO (CPU only); ONNX Runtime on
CUDA only where ``onnxruntime-gpu`` is installed (``device="cuda"``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lvkit.backends import read_version_manifest
from lvkit.backends.anomalib.backend import AnomalibBackend
from lvkit.errors import BackendUnavailableError
from lvkit.images import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["EXTRAS", "ExportedBackend", "OnnxBackend", "OpenVINOBackend", "runtime_version"]

#: exported format -> the lvkit extra that installs its runtime
EXTRAS = {"onnx": "onnx", "openvino": "openvino"}

#: one forward of the exported network: uint8 (B, H, W, 3) -> scores (B,), maps (B, H, W) or None
Runner = Callable[["npt.NDArray[np.uint8]"], "tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]"]


def _missing(fmt: str, exc: ImportError) -> BackendUnavailableError:
    return BackendUnavailableError(f"the {fmt} backend needs its runtime ({exc}); install it with: "
                                   f"pip install 'lvkit[{EXTRAS[fmt]}]'")


def runtime_version(fmt: str) -> str:
    """The installed runtime's version for ``fmt`` ("onnx" or "openvino"); BackendUnavailableError if missing."""
    try:
        if fmt == "openvino":
            import openvino

            return str(openvino.__version__)
        import onnxruntime

        return str(onnxruntime.__version__)
    except ImportError as exc:
        raise _missing(fmt, exc) from exc


def _fixed_batch(run: Runner, n: int) -> Runner:
    """``run`` for a network whose batch came out static (``n``): chunks of ``n``, the last one
    padded with copies of its last image (scores and maps are per image, so padding changes no
    answer). The export declares the batch dynamic, and PatchCore's now is at every size
    (``network.unchunked_search``); this is the fallback for a graph torch.export still fixed,
    and for versions exported before (PatchCore at a 256 px model size had a batch of 2)."""

    def padded(images: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        scores: list[npt.NDArray[np.float32]] = []
        maps: list[npt.NDArray[np.float32]] = []
        for start in range(0, len(images), n):
            chunk = images[start:start + n]
            k = len(chunk)
            if k < n:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], n - k, axis=0)])
            score, amap = run(np.ascontiguousarray(chunk))
            scores.append(np.asarray(score)[:k])
            if amap is not None:
                maps.append(np.asarray(amap)[:k])
        return np.concatenate(scores), (np.concatenate(maps) if maps else None)

    return padded


class ExportedBackend(AnomalibBackend):
    """An exported anomalib version: AnomalibBackend's decision on another runtime's raw outputs.

    Parameters
    ----------
    run : callable
        One forward of the exported network (uint8 (B, H, W, 3) -> scores, maps or None).
    manifest : dict
        The version's ``lvkit.json`` (with its ``export`` record).
    device : str
        Where the network runs (the runtime's name for it).
    max_bytes : int
        Request body limit.
    batch_size : int, default 8
        Images per forward in ``raw`` (as ``predict_raw``).
    """

    #: the name in ``lvkit.backends.BACKENDS`` and the ``export.format`` it loads
    format: ClassVar[str] = ""

    def __init__(self, run: Runner, manifest: dict[str, Any], *, device: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 batch_size: int = 8) -> None:
        super().__init__(run, manifest, device=device, max_bytes=max_bytes)
        self.export: dict[str, Any] = dict(manifest["export"])
        self.batch_size = int(batch_size)

    @classmethod
    def load(cls, artifact_dir: Path, *, device: str = "auto", max_bytes: int = DEFAULT_MAX_BYTES,
             threads: int | None = None, **_: Any) -> ExportedBackend:
        """Open the version in ``artifact_dir`` (``threads``: the runtime's CPU threads, default its own)."""
        manifest = read_version_manifest(artifact_dir)
        export = manifest.get("export") or {}
        if export.get("format") != cls.format:
            raise ValueError(f"{artifact_dir} holds no {cls.format} export (format {export.get('format')!r})")
        run, where = cls._open(Path(artifact_dir) / export["file"], device=device, threads=threads)
        return cls(run, manifest, device=where, max_bytes=max_bytes)

    @classmethod
    def _open(cls, path: Path, *, device: str, threads: int | None) -> tuple[Runner, str]:
        raise NotImplementedError

    def raw(self, batch: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Raw anomaly scores (B,) and anomaly maps (B, H, W) of decoded RGB images (B, H, W, 3)."""
        array = np.ascontiguousarray(batch)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or len(array) == 0:
            raise ValueError(f"expected images of shape (B, H, W, 3), dtype uint8, got {array.dtype} {array.shape}")
        scores, maps = [], []
        for start in range(0, len(array), self.batch_size):
            chunk = array[start:start + self.batch_size]
            score, amap = self.model(chunk)
            scores.append(np.asarray(score, np.float32).reshape(len(chunk)))
            if amap is None:  # a model without maps: NaN, as predict_raw
                amap = np.full(chunk.shape[:3], np.nan, np.float32)
            maps.append(np.asarray(amap, np.float32).reshape(chunk.shape[:3]))
        return np.concatenate(scores), np.concatenate(maps)


class OpenVINOBackend(ExportedBackend):
    """An anomalib version exported to OpenVINO IR (``lvkit export --format openvino``), on CPU.

    fp32 and fp16 IRs run with ``INFERENCE_PRECISION_HINT=f32`` (fp16 weights are decompressed;
    without the hint, CPUs with bf16 units would compute in bf16 and change the scores); int8
    IRs run their quantized convolutions in int8.
    """

    format = "openvino"

    @classmethod
    def _open(cls, path: Path, *, device: str, threads: int | None) -> tuple[Runner, str]:
        if device not in ("auto", "cpu", "CPU"):
            raise ValueError(f"the openvino backend runs on the CPU; expected device 'auto' or 'cpu', got {device!r}")
        try:
            import openvino as ov
        except ImportError as exc:
            raise _missing("openvino", exc) from exc
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        n_out = len(compiled.outputs)
        local = threading.local()  # an infer request serves one call at a time: one per thread

        def run(images: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
            request = getattr(local, "request", None)
            if request is None:
                request = local.request = compiled.create_infer_request()
            out = request.infer([images])
            return out[0].copy(), (out[1].copy() if n_out > 1 else None)

        batch = compiled.input(0).get_partial_shape()[0]
        return (_fixed_batch(run, batch.get_length()) if batch.is_static else run), "CPU"


class OnnxBackend(ExportedBackend):
    """An anomalib version exported to ONNX (``lvkit export --format onnx``), on ONNX Runtime.

    ``device="auto"`` or ``"cpu"``: the CPU execution provider; ``"cuda"``: the CUDA provider,
    which needs ``onnxruntime-gpu``.
    """

    format = "onnx"

    @classmethod
    def _open(cls, path: Path, *, device: str, threads: int | None) -> tuple[Runner, str]:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise _missing("onnx", exc) from exc
        if device in ("auto", "cpu"):
            providers = ["CPUExecutionProvider"]
        elif device == "cuda" or device.startswith("cuda:"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(f"device {device!r} needs onnxruntime-gpu (providers here: "
                                 f"{ort.get_available_providers()})")
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]  # type: ignore[list-item]  # ORT takes (name, options) pairs
        else:
            raise ValueError(f"expected device 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        name = session.get_inputs()[0].name
        n_out = len(session.get_outputs())

        def run(images: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
            out = session.run(None, {name: images})
            return np.asarray(out[0]), (np.asarray(out[1]) if n_out > 1 else None)

        batch = session.get_inputs()[0].shape[0]
        return (_fixed_batch(run, batch) if isinstance(batch, int) else run), "cpu" if device == "auto" else device
