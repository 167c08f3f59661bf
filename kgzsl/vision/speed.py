"""CPU speed at the point of use: allocator and thread policy, conv+BN folding, channels-last and reduced precision.

:func:`kgzsl.vision.backbones.load_backbone` applies :func:`apply_cpu_policy` itself and every CPU forward pass
runs through :func:`run_split` (:func:`run_split_array` on ONNX Runtime, without torch), so a library user gets the
same speed as the CLI. :func:`inference_copy` builds the network a :class:`~kgzsl.vision.backbones.Backbone` actually
runs: a copy with every batch norm folded into the conv before it (exact up to float rounding),
weights in channels-last order, and in bfloat16 for ``precision="bf16"`` (an option: not bit-close to fp32).
On the CPU that copy is exported to ONNX Runtime where installed (:mod:`kgzsl.vision.onnx_backend`: the same fp32
features to ~1e-6, faster; int8 only there) - :func:`uses_onnx` decides.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from kgzsl.core.devices import device_type, tune_cpu_allocator
from kgzsl.errors import KgzslError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

#: precision modes of a backbone's forward pass
PRECISIONS = ("fp32", "bf16", "int8")
#: the default: int8 for EfficientNet-Lite0 where ONNX Runtime runs it on a CPU with VNNI, fp32 elsewhere (see
#: ``resolve_precision`` in :mod:`kgzsl.vision.backbones`)
AUTO = "auto"
#: engines of a CPU forward pass: ``auto`` is ONNX Runtime for fp32 and int8 where it is installed, else torch
ENGINES = ("auto", "torch", "onnx")

_state: dict[str, object] = {}


def cpu_workers() -> int:
    """How many forward passes run side by side on the CPU: ``KGZSL_THREADS`` where set, else the cores this
    process may run on (``sched_getaffinity``)."""
    value = os.environ.get("KGZSL_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def apply_cpu_policy() -> int:
    """Tune glibc's allocator once per process (:func:`kgzsl.core.devices.tune_cpu_allocator`: 2-10x on CPU CNN
    forward passes) and return :func:`cpu_workers`."""
    if "tuned" not in _state:
        _state["tuned"] = tune_cpu_allocator()
    return cpu_workers()


def _split_count(workers: int | None, rows: int) -> int:
    """How many slices a batch of ``rows`` images is cut into: ``workers`` (default :func:`cpu_workers`), at most one
    an image, at least one."""
    return max(1, min(workers or cpu_workers(), rows))


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of forward-pass threads (made on first use, remade if ``workers`` changes)."""
    pool = _state.get("pool")
    if not isinstance(pool, ThreadPoolExecutor) or _state.get("pool_size") != workers:
        pool = _state["pool"] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kgzsl-forward")
        _state["pool_size"] = workers
    return pool


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch ops inside run on the calling thread alone (its thread count restored after): for preprocessing a
    batch, where starting and joining OpenMP threads costs more than the work (one photo's normalisation: 12 ms
    -> 0.4 ms here) and stalls when the machine is busy. Same results: elementwise ops do not depend on threads."""
    import torch  # lazy: torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_split(network: Callable[[Tensor], Tensor], batch: Tensor, workers: int | None = None) -> Tensor:
    """``network(batch)`` on the CPU as single-threaded forward passes over slices of the batch, run side by side.

    The thread policy: each image is computed by one thread, so its features are bit-identical whatever the
    load, the batch or the number of workers (oneDNN's fp32 convolutions round differently with 1 and 2
    threads), and a shared machine slows the passes down evenly instead of stalling every layer's barrier on a
    descheduled thread (measured here: batch-1 forward 2.35 s with 2 threads vs 0.05 s with 1 under a 2-core load).
    torch's own thread count is set to 1 for the call and restored after.
    """
    import torch  # lazy: torch

    workers = _split_count(workers, batch.shape[0])

    def run(part: Tensor) -> Tensor:
        torch.set_num_threads(1)
        with torch.inference_mode():
            return network(part)

    before = torch.get_num_threads()
    try:
        if workers == 1:
            return run(batch)
        return torch.cat(list(_pool(workers).map(run, batch.tensor_split(workers))))
    finally:
        torch.set_num_threads(before)


def run_split_array(network: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, workers: int | None = None) -> np.ndarray:
    """:func:`run_split` for a network on numpy arrays (the ONNX Runtime engine): the same slices of the batch
    (``np.array_split`` cuts as ``Tensor.tensor_split`` does), run side by side, one image per thread; no torch."""
    workers = _split_count(workers, batch.shape[0])
    if workers == 1:
        return network(batch)
    return np.concatenate(list(_pool(workers).map(network, np.array_split(batch, workers))))


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; a KgzslError naming them otherwise."""
    if precision not in PRECISIONS:
        raise KgzslError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def check_engine(engine: str) -> str:
    """``engine`` if it is one of :data:`ENGINES`; a KgzslError naming them otherwise."""
    if engine not in ENGINES:
        raise KgzslError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    return engine


