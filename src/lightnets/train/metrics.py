"""Accuracy counting, metric records and the run directory's text outputs (written atomically).

Accuracies are fractions in [0, 1] in every file and in ``--json`` output; terminals show
percentages. Sums (of losses, correct predictions, images) are what ranks add together, so
a distributed run reports exactly the averages of one process that saw all the data.
"""

from __future__ import annotations

import math
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
    "threads",
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


#: Top-5 accuracy is reported only with more classes than this: with 5 or fewer every image's
#: class is among the 5 highest scores, so top-5 would be 100% whatever the model.
TOP5_MIN_CLASSES = 6


def top5_meaningful(num_classes: int) -> bool:
    """Whether top-5 accuracy says anything for ``num_classes`` classes."""
    return num_classes >= TOP5_MIN_CLASSES


#: A top-1 accuracy is "at chance" when it is not above 1 / classes by more than this many
#: binomial standard errors of a model that guesses (see :func:`chance_margin`).
CHANCE_SIGMAS = 3.0


def chance_margin(num_classes: int, images: int) -> float:
    """How far above chance a guessing model's top-1 may land by luck: :data:`CHANCE_SIGMAS`
    standard errors of a binomial proportion, ``sqrt(p (1 - p) / n)`` with ``p = 1 / classes``
    and ``n`` test images (10 classes, 10,000 images: 0.009, i.e. 0.9 points)."""
    p = 1.0 / num_classes
    return CHANCE_SIGMAS * math.sqrt(p * (1.0 - p) / max(images, 1))


def at_chance(top1: float | None, num_classes: int, images: int) -> bool:
    """Whether ``top1`` on ``images`` test images is indistinguishable from guessing among
    ``num_classes`` classes (or worse): at most ``1 / num_classes + chance_margin(...)``."""
    if top1 is None or not math.isfinite(top1) or num_classes < 2 or images < 1:
        return False
    return top1 <= 1.0 / num_classes + chance_margin(num_classes, images)


def chance_warning(
    top1: float | None, num_classes: int, images: int, what: str = "test top-1"
) -> str | None:
    """One line when :func:`at_chance` holds (else None): the result, chance and the margin."""
    if not at_chance(top1, num_classes, images):
        return None
    assert top1 is not None
    margin = chance_margin(num_classes, images)
    return (
        f"warning: {what} {100 * top1:.2f}% is at chance level: guessing among {num_classes} "
        f"classes scores {100 / num_classes:.2f}% +- {100 * margin:.2f} points on {images:,} "
        f"images ({CHANCE_SIGMAS:g} standard errors); the model learned nothing measurable "
        "(check the learning rate, the labels and the number of epochs)"
    )


def unlearned_classes(per_class: Sequence[float], classes: Sequence[str]) -> list[str]:
    """Classes of which no image was classified correctly (top-1 recall exactly 0); classes
    without images (recall NaN) are left out."""
    return [str(name) for name, recall in zip(classes, per_class, strict=True) if recall == 0.0]


def unlearned_warning(
    top1: float | None, per_class: Sequence[float], classes: Sequence[str], images: int
) -> str | None:
    """One line when some classes were never classified correctly, though the model as a
    whole is above chance (at chance, :func:`chance_warning` says more); else None.

    A network whose class scores pass a ReLU (SqueezeNet's conv10, Table 1) loses a class for
    good once that class's outputs are 0 for every image: no gradient reaches them again. A
    run that lost some classes that way ends well above chance and well below what the rest
    learned; without this line it would pass as merely a weaker result.
    """
    if at_chance(top1, len(classes), images):
        return None
    names = unlearned_classes(per_class, classes)
    if not names:
        return None
    return (
        f"warning: {len(names)} of {len(classes)} classes had no image of {images:,} "
        f"classified correctly ({', '.join(names)}): the model never learned them (scores "
        "that pass a ReLU, as SqueezeNet's conv10 do, stay at 0 once they reach it; try a "
        "lower --lr or another --seed)"
    )


@dataclass
class EvalResult:
    """Loss (mean cross-entropy without label smoothing), top-1/top-5 fractions, image count.

    ``top5`` is None for fewer than :data:`TOP5_MIN_CLASSES` classes (it would always be 1).
    """

    loss: float
    top1: float
    top5: float | None
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
