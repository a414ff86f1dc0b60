"""When is a converted model still the same model? One rule per precision, used everywhere.

- fp32 and bf16 (export verification, ``bench``'s check): the largest |logit difference| to
  eager PyTorch fp32, as a fraction of the largest |logit| (at least 1): fp32 1e-4, bf16 5e-2.
- int8 (``quantize``, ``bench``'s int8 check, ``bench --backend best --allow-int8``): the
  change of top-1 on held-out images, in percentage points, must not be a drop of more than
  ``max_drop`` (default :data:`DEFAULT_MAX_DROP`). With labels it is top-1 accuracy; without
  (synthetic images) it is the share of images whose int8 top-1 equals fp32's, minus 100. A raw
  logit difference says little about int8: a trained network's logits move by ~1 while its
  answers stay the same (Jacob et al., 2018, Section 4 reports accuracy, not logits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "DEFAULT_MAX_DROP",
    "TOLERANCE",
    "Top1Change",
    "check_outputs",
    "max_abs_diff",
    "tolerance",
    "top1_change",
]

#: Allowed max |diff| to eager fp32, as a fraction of the largest |logit| (at least 1).
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}
#: Largest top-1 drop (percentage points) int8 may cost before it is refused or warned about.
DEFAULT_MAX_DROP = 1.0


def tolerance(reference: torch.Tensor | np.ndarray, precision: str = "fp32") -> float:
    """Allowed max |diff| to ``reference`` (eager fp32 logits) at ``precision``."""
    scale = float(np.abs(np.asarray(reference)).max()) if np.size(reference) else 0.0
    return TOLERANCE[precision] * max(1.0, scale)


def max_abs_diff(reference: torch.Tensor | np.ndarray, output: torch.Tensor | np.ndarray) -> float:
    """max |output - reference|; infinite when the shapes differ."""
    ref, out = np.asarray(reference, dtype=np.float64), np.asarray(output, dtype=np.float64)
    if ref.shape != out.shape:
        return math.inf
    return float(np.abs(out - ref).max()) if ref.size else 0.0


def check_outputs(
    reference: torch.Tensor, output: torch.Tensor, precision: str
) -> tuple[float, float]:
    """(max |diff|, tolerance) of ``output`` against eager fp32 ``reference`` (fp32, bf16)."""
    return max_abs_diff(reference, output.detach().float()), tolerance(reference, precision)


@dataclass(frozen=True)
class Top1Change:
    """Top-1 of fp32 and int8 on the same held-out images, and the verdict of the budget."""

    metric: str  # "accuracy" (against labels) or "agreement" (with fp32's top-1, no labels)
    images: int
    fp32_top1: float
    int8_top1: float
    change: float  # int8 - fp32, percentage points
    max_drop: float
    max_abs_diff: float

    @property
    def within_budget(self) -> bool:
        return self.images > 0 and self.change >= -self.max_drop

    def describe(self) -> str:
        what = "top-1 accuracy" if self.metric == "accuracy" else "top-1 agreement with fp32"
        return (
            f"{what} on {self.images} held-out images: fp32 {self.fp32_top1:.2f}% -> int8 "
            f"{self.int8_top1:.2f}% ({self.change:+.2f} points; budget -{self.max_drop:g})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "within_budget": self.within_budget}


def top1_change(
    fp32: Callable[[torch.Tensor], Any],
    int8: Callable[[torch.Tensor], Any],
    evaluation: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    *,
    max_drop: float = DEFAULT_MAX_DROP,
) -> Top1Change:
    """Top-1 of ``fp32`` and ``int8`` (callables: images -> logits) on ``evaluation`` batches.

    Batches with labels give accuracy; if any batch has none, the metric is agreement.
    """
    batches = list(evaluation)
    labelled = bool(batches) and all(labels is not None for _, labels in batches)
    correct_fp32 = correct_int8 = total = 0
    worst = 0.0
    for images, labels in batches:
        reference = np.asarray(fp32(images))
        got = np.asarray(int8(images))
        worst = max(worst, max_abs_diff(reference, got))
        top_fp32, top_int8 = reference.argmax(1), got.argmax(1)
        truth = labels.numpy() if labels is not None and labelled else top_fp32
        correct_fp32 += int((top_fp32 == truth).sum())
        correct_int8 += int((top_int8 == truth).sum())
        total += len(images)
    fp32_top1 = 100.0 * correct_fp32 / total if total else math.nan
    int8_top1 = 100.0 * correct_int8 / total if total else math.nan
    return Top1Change(
        metric="accuracy" if labelled else "agreement",
        images=total,
        fp32_top1=fp32_top1,
        int8_top1=int8_top1,
        change=int8_top1 - fp32_top1,
        max_drop=max_drop,
        max_abs_diff=worst,
    )
