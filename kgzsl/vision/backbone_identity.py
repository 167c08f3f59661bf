"""Which backbone classifiers and features belong to: the one identity every check and record uses.

Modelled on torchvision's weights enums: :class:`KnownBackbone` lists the backbones kgzsl ships weights for
(name, feature size, input resolution). Any backbone, known or a user's state-dict file, is identified by a
:class:`BackboneIdentity`: its name (a known name, else the checkpoint's path), the sha256 prefix of its
classifier (:attr:`kgzsl.vision.backbones.Backbone.fingerprint`: two checkpoints of one architecture differ
there), its feature size and its preprocessing record. Runs, targets files and feature folders record it;
``predict``, ``calibrate``, ``evaluate``, ``targets`` and :class:`kgzsl.Recognizer` compare it. Torch-free, so
the CLI can name the default backbone in ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any


class KnownBackbone(Enum):
    """The backbones whose real ImageNet-1k weights come from a registry package: ``(name, feature size, resolution)``."""

    EFFICIENTNET_LITE0 = ("efficientnet-lite0", 1280, 224)
    EFFICIENTNET_LITE1 = ("efficientnet-lite1", 1280, 240)
    EFFICIENTNET_LITE2 = ("efficientnet-lite2", 1280, 260)

    @property
    def label(self) -> str:
        return self.value[0]

    @property
    def dim(self) -> int:
        return self.value[1]

    @property
    def resolution(self) -> int:
        return self.value[2]


#: the names of the known backbones, in order
KNOWN_BACKBONES = tuple(known.label for known in KnownBackbone)


def known_backbone(name: str) -> KnownBackbone | None:
    """The known backbone called ``name`` (``"efficientnet-lite0"``), or None."""
    return next((known for known in KnownBackbone if known.label == name), None)
#: the backbone of the default runs and of ``kgzsl train`` without ``--backbone``
DEFAULT_BACKBONE = KnownBackbone.EFFICIENTNET_LITE0.label


@dataclass(frozen=True)
class BackboneIdentity:
    """A backbone as records name it: ``name`` (a known name, else the state-dict file's path), ``fingerprint``
    (its classifier's sha256 prefix), and where known its feature size ``dim`` and preprocessing ``transform``."""

    name: str | None
    fingerprint: str | None = None
    dim: int | None = None
    transform: dict[str, Any] | None = None

    @classmethod
    def from_description(cls, description: dict[str, Any] | None) -> BackboneIdentity:
        """The identity of a backbone's ``describe()`` record (as feature folders store it): a known backbone goes
        by its name, a state-dict file by its source path."""
        info = description or {}
        name = info.get("name")
        if name not in KNOWN_BACKBONES and info.get("source"):
            name = info["source"]
        return cls(name, info.get("fingerprint"), info.get("dim"), info.get("transform"))

    @classmethod
    def from_record(cls, meta: dict[str, Any] | None) -> BackboneIdentity:
        """The identity a run's or a targets file's metadata records (``backbone``, ``backbone_fingerprint``)."""
        info = meta or {}
        return cls(info.get("backbone"), info.get("backbone_fingerprint"))

    def record(self) -> dict[str, str | None]:
        """What runs and targets files store: ``{"backbone": name, "backbone_fingerprint": fingerprint}``."""
        return {"backbone": self.name, "backbone_fingerprint": self.fingerprint}

    @property
    def known(self) -> KnownBackbone | None:
        """The known backbone this is, by name (None for a state-dict file)."""
        return next((k for k in KnownBackbone if k.label == self.name), None)

    @property
    def label(self) -> str:
        """How messages name it: a known name, else the file name with its classifier hash."""
        if self.known is not None or not self.fingerprint:
            return str(self.name)
        return f"{Path(str(self.name)).name} (classifier sha256 {self.fingerprint[:8]})"

    def mismatch(self, given: BackboneIdentity) -> tuple[str, str] | None:
        """``(self's label, given's label)`` when ``given`` is not this backbone: compared by classifier fingerprint
        where both have one, else by name where this one is a known backbone (older runs record only the name);
        None when they are the same, or when either side does not say."""
        if self.fingerprint and given.fingerprint:
            if self.fingerprint == given.fingerprint:
                return None
        elif self.known is not None and given.name:
            if self.name == given.name:
                return None
        else:
            return None
        return self.label, given.label

    def same_features(self, given: BackboneIdentity) -> bool:
        """Whether features recorded as this backbone are ``given``'s: the same classifier fingerprint (else name)
        and feature size. Strict: a record that names no backbone is not ``given``'s."""
        same = self.fingerprint == given.fingerprint if self.fingerprint else self.name is not None and self.name == given.name
        return same and (self.dim is None or given.dim is None or self.dim == given.dim)
