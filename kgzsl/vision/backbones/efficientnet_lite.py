"""EfficientNet-Lite0/1/2 as a feature extractor, with its real ImageNet-1k classifier.

The architecture is PyPI ``efficientnet-lite-pytorch`` (plain torch; built with ``from_name`` and
loaded from a local checkpoint, never from the web). Lite models differ from EfficientNet-B: ReLU6
instead of swish, no squeeze-excitation, stem and head not scaled - and they were trained on pixels
normalised as ``(x - 127) / 128`` (0..255 scale), not with the ImageNet mean/std, which costs them
5-15 points of top-1 if used by mistake.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kgzsl.errors import KgzslError
from kgzsl.vision.backbone_identity import KnownBackbone
from kgzsl.vision.images import LITE_CROP_FRACTION, ImageTransform, lite_preprocessing

#: variant -> input resolution (crop size) of the official builder.
LITE_VARIANTS = {known.label: known.resolution for known in KnownBackbone}
CROP_FRACTION = LITE_CROP_FRACTION  # resize the short side to crop / 0.875, then centre-crop (TF reference eval)


def lite_transform(variant: str) -> ImageTransform:
    """The evaluation preprocessing of an EfficientNet-Lite variant: mean 127, std 128 on 0..255 pixels."""
    return lite_preprocessing(LITE_VARIANTS[variant])


class EfficientNetLite(nn.Module):
    r"""EfficientNet-Lite trunk with global average pooling and its linear classifier.

    .. math::
        \mathbf{f} = \frac{1}{HW} \sum_{h,w} \mathrm{ReLU6}(\mathrm{BN}(\mathrm{Conv}_{1\times1}(
        \mathrm{MBConv}_{L} \circ \dots \circ \mathrm{MBConv}_{1}(\mathrm{stem}(\mathbf{x}))))_{:,h,w},
        \qquad \mathbf{z} = \mathbf{W}\mathbf{f} + \mathbf{b}

    ``forward`` returns the 1280-d pooled features :math:`\mathbf{f}` (what the classifier ``_fc``
    consumes); :meth:`logits` applies :math:`\mathbf{W}, \mathbf{b}`. Dropout sits between the two
    only in training mode, so in eval mode ``logits(forward(x))`` equals the package model's output.
    """

    def __init__(self, variant: str = "efficientnet-lite0", num_classes: int = 1000) -> None:
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise KgzslError(f"unknown EfficientNet-Lite variant {variant!r}: choose one of {', '.join(LITE_VARIANTS)}")
        try:
            from efficientnet_lite_pytorch import EfficientNet  # lazy: efficientnet
        except ImportError:
            raise KgzslError("the EfficientNet-Lite architecture is not installed: pip install efficientnet-lite-pytorch") from None
        self.variant = variant
        self.net = EfficientNet.from_name(variant, num_classes=num_classes)
        self.dim = int(self.net._fc.in_features)

    def reset_parameters(self) -> None:
        """Re-initialise every layer with PyTorch's defaults (a random, untrained network)."""
        for module in self.net.modules():
            if module is not self.net and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Load a checkpoint of the package model (keys ``_conv_stem.weight`` ...) or of this wrapper (``net.``)."""
        if not any(key.startswith("net.") for key in state_dict):
            state_dict = {f"net.{key}": value for key, value in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """``(owner, conv attribute, batch-norm attribute)`` of every conv followed by a batch norm (for folding)."""
        net = self.net
        pairs = [(net, "_conv_stem", "_bn0")]
        for block in net._blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        return [*pairs, (net, "_conv_head", "_bn1")]

    def forward(self, x: Tensor) -> Tensor:
        """Images [B, 3, S, S] normalised as (pixel - 127) / 128 -> pooled features [B, 1280]."""
        return torch.flatten(self.net._avg_pooling(self.net.extract_features(x)), 1)

    @property
    def fc(self) -> nn.Linear:
        """The classifier layer (the package names it ``_fc``)."""
        return self.net._fc

    def logits(self, features: Tensor) -> Tensor:
        """Pooled features [B, 1280] -> ImageNet-1k logits [B, 1000] (the model's own classifier)."""
        return self.net._fc(features)
