"""ResNet-50/101/152 (bottleneck ResNets) in plain torch, with torchvision's state-dict keys exactly.

torchvision does not import beside the CPU torch here, yet ResNet-50/101 checkpoints saved by it
(GCNZ and DGP extract their features with ResNet-50) must load. This module rebuilds the
architecture - torchvision's "v1.5" (stride 2 in the 3x3 convolution of a bottleneck) - with the same
module names (``conv1``, ``bn1``, ``layer1``..``layer4`` of ``Bottleneck`` blocks with ``downsample``,
``fc``), so a torchvision ``state_dict()`` loads with ``strict=True``.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from kgzsl.errors import KgzslError
from kgzsl.vision.images import ImageTransform

#: blocks per stage of each bottleneck ResNet (He et al. 2016, Table 1).
RESNET_LAYERS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resnet_transform() -> ImageTransform:
    """torchvision's ImageNet evaluation preprocessing: resize 256, centre crop 224, ImageNet mean/std."""
    return ImageTransform(
        resize=256, crop=224, mean=tuple(255.0 * m for m in IMAGENET_MEAN), std=tuple(255.0 * s for s in IMAGENET_STD),
        resample="bilinear",
    )


class Bottleneck(nn.Module):
    r"""Bottleneck residual block: :math:`\mathbf{y} = \mathrm{ReLU}(F(\mathbf{x}) + P(\mathbf{x}))`.

    :math:`F` = 1x1 conv (reduce) -> 3x3 conv (stride ``stride``) -> 1x1 conv (expand x4), each
    followed by batch norm (ReLU after the first two); :math:`P` is the identity, or a strided 1x1
    conv + batch norm (``downsample``) where the shape changes.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * self.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * self.expansion),
            )

    def forward(self, x: Tensor) -> Tensor:
        """[B, inplanes, H, W] -> [B, 4 * planes, H / stride, W / stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    r"""Bottleneck ResNet trunk with global average pooling and a linear classifier.

    .. math::
        \mathbf{f} = \frac{1}{HW} \sum_{h,w} \big(\mathrm{layer4} \circ \dots \circ \mathrm{layer1} \circ
        \mathrm{maxpool} \circ \mathrm{ReLU} \circ \mathrm{BN} \circ \mathrm{conv}_{7\times7}(\mathbf{x})\big)_{:,h,w},
        \qquad \mathbf{z} = \mathbf{W}\mathbf{f} + \mathbf{b}

    ``forward`` returns the 2048-d pooled features :math:`\mathbf{f}`; :meth:`logits` applies ``fc``.
    """

    def __init__(self, arch: str = "resnet50", num_classes: int = 1000) -> None:
        super().__init__()
        if arch not in RESNET_LAYERS:
            raise KgzslError(f"unknown ResNet architecture {arch!r}: choose one of {', '.join(RESNET_LAYERS)}")
        self.arch = arch
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), RESNET_LAYERS[arch]), start=1):
            stride = 1 if index == 1 else 2
            layer = []
            for block in range(blocks):
                layer.append(Bottleneck(inplanes, planes, stride if block == 0 else 1))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{index}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        self.dim = inplanes
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's initialisation: Kaiming-normal convolutions (fan-out), BN weight 1 / bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.fc.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """Images [B, 3, H, W] (ImageNet mean/std normalised) -> pooled features [B, 2048]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """``(owner, conv attribute, batch-norm attribute)`` of every conv followed by a batch norm (for folding)."""
        pairs: list[tuple[nn.Module, str, str]] = [(self, "conv1", "bn1")]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
                if block.downsample is not None:
                    pairs.append((block.downsample, "0", "1"))
        return pairs

    def logits(self, features: Tensor) -> Tensor:
        """Pooled features [B, 2048] -> class logits [B, num_classes]."""
        return self.fc(features)


def strip_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop a ``module.`` prefix (checkpoints saved from ``DataParallel``/DDP) from every key."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return state


def infer_resnet_arch(state: dict[str, Tensor], source: str = "state dict") -> str:
    """Tell resnet50/101/152 from a state dict by counting the blocks of each stage."""
    counts = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for key in state if (m := re.match(rf"layer{stage}\.(\d+)\.", key))}
        counts.append(max(indices) + 1 if indices else 0)
    if "conv1.weight" not in state or 0 in counts:
        raise KgzslError(f"{source} is not a torchvision ResNet state dict (no conv1.weight / layer1..layer4 keys)")
    if "layer1.0.conv3.weight" not in state:
        raise KgzslError(f"{source} is a basic-block ResNet (resnet18/34): only bottleneck ResNets (50/101/152) are supported")
    for arch, layers in RESNET_LAYERS.items():
        if tuple(counts) == layers:
            return arch
    raise KgzslError(f"{source} has {counts} blocks per stage, which matches none of {', '.join(RESNET_LAYERS)}")


def build_resnet(state: dict[str, Tensor], arch: str | None = None, source: str = "state dict") -> ResNet:
    """A :class:`ResNet` with ``state`` loaded ``strict=True``; ``arch`` is inferred from the keys if not given."""
    state = strip_prefix(state)
    found = infer_resnet_arch(state, source)
    if arch is not None and arch != found:
        raise KgzslError(f"{source} holds a {found}, not the {arch} asked for with --arch")
    fc = state.get("fc.weight")
    if fc is None or fc.dim() != 2:
        raise KgzslError(f"{source} has no 2-d fc.weight (the classifier)")
    model = ResNet(found, num_classes=int(fc.shape[0]))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches are raised even with strict=False
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise KgzslError(f"{source} does not match torchvision's {found}: {lines[0] if lines else str(exc).splitlines()[0]}") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing keys (e.g. {', '.join(result.missing_keys[:3])})")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected keys (e.g. {', '.join(result.unexpected_keys[:3])})")
        raise KgzslError(f"{source} does not match torchvision's {found}: {'; '.join(parts)}")
    return model
