"""Where computation runs: one device resolver for training and feature extraction, and CPU allocator tuning."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import TYPE_CHECKING

from kgzsl.errors import KgzslError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` where a GPU exists, else the CPU; otherwise ``device`` checked and returned.

    A name torch does not know, a GPU this torch cannot see, or a device type other than cpu and cuda is
    refused with an error that says which.
    """
    import torch  # lazy: torch

    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise KgzslError(f"device {device!r} is not a torch device name (try 'cpu' or 'cuda'): {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise KgzslError(f"device {str(resolved)!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU: use --device cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise KgzslError(f"device {str(resolved)!r}: only cpu and cuda are supported")
    return resolved


#: device files a GPU driver creates (NVIDIA's, WSL2's GPU bridge, AMD's for ROCm builds of torch): without any of
#: them torch can see no GPU, so ``auto`` means the CPU without importing torch (a second of a short CPU run)
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/dxg", "/dev/kfd")


def gpu_driver_present(files: tuple[str, ...] = GPU_DRIVER_FILES) -> bool:
    """Whether any GPU driver device file exists (cheap: no torch, no CUDA initialisation)."""
    return any(os.path.exists(path) for path in files)


def device_name(device: str | torch.device = "auto") -> str:
    """:func:`resolve_device` as a name (``"cpu"``, ``"cuda:0"``), without importing torch where the answer is the
    CPU: ``device`` is ``"cpu"``, or ``"auto"`` on a machine with no GPU driver (:func:`gpu_driver_present`)."""
    if isinstance(device, str) and (device == "cpu" or (device == "auto" and not gpu_driver_present())):
        return "cpu"
    return str(resolve_device(device))


def device_type(name: str) -> str:
    """The type of a device name: ``"cuda:1"`` -> ``"cuda"``."""
    return str(name).split(":", 1)[0]


def _libc() -> ctypes.CDLL | None:
    """glibc, or None on another C library or platform."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_free_heap() -> None:
    """Hand the free pages of glibc's heap back to the OS (``malloc_trim(0)``; nothing elsewhere).

    Once a big freed block has been unmapped, glibc serves blocks of up to 32 MB from its heap, and the varying sizes
    of a feature shard's tensors fragment it: without this a process scoring shard after shard grows by megabytes a
    shard (a 200k-image folder: 1.4 GB) although it holds one shard at a time.
    """
    libc = _LIBC.setdefault("libc", _libc())
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


_LIBC: dict[str, ctypes.CDLL | None] = {}


def tune_cpu_allocator() -> bool:
    """Stop glibc from returning big freed blocks to the OS after every CNN layer (a CPU-speed fix).

    By default each large activation is a fresh ``mmap`` that is unmapped when freed, so every
    forward pass page-faults its whole working set again: on CPU this made EfficientNet-Lite 2-10x
    slower here, most of the time spent in the kernel. Raising the mmap and trim thresholds keeps
    those pages in the heap for reuse. Process-wide (it only moves glibc's thresholds): loading a backbone
    applies it (:func:`kgzsl.vision.speed.apply_cpu_policy`), so Python users get the CLI's speed; returns
    whether it applied (glibc on Linux only).
    """
    libc = _LIBC.setdefault("libc", _libc())
    try:
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except AttributeError:  # no glibc, or a libc without mallopt
        return False


#: CPU flags (Linux ``/proc/cpuinfo``) of the 8-bit dot-product instructions int8 kernels need to run without saturation
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


def cpu_has_vnni(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has VNNI (``avx512_vnni`` or ``avx_vnni``). Without it, ONNX Runtime's u8 x s8 int8 kernels
    sum pairs of products in 16 bits, which can saturate and cost accuracy on efficient nets such as EfficientNet;
    False where the flags cannot be read (another OS, another architecture)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in VNNI_FLAGS)
    except OSError:
        return False
    return False
