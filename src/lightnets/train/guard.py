"""The divergence guard: a run whose loss, weights or BatchNorm statistics stop being finite
numbers stops at once, on every process alike, and never writes a checkpoint of them.

Checked mid-epoch on the running training loss (every ``LOG_EVERY`` steps, when the running
metrics are read back anyway) and at every epoch end on the weights, the BatchNorm statistics
and both losses; a flag raised on any rank stops them all (one all-reduce), so that no process
waits forever in a collective the others left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightnets.errors import LightnetsError
from lightnets.train.distributed import DistContext, all_reduce_sum

__all__ = ["DivergenceGuard", "TrainingDiverged"]


class TrainingDiverged(LightnetsError):
    """The training loss became NaN or infinite."""


class DivergenceGuard:
    """Stops a diverged run with :class:`TrainingDiverged`, naming what went wrong, the epoch,
    the learning rate and which checkpoint is kept.

    Args:
        ctx: the process group (one process: nothing to reduce).
        device: where the flags are reduced.
        last_checkpoint: the run's ``last.pt``, named in the message when it exists.
    """

    def __init__(self, ctx: DistContext, device: torch.device, last_checkpoint: Path):
        self.ctx = ctx
        self.device = device
        self.last_checkpoint = last_checkpoint

    def check_running_loss(self, loss_sum: torch.Tensor, epoch: int, lr: float, done: int) -> None:
        """Mid-epoch: the running training loss (a tensor on the device: no sync until the
        reduce). ``epoch`` is the one training (from 0), ``done`` the epochs completed."""
        self._stop_if({"training loss": ~torch.isfinite(loss_sum)}, epoch, lr, done)

    def check_epoch(
        self, record: Mapping[str, Any], modules: Sequence[nn.Module], done: int
    ) -> None:
        """Epoch end: only finite weights, BN statistics and losses make a checkpoint.
        ``record`` is the epoch's metrics (``epoch`` counted from 1, ``lr``, the losses)."""
        losses = [record["train_loss"], record["val_loss"]]
        bad = {
            "weights or BatchNorm statistics": not self.weights_finite(modules),
            "validation loss": record["val_loss"] is not None and not math.isfinite(losses[1]),
            "training loss": not math.isfinite(losses[0]),
        }
        self._stop_if(bad, record["epoch"] - 1, record["lr"], done)

    @staticmethod
    def weights_finite(modules: Sequence[nn.Module]) -> bool:
        """Whether every float tensor of the modules' state is finite (one sync)."""
        tensors = [t for m in modules for t in m.state_dict().values() if t.is_floating_point()]
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

    def _stop_if(self, bad: dict[str, Any], epoch: int, lr: float, done: int) -> None:
        """Raise :class:`TrainingDiverged` naming the first of ``bad`` true on any rank."""
        flags = torch.tensor([float(v) for v in bad.values()], dtype=torch.float64)
        flags = all_reduce_sum(flags.to(self.device), self.ctx).cpu()
        names = [name for name, flag in zip(bad, flags.tolist(), strict=True) if flag]
        if not names:
            return
        last = self.last_checkpoint
        if done > 0 and last.exists():
            kept = f"the last good checkpoint {last} (epoch {done}) is kept"
        else:
            kept = "no checkpoint was written"
        raise TrainingDiverged(
            f"the {names[0]} became NaN or infinite in epoch {epoch + 1} (lr {lr:.4g}): "
            f"training stopped; {kept}; lower --lr or add --clip-grad"
        )
