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


def tune_cpu_allocator() -> bool:
    """Stop glibc from returning big freed blocks to the OS after every CNN layer (a CPU-speed fix).

    By default each large activation is a fresh ``mmap`` that is unmapped when freed, so every
    forward pass page-faults its whole working set again: on CPU this made EfficientNet-Lite 2-10x
    slower here, most of the time spent in the kernel. Raising the mmap and trim thresholds keeps
    those pages in the heap for reuse. Process-wide, so only process entry points call it, not the
    library; returns whether it applied (glibc on Linux only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
