"""Evaluation: top-1/top-5 accuracy and cross-entropy over a data set, reduced across ranks."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

from lightnets.data.loader import IGNORE_INDEX
from lightnets.errors import InvalidArgumentError, check_int
from lightnets.models import LightweightNet
from lightnets.models.memory import check_memory
from lightnets.train.distributed import DistContext, all_reduce_sum
from lightnets.train.metrics import EvalResult, top5_meaningful, topk_correct
from lightnets.train.precision import AMP_MODES, autocast_context

if TYPE_CHECKING:
    from lightnets.data.splits import DataSplits

SPLITS = ("test", "val", "train")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    device: torch.device,
    amp: str = "none",
    ctx: DistContext | None = None,
    per_class: bool = False,
) -> EvalResult:
    """Evaluate ``model`` (switched to eval mode) on every batch of ``loader``.

    Each rank sums its loss, correct predictions and image count; the sums are all-reduced, so
    with a loader that shards without duplicates the result is that of a single process.
    Images labelled ``IGNORE_INDEX`` (a padded last batch) are left out.
    """
    ctx = ctx or DistContext(device=device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, images
    class_correct = torch.zeros(num_classes, dtype=torch.float64, device=device)
    class_total = torch.zeros(num_classes, dtype=torch.float64, device=device)
    try:
        for images, targets in loader:
            with autocast_context(device, amp):
                logits = model(images)
            logits = logits.float()
            # Padding images (static shapes) carry IGNORE_INDEX: no loss, never a hit.
            valid = targets.ne(IGNORE_INDEX)
            loss = F.cross_entropy(logits, targets, reduction="sum", ignore_index=IGNORE_INDEX)
            top1, top5 = topk_correct(logits, targets, (1, 5))
            sums += torch.stack([loss.double(), top1.double(), top5.double(), valid.sum().double()])
            if per_class:
                hit = logits.argmax(1).eq(targets).double()
                index = targets.clamp(min=0)
                class_correct.index_add_(0, index, hit)
                class_total.index_add_(0, index, valid.double())
    finally:
        model.train(was_training)
    all_reduce_sum(sums, ctx)
    if per_class:
        all_reduce_sum(class_correct, ctx)
        all_reduce_sum(class_total, ctx)
    loss_sum, top1_sum, top5_sum, count = sums.tolist()
    if count == 0:
        nan = float("nan")
        top5_rate = nan if top5_meaningful(num_classes) else None
        return EvalResult(nan, nan, top5_rate, 0, [] if per_class else None)
    classes = None
    if per_class:
        classes = [
            (c / t) if t > 0 else float("nan")
            for c, t in zip(class_correct.tolist(), class_total.tolist(), strict=True)
        ]
    top5_rate = top5_sum / count if top5_meaningful(num_classes) else None
    return EvalResult(loss_sum / count, top1_sum / count, top5_rate, int(count), classes)


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    split: str = "test",
    batch_size: int = 256,
    device: str | None = None,
    per_class: bool = False,
    amp: str = "none",
    model_and_state: tuple[LightweightNet, dict[str, Any]] | None = None,
    int8: bool = False,
) -> tuple[EvalResult, list[str]]:
    """Evaluate a training checkpoint (EMA weights when it has them) on a split of a data set.

    The data set, its normalisation and its validation carve-out default to the checkpoint's,
    so ``split="val"`` is the very split the run picked its best epoch on. Returns the result
    and the class names. ``model_and_state``: an already loaded (model, checkpoint-like dict),
    e.g. from another weights file, evaluated instead of ``checkpoint``'s. ``int8``: the int8
    network of a checkpoint trained with ``--qat-epochs`` (train/qat.py), as the runtime of its
    QAT backend computes it, instead of the fp32 one.
    """
    from lightnets.data import make_loader
    from lightnets.train.checkpoint import model_from_checkpoint
    from lightnets.train.distributed import resolve_device

    if split not in SPLITS:
        raise InvalidArgumentError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    check_int("batch_size", batch_size, minimum=1)
    if amp not in AMP_MODES:
        raise InvalidArgumentError(f"unknown amp mode {amp!r}; allowed: {', '.join(AMP_MODES)}")
    kind = resolve_device(device)
    model, state = model_and_state or model_from_checkpoint(checkpoint)
    splits = _checkpoint_splits(checkpoint, state, dataset, data_dir, model.num_classes)
    # The batches are resized to the input size the file records: checked at this batch size.
    check_memory(model.hparams, splits.input_size, batch_size)
    torch_device = torch.device(kind)
    network: nn.Module = model
    if int8:
        from lightnets.train.qat import int8_from_checkpoint

        network = int8_from_checkpoint(model, state, str(checkpoint))
    network.to(torch_device)
    data = getattr(splits, split)
    loader = make_loader(data, splits, batch_size=batch_size, train=False, device=torch_device)
    num_classes = len(splits.classes)
    result = evaluate(
        network,
        loader,
        num_classes=num_classes,
        device=torch_device,
        amp=amp,
        per_class=per_class,
    )
    return result, list(splits.classes)


def _checkpoint_splits(
    checkpoint: str | Path,
    state: dict[str, Any],
    dataset: str | None,
    data_dir: str | Path | None,
    num_classes: int,
) -> DataSplits:
    """The data splits to evaluate on: ``dataset`` (default: the checkpoint's) and, when that
    is the checkpoint's own, its data folder, image size and validation carve-out."""
    from lightnets.data import load_splits

    stored = state.get("dataset") or {}
    config = state.get("config") or {}
    name = dataset or stored.get("name")
    if name is None:
        raise InvalidArgumentError(f"{checkpoint} names no data set: pass --dataset")
    same_data = name == stored.get("name")
    if data_dir is None and same_data:
        data_dir = config.get("data_dir")
    image_size = None
    if stored.get("input_size") and same_data:
        image_size = int(stored["input_size"][-1])
    splits = load_splits(
        name,
        data_dir,
        val_size=config.get("val_size") if same_data else None,
        seed=int(config.get("seed", 0)) if same_data else 0,
        image_size=image_size,
    )
    if len(splits.classes) != num_classes:
        raise InvalidArgumentError(
            f"{name} has {len(splits.classes)} classes but the checkpoint's model has "
            f"{num_classes} outputs"
        )
    return splits
