"""FastFlow and Reverse Distillation on any timm CNN, for :mod:`lvkit.backends.anomalib.models`.

anomalib's ``Fastflow`` accepts four backbones by name (resnet18, wide_resnet50_2, CaiT, DeiT) and
``ReverseDistillation`` builds its bottleneck and decoder from a ResNet's name, so neither takes
the offline EfficientNet-Lite weights (``local-dir:`` names). lvkit builds each class on
``resnet18`` *without* weights (:data:`PLACEHOLDER`; nothing is downloaded, the network is
discarded) and then replaces what depends on the backbone; anomalib's training step, loss,
forward and anomaly maps stay as they are.

- FastFlow: the feature extractor becomes a :class:`TimmFeatureExtractor` on the chosen layers
  (frozen, as anomalib's), and the LayerNorms and flow blocks are rebuilt for its channels and
  feature-map sizes, measured by one forward pass at ``image_size``.
- Reverse Distillation: the encoder becomes a :class:`TimmFeatureExtractor` on three layers at
  strides 4, 8 and 16 (ResNet's ``layer1``-``layer3``). anomalib's resnet18 bottleneck and
  decoder are kept; trainable 1x1 convolutions map the encoder's channels into the bottleneck and
  the decoder's outputs back to the encoder's channels (identity where they already agree), so
  the teacher stays frozen and only the student side learns, as in the method. ``image_size``
  must be a multiple of 32 (the decoder doubles the bottleneck's 1/32 map three times).

Not emulated: anomalib's own ResNet/transformer paths of these classes (a ``resnet18`` given as
``backbone`` runs through the same replacement, which matches anomalib's FastFlow and adds
identity projections to its Reverse Distillation). torch and anomalib are imported inside the
functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomalib.models.components import AnomalibModule

__all__ = ["MODELS", "PLACEHOLDER", "rebuild"]

#: the models handled here
MODELS = ("fastflow", "reverse_distillation")
#: class options that make the anomalib classes build without a download (replaced afterwards)
PLACEHOLDER: dict[str, dict[str, Any]] = {
    "fastflow": {"backbone": "resnet18", "pre_trained": False},
    "reverse_distillation": {"backbone": "resnet18", "pre_trained": False, "layers": ["layer1", "layer2", "layer3"]},
}
_RD_STRIDES = [4, 8, 16]


def rebuild(module: AnomalibModule, name: str, *, backbone: str, layers: Sequence[str], pretrained: bool,
            image_size: int) -> None:
    """Put the timm ``backbone`` (``layers``) into ``module``, built by its class with :data:`PLACEHOLDER`.

    Raises
    ------
    ValueError
        Reverse Distillation given layers not at strides 4, 8 and 16 (its ``image_size`` must be a
        multiple of 32: :attr:`~lvkit.backends.anomalib.models.ModelSpec.size_multiple`).
    """
    import torch
    from anomalib.models.components import TimmFeatureExtractor

    extractor = TimmFeatureExtractor(backbone=backbone, layers=list(layers), pre_trained=pretrained,
                                     requires_grad=False)
    extractor.eval()
    for parameter in extractor.parameters():  # frozen, as anomalib's own extractors of these models
        parameter.requires_grad = False
    with torch.no_grad():
        shapes = [tuple(f.shape[1:]) for f in extractor(torch.zeros(1, 3, image_size, image_size)).values()]
    if name == "fastflow":
        _fastflow(module, extractor, shapes)
    elif name == "reverse_distillation":
        strides = [int(r) for r in extractor.reductions]
        if strides != _RD_STRIDES:
            msg = (
                f"reverse_distillation needs three layers at strides {_RD_STRIDES} (for the EfficientNet-Lite "
                f"backbones: blocks.1, blocks.2, blocks.4), got {list(layers)} at strides {strides}"
            )
            raise ValueError(msg)
        _reverse_distillation(module.model, extractor, [s[0] for s in shapes])
    else:
        raise ValueError(f"expected one of {MODELS}, got {name!r}")


def _fastflow(module: Any, extractor: Any, shapes: list[tuple[int, ...]]) -> None:
    from anomalib.models.image.fastflow.torch_model import create_fast_flow_block
    from torch import nn

    class _ListFeatures(nn.Module):  # FastflowModel iterates over its extractor's output
        def __init__(self, extractor: nn.Module) -> None:
            super().__init__()
            self.extractor = extractor

        def forward(self, x: Any) -> list[Any]:
            return list(self.extractor(x).values())

    inner = module.model
    inner.feature_extractor = _ListFeatures(extractor)
    inner.norms = nn.ModuleList([nn.LayerNorm(list(shape), elementwise_affine=True) for shape in shapes])
    inner.fast_flow_blocks = nn.ModuleList([
        create_fast_flow_block(list(shape), conv3x3_only=module.conv3x3_only, hidden_ratio=module.hidden_ratio,
                               flow_steps=module.flow_steps)
        for shape in shapes
    ])


def _reverse_distillation(inner: Any, extractor: Any, channels: list[int]) -> None:
    from torch import nn

    widths = [64, 128, 256]  # resnet18's layer1-layer3, what the kept bottleneck and decoder take

    def project(a: int, b: int) -> nn.Module:
        return nn.Identity() if a == b else nn.Conv2d(a, b, kernel_size=1)

    class _Bottleneck(nn.Module):
        def __init__(self, ocbe: nn.Module) -> None:
            super().__init__()
            self.inputs = nn.ModuleList([project(c, w) for c, w in zip(channels, widths, strict=True)])
            self.ocbe = ocbe

        def forward(self, features: list[Any]) -> Any:
            return self.ocbe([p(f) for p, f in zip(self.inputs, features, strict=True)])

    class _Decoder(nn.Module):
        def __init__(self, decoder: nn.Module) -> None:
            super().__init__()
            self.decoder = decoder
            self.outputs = nn.ModuleList([project(w, c) for c, w in zip(channels, widths, strict=True)])

        def forward(self, x: Any) -> list[Any]:
            return [p(f) for p, f in zip(self.outputs, self.decoder(x), strict=True)]

    inner.encoder = extractor
    inner.bottleneck = _Bottleneck(inner.bottleneck)
    inner.decoder = _Decoder(inner.decoder)
