"""ONNX Runtime as the CPU engine of a backbone's forward pass: fp32 (the same features as torch to ~1e-6, faster)
and int8 (static QDQ quantisation, per-channel weights, VNNI kernels; an option, not bit-close to fp32).

The ONNX model is exported locally at first use from the real weights (the inference copy: batch norms folded)
and cached under ``<kgzsl cache>/models/onnx``, named by a key that hashes the weights, the precision, the
calibration photos (int8) and the versions of torch, onnx and onnxruntime; the key is also stored in the model's
metadata, so a file that is stale, truncated or corrupt is rebuilt. Every file is written atomically.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import ImageOps

from kgzsl.core.atomic import staged_file
from kgzsl.core.resources import cache_dir
from kgzsl.errors import KgzslError
from kgzsl.vision.checkpoint_notes import add_notes, file_stamp, read_notes
from kgzsl.vision.images import ImageTransform, load_image
from kgzsl.vision.samples import darknet_photo, foolbox_imagenet_images
from kgzsl.vision.speed import inference_copy

if TYPE_CHECKING:
    from torch import Tensor, nn

#: bump when the export or the quantisation recipe changes: older cached models are then rebuilt
FORMAT = 1
#: int8 keeps this many leading convolutions (EfficientNet-Lite: the stem and block 0) and their activations in
#: fp32: quantising them cost most of the agreement with fp32 (mean cosine 0.9936 -> 0.9965 on 175 photos)
FLOAT_LEADING_CONVS = 3
INPUT, OUTPUT = "images", "features"
#: images a session call: small enough that a call's activations stay in cache (EfficientNet-Lite0's first layers hold
#: 1.6 MB an image), measured 5-10 % faster than 16; the features do not depend on it (each image is computed alone)
RUN_CHUNK = 4
KEY_FIELD = "kgzsl_key"

log = logging.getLogger("kgzsl")


def onnx_available() -> bool:
    """Whether onnxruntime and onnx are installed (the engine is optional: torch runs every precision but int8)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


