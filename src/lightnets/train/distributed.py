"""Data-parallel runs under ``torchrun``: process group set-up and exact metric reduction.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
a plain ``python -m lightnets train`` sees none of them and runs as a single process. The
backend is NCCL on CUDA and gloo on the CPU. Metrics are reduced as sums (of losses, correct
predictions and counts), so the averages are those of one process seeing all the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from lightnets.errors import InvalidArgumentError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"environment variable {name}={value!r} is not an integer"
        ) from exc


def resolve_device(device: str | None) -> str:
    """'cpu' or 'cuda' (None: cuda when available); refuses cuda without a GPU."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"unknown device {device!r}; allowed: cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(
            "--device cuda, but no CUDA device is available; use --device cpu"
        )
    return device


def init_distributed(device: str | None) -> DistContext:
    """Join the process group when launched by torchrun; otherwise a one-process context."""
    kind = resolve_device(device)
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InvalidArgumentError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                "use --nproc-per-node <= the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, torch_device)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place) and return it; a no-op for one process."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
