"""The exported network: an anomalib model traced to one ONNX graph, converted to OpenVINO IR, quantized.

:func:`export_onnx` writes the graph :mod:`lvkit.backends.anomalib.export` describes (uint8
images in, raw scores and maps out, pre-processing inside); :func:`to_openvino` converts it
(fp32, fp16 weights, or int8 through NNCF) and :func:`quantize_onnx` quantizes it for ONNX
Runtime. The batch is dynamic: PatchCore's chunked nearest-neighbour search, which made
torch.export fix it at a 256 px model size, is traced unchunked (:func:`unchunked_search`);
:func:`onnx_batch` reads what came out, and the backends pad to a batch that is still static
(``exported._fixed_batch``).

torch, onnx, openvino, nncf and onnxruntime are imported inside the functions; this module
knows nothing of versions, manifests or the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "BACKBONE", "CONVOLUTIONS", "OPSET", "export_onnx", "head_convs", "onnx_batch", "quantize_onnx", "quiet_logs",
    "to_openvino", "unchunked_search",
]

OPSET = 18  # ONNX Resize with antialias needs 18
#: the traced graph's backbone: its weights' names start with this (``Graph.model`` is the
#: anomalib module, whose ``model`` is the torch model with its ``feature_extractor``)
BACKBONE = "model.model.feature_extractor."
#: the OpenVINO operations int8 quantizes (NNCF), as ONNX Runtime quantizes ``Conv``
CONVOLUTIONS = ("Convolution", "GroupConvolution")


@contextlib.contextmanager
def quiet_logs(*names: str) -> Iterator[None]:
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
    with quiet(), quiet_logs("torch.onnx", "onnxscript"), unchunked_search(model):
        program = torch.onnx.export(graph, (example,), None, dynamo=True, input_names=["image"],
                                    output_names=outputs, dynamic_shapes={"images": dims}, opset_version=OPSET,
                                    optimize=False, verbose=False)
        if program is None:  # only when given a file name, which is not the case here
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(path))
    return outputs


@contextlib.contextmanager
def unchunked_search(model: Any) -> Iterator[None]:
    """Inside the block, a PatchCore ``model`` searches its memory bank for all patches at once.

    anomalib's ``PatchcoreModel.nearest_neighbors`` takes ``n = batch x h x w`` patch embeddings
    and branches on ``n <= 1024`` (``DEFAULT_CHUNK_SIZE``), looping over chunks of 1024 rows
    otherwise. At a 256 px model size one image is already 32 x 32 = 1024 patches, so the
    example batch of 2 takes the loop, whose trip count ``range(0, n, 1024)`` torch.export can
    only trace by fixing ``n``: the batch came out static (2). Below 256 px the example fits in
    one chunk and the batch stayed dynamic. The unchunked search is anomalib's own small-``n``
    branch (same distances, same minimum); its cost is memory: the graph holds the
    (batch x h x w, bank) distance matrix at once, 33 MB for 8 images at 256 px and the default
    bank of about 1,000 patches (the backends feed 8 images per forward).
    """
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    inner = getattr(model, "model", None)
    if not isinstance(inner, PatchcoreModel):
        yield
        return

    def nearest_neighbors(embedding: Any, n_neighbors: int) -> tuple[Any, Any]:
        distances = inner.euclidean_dist(embedding, inner.memory_bank)
        if n_neighbors == 1:
            scores, locations = distances.min(1)
        else:
            scores, locations = distances.topk(k=n_neighbors, largest=False, dim=1)
        return scores, locations

    setattr(inner, "nearest_neighbors", nearest_neighbors)  # an instance attribute shadows the method
    try:
        yield
    finally:
        delattr(inner, "nearest_neighbors")


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


def onnx_batch(path: str | os.PathLike[str]) -> int | None:
    """The batch of an ONNX graph's input when it is static, None when it is dynamic."""
    import onnx

    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") else None


def head_convs(path: str | os.PathLike[str]) -> list[str]:
    """The Conv nodes of a traced graph outside the backbone: those whose weights are not the
    feature extractor's (the initializers keep the module path, ``BACKBONE``), such as
    PatchCore's Gaussian blur of the anomaly map."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "Conv" and not n.input[1].startswith(BACKBONE)]


def to_openvino(onnx_path: Path, xml_path: Path, precision: str, calibration: list[str]) -> None:
    """Convert the graph to OpenVINO IR at ``precision`` (int8: NNCF on the backbone's convolutions)."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if precision == "int8":
        import nncf

        from lvkit.backends.anomalib.models import quiet

        head = head_convs(onnx_path)
        # OpenVINO names a convolution it kept apart after its ONNX node ("<node>" or "<node>/WithoutBiases")
        keep = [op.get_friendly_name() for op in model.get_ordered_ops()
                if op.get_type_name() in CONVOLUTIONS and op.get_friendly_name().split("/")[0] in head]
        if len(keep) != len(head):
            raise RuntimeError(f"int8: the anomaly head's convolutions {head} are not all in the OpenVINO model "
                               f"(found {keep}); they would be quantized")
        others = sorted({op.get_type_name() for op in model.get_ordered_ops()} - set(CONVOLUTIONS))
        data = _images(calibration, onnx_batch(onnx_path) or 1)
        with quiet(), quiet_logs("nncf"):
            model = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data),
                                  ignored_scope=nncf.IgnoredScope(names=keep, types=others, validate=False))
    ov.save_model(model, str(xml_path), compress_to_fp16=precision == "fp16")


def quantize_onnx(src: Path, dst: Path, calibration: list[str], work: Path) -> None:
    """Quantize the graph for ONNX Runtime: QDQ int8 on the backbone's convolutions."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # untyped base
        def __init__(self) -> None:
            self.items = iter([{"image": image} for image in _images(calibration, onnx_batch(src) or 1)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.items, None)

    prepared = work / "prepared.onnx"
    with quiet_logs(""):
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=head_convs(prepared),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