class OnnxRunner:
    """A callable like a torch network: a batch [B, 3, S, S] (float32) -> features [B, D] (float32 tensor); :meth:`run`
    does the same on numpy arrays, without torch.

    One session with one intra-op thread: :func:`kgzsl.vision.speed.run_split` runs slices of a batch in its
    own threads (ONNX Runtime releases the GIL), so each image is computed by one thread, whatever the batch.
    """

    def __init__(self, model: Path | bytes, key: str, path: Path | None = None) -> None:
        self.key = key
        self.path = model if isinstance(model, Path) else path
        self.session = _session(model)
        self.shape = tuple(self.session.get_inputs()[0].shape[1:])  # (3, S, S): the exported input size

    def __call__(self, batch: Tensor) -> Tensor:
        import torch  # lazy: torch

        return torch.from_numpy(self.run(batch.detach().to("cpu", torch.float32).numpy()))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Images [B, 3, S, S] (float32 array) -> features [B, D] (float32 array)."""
        if tuple(batch.shape[1:]) != self.shape:
            raise KgzslError(f"the ONNX engine's backbone takes images [B, {', '.join(map(str, self.shape))}], not "
                             f"{list(batch.shape)}: preprocess with the backbone's transform, or load it with engine='torch'")
        array = np.ascontiguousarray(batch, dtype=np.float32)
        if len(array) <= RUN_CHUNK:  # an empty batch too: [0, D]
            return self.session.run([OUTPUT], {INPUT: array})[0]
        return np.concatenate([self.session.run([OUTPUT], {INPUT: array[start:start + RUN_CHUNK]})[0]
                               for start in range(0, len(array), RUN_CHUNK)])


def onnx_runner(build: Callable[[], nn.Module], name: str, precision: str, transform: ImageTransform,
                checkpoint: str | os.PathLike | None = None) -> OnnxRunner:
    """The cached ONNX model of the network ``build()`` gives (as loaded; exported from its inference copy) in
    ``precision``, built if missing or stale. ``transform``: the backbone's preprocessing (input size; int8 calibration
    photos). With the ``checkpoint`` file the weights came from, the model's key is also kept in its notes
    (:mod:`kgzsl.vision.checkpoint_notes`), so that a later process finds the cached model without calling ``build``."""
    if precision not in ("fp32", "int8"):
        raise KgzslError(f"the onnx engine runs fp32 or int8, not {precision!r}")
    photos = calibration_files() if precision == "int8" else []
    slot = recipe_slot(precision, transform, photos)
    noted = read_notes(checkpoint).get("onnx", {}).get(slot) if checkpoint is not None else None
    if isinstance(noted, str):
        found = _cached(_model_path(name, precision, noted), noted)
        if found is not None:
            return found
    key = model_key(build(), precision, transform, photos)
    path = _model_path(name, precision, key)
    found = _cached(path, key)
    if found is None:
        data = build_model(build(), key, precision, transform, photos)
        found = OnnxRunner(path if _write_cached(path, data) else data, key, path)
    if checkpoint is not None and found.path is not None and found.path.is_file():
        add_notes(checkpoint, onnx={slot: key})
    return found


def _model_path(name: str, precision: str, key: str) -> Path:
    return cache_dir() / "models" / "onnx" / f"{name}-{precision}-{key[:16]}.onnx"


def _cached(path: Path, key: str) -> OnnxRunner | None:
    """The cached model at ``path`` if it is there and carries ``key``; None where it is missing, stale or corrupt."""
    if not path.is_file():
        return None
    try:
        loaded = OnnxRunner(path, key)
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file: rebuilt by the caller
        log.info("rebuilding the cached ONNX model %s (%s)", path, exc)
        return None
    return loaded if _stored_key(loaded.session) == key else None


def recipe_slot(precision: str, transform: ImageTransform, photos: Sequence[Path] = ()) -> str:
    """What the key of :func:`model_key` depends on besides the weights, as a short hash (the calibration photos by
    their stamps, not their bytes): the name a checkpoint's notes keep that key under."""
    photo_stamps = [file_stamp(photo) for photo in photos]
    text = json.dumps([FORMAT, precision, _versions(), transform.describe(), photo_stamps], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _write_cached(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically; False (with a warning) where the cache cannot be written: the
    model then runs from memory, built again by the next process."""
    try:
        with staged_file(path, "cached ONNX model") as tmp, open(tmp, "wb") as handle:
            handle.write(data)
    except (KgzslError, OSError) as exc:
        log.warning("cannot cache the ONNX model at %s (%s): it is used from memory", path, exc)
        return False
    return True


def model_key(model: nn.Module, precision: str, transform: ImageTransform, photos: Sequence[Path] = ()) -> str:
    """sha256 of everything the cached model depends on: weights, precision, preprocessing, calibration photos
    (their bytes), the export recipe and the versions of torch, onnx and onnxruntime."""
    digest = hashlib.sha256(f"kgzsl-onnx {FORMAT} {precision} {_versions()} {transform.describe()}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    for photo in photos:
        digest.update(Path(photo).read_bytes())
    return digest.hexdigest()


def _versions() -> str:
    """The versions of torch, onnx and onnxruntime, as the key of a cached model records them."""
    return " ".join(f"{name} {_version(name)}" for name in ("torch", "onnx", "onnxruntime"))


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version  # lazy: metadata

    try:
        return version(package)
    except PackageNotFoundError:
        return "none"


def build_model(model: nn.Module, key: str, precision: str, transform: ImageTransform,
                photos: Sequence[Path] = ()) -> bytes:
    """``model``'s fp32 inference copy exported to ONNX (int8: quantised, calibrated on ``photos``), ``key`` in its
    metadata, serialised."""
    import onnx  # lazy: onnx

    runner = inference_copy(model, "fp32")
    with tempfile.TemporaryDirectory(prefix="kgzsl-onnx-") as work:
        exported = Path(work) / "fp32.onnx"
        _export(runner, exported, transform.crop)
        model_path = exported if precision == "fp32" else _quantise(exported, Path(work), calibration_batch(photos, transform))
        graph = onnx.load(str(model_path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = KEY_FIELD, key
    return graph.SerializeToString()


def _export(runner: nn.Module, path: Path, size: int) -> None:
    """torch -> ONNX (the TorchScript exporter: no extra packages), batch size dynamic."""
    import torch  # lazy: torch

    example = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(runner.float().eval(), (example,), str(path), dynamo=False, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          opset_version=17)


def _quantise(exported: Path, work: Path, calibration: Sequence[Tensor]) -> Path:
    """Static int8 quantisation (QDQ, uint8 activations, per-channel int8 weights, min-max calibration)."""
    import onnx  # lazy: onnx
    from onnxruntime.quantization import (  # lazy: onnxruntime
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # lazy: onnxruntime

    prepared, out = work / "prepared.onnx", work / "int8.onnx"
    quant_pre_process(str(exported), str(prepared))
    nodes = onnx.load(str(prepared)).graph.node
    convs = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    last = convs[FLOAT_LEADING_CONVS] if len(convs) > FLOAT_LEADING_CONVS else len(nodes)
    keep_float = [node.name for node in nodes[:last]]

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(calibration)

        def get_next(self) -> dict[str, Any] | None:
            photo = next(self.left, None)
            return None if photo is None else {INPUT: photo[None].float().contiguous().numpy()}

    quantize_static(str(prepared), str(out), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float)
    return out


def _session(model: Path | bytes) -> Any:
    """An ONNX Runtime CPU session of a model file or its bytes: all graph optimisations, one thread (see
    :class:`OnnxRunner`)."""
    import onnxruntime  # lazy: onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _stored_key(session: Any) -> str | None:
    return session.get_modelmeta().custom_metadata_map.get(KEY_FIELD)


def calibration_files() -> list[Path]:
    """The int8 calibration photos: the 20 foolbox ImageNet photos and darknet's sample photos (never the
    benchmark photos); a KgzslError saying how to get them where they are missing."""
    paths = [path for path, _ in foolbox_imagenet_images()]
    return paths + sorted(darknet_photo().parent.glob("*.jpg"))


def calibration_batch(photos: Sequence[Path], transform: ImageTransform) -> list[Tensor]:
    """``photos`` preprocessed by ``transform``, each also mirrored."""
    batch = []
    for path in photos:
        image = load_image(path)
        batch += [transform(image), transform(ImageOps.mirror(image))]
    return batch


def env_engine() -> str | None:
    """``KGZSL_ENGINE`` (``torch`` or ``onnx``) where set: overrides the automatic engine choice."""
    value = os.environ.get("KGZSL_ENGINE", "").strip().lower()
    return value or None
