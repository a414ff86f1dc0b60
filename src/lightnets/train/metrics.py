"""Accuracy counting, metric records and the run directory's text outputs (written atomically).

Accuracies are fractions in [0, 1] in every file and in ``--json`` output; terminals show
percentages. Sums (of losses, correct predictions, images) are what ranks add together, so
a distributed run reports exactly the averages of one process that saw all the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightnets.fileio import write_text_atomic
from lightnets.jsonio import dumps

#: Keys of one line of ``metrics.jsonl``, in order.
EPOCH_KEYS = (
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "images_per_sec",
    "seconds",
    "warmup_seconds",
)


def topk_correct(
    logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]
) -> list[torch.Tensor]:
    """Number of samples whose target is among the k highest logits, for each k (as tensors).

    k is capped at the number of classes (top-5 of a 3-class problem is top-3).
    """
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(targets.unsqueeze(1))
    return [hits[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


@dataclass
class EvalResult:
    """Loss (mean cross-entropy without label smoothing), top-1/top-5 fractions, image count."""

    loss: float
    top1: float
    top5: float
    images: int
    per_class: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "images": self.images,
        }
        if self.per_class is not None:
            data["per_class"] = self.per_class
        return data


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as strict, indented JSON (NaN and infinities as null), atomically."""
    write_text_atomic(path, dumps(data, indent=2) + "\n")


def write_metrics_jsonl(path: str | Path, history: Iterable[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` (one JSON object per epoch) from the run's history."""
    lines = [dumps({k: record.get(k) for k in EPOCH_KEYS}) for record in history]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
