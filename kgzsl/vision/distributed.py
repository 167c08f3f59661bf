"""torchrun plumbing: this process's rank, joining and leaving the group, barriers and small reductions.

Every helper is a no-op (or the identity) in a plain single-process run, so callers need no branches, and such a
run on the CPU never imports torch here (a group can only exist once torch is imported).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from kgzsl.core.devices import device_name, device_type
from kgzsl.errors import KgzslError


@dataclass(frozen=True)
class Ranks:
    """This process's place in a (possibly single-process) run; ``device`` is the name of where it computes
    (``"cpu"``, ``"cuda:1"``)."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def device_type(self) -> str:
        return device_type(self.device)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and _joined()


def _joined() -> bool:
    """Whether this process is in an initialised process group (never before torch is imported)."""
    if "torch" not in sys.modules:
        return False
    import torch.distributed as dist  # lazy: torch

    return dist.is_available() and dist.is_initialized()


def setup_distributed(device: str = "auto") -> Ranks:
    """Join the process group torchrun describes (``WORLD_SIZE``/``RANK`` env): nccl on GPU, gloo on CPU.

    Without those variables (a plain run) this is a single rank and nothing is initialised.
    """
    resolved = device_name(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(0, 1, resolved)
    import torch  # lazy: torch
    import torch.distributed as dist  # lazy: torch

    if not dist.is_initialized():
        if device_type(resolved) == "cuda":
            torch.cuda.set_device(torch.device(resolved))
        dist.init_process_group(backend="nccl" if device_type(resolved) == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), resolved)


def teardown_distributed() -> None:
    """Leave the process group, if one was joined."""
    if _joined():
        import torch.distributed as dist  # lazy: torch

        dist.destroy_process_group()


def current_ranks(device: str) -> Ranks:
    """This process's ranks in the group already joined (a single rank when none is), computing on ``device`` (a name)."""
    if _joined():
        import torch.distributed as dist  # lazy: torch

        return Ranks(dist.get_rank(), dist.get_world_size(), device)
    return Ranks(0, 1, device)


def all_reduce_ints(ranks: Ranks, values: Sequence[int], op: str = "sum") -> list[int]:
    """All-reduce a few integers across ranks with ``op`` (sum, min or max); the identity on a single rank."""
    if not ranks.distributed:
        return list(values)
    import torch  # lazy: torch
    import torch.distributed as dist  # lazy: torch

    device = torch.device(ranks.device) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(list(values), dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return [int(v) for v in tensor.cpu()]


def agree(ranks: Ranks, error: str | None, what: str) -> None:
    """Raise on every rank if any rank failed a check, so no rank is left waiting at a barrier."""
    failed = all_reduce_ints(ranks, [1 if error else 0], "max")[0]
    if error:
        raise KgzslError(error)
    if failed:
        raise KgzslError(f"another rank failed while {what} (see its error)")


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (nothing to wait for on a single rank)."""
    if ranks.distributed:
        import torch  # lazy: torch
        import torch.distributed as dist  # lazy: torch

        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.device(ranks.device).index])
        else:
            dist.barrier()