def uses_onnx(precision: str, engine: str, device: str, available: bool) -> bool:
    """Whether a forward pass in ``precision`` runs on ONNX Runtime: on the CPU, fp32 or int8, not asked for torch.

    ``device``: its name (``"cpu"``, ``"cuda:0"``). int8 exists only there (a KgzslError if ONNX Runtime is missing or
    torch or a GPU is asked for); bf16 only in torch.
    """
    on_cpu = device_type(str(device)) == "cpu"
    wanted = engine == "onnx" or (engine == "auto" and available and precision != "bf16" and on_cpu)
    if precision == "int8" and not wanted:
        raise KgzslError("precision int8 runs on ONNX Runtime on the CPU only: pip install onnxruntime onnx, on a CPU device")
    if wanted and (precision == "bf16" or not on_cpu):
        raise KgzslError(f"the onnx engine runs fp32 or int8 on the CPU, not {precision} on {device}")
    if wanted and not available:
        raise KgzslError("the onnx engine needs onnxruntime and onnx: pip install onnxruntime onnx")
    return wanted


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    r"""Fold an eval-mode batch norm into the conv before it, in place:
    :math:`W' = W \gamma / \sqrt{\sigma^2 + \epsilon}`, :math:`b' = \beta + (b - \mu) \gamma / \sqrt{\sigma^2 + \epsilon}`."""
    import torch  # lazy: torch
    from torch import nn  # lazy: torch

    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1))), requires_grad=False)
        conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale, requires_grad=False)


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every ``(owner, conv name, bn name)`` of ``model.conv_bn_pairs()`` (in place; the batch norms become
    identities). Returns how many were folded (0 for a model that does not list its pairs)."""
    from torch import nn  # lazy: torch

    pairs = list(model.conv_bn_pairs()) if hasattr(model, "conv_bn_pairs") else []
    for owner, conv_name, bn_name in pairs:
        fold_conv_bn(getattr(owner, conv_name), getattr(owner, bn_name))
        setattr(owner, bn_name, nn.Identity())
    return len(pairs)


def inference_copy(model: nn.Module, precision: str = "fp32", device: torch.device | None = None) -> nn.Module:
    """A copy of ``model`` for inference only: eval mode, batch norms folded, channels-last, in ``precision``
    (fp32 for int8: ONNX Runtime quantises the fp32 copy)."""
    import torch  # lazy: torch

    check_precision(precision)
    runner = copy.deepcopy(model).eval()
    for parameter in runner.parameters():
        parameter.requires_grad_(False)
    fold_batchnorms(runner)
    runner = runner.to(device=device, memory_format=torch.channels_last)
    return runner.to(torch.bfloat16) if precision == "bf16" else runner


def input_dtype(precision: str) -> torch.dtype:
    """The dtype a network in ``precision`` takes its input batch in."""
    import torch  # lazy: torch

    return torch.bfloat16 if precision == "bf16" else torch.float32
