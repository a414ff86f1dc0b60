"""The optional data of a compression run: a fine-tuning loader and a test loader.

Built from the project's data pieces (:func:`lightnets.data.load_splits`,
:func:`lightnets.data.make_loader`). For a checkpoint trained on the same data set, its
normalisation, input size, validation carve-out and seed are reused, as ``lightnets eval``
does, so the test split and the preprocessing are the run's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from lightnets.deploy.compression.pipeline import CompressionData
from lightnets.errors import InvalidArgumentError, check_float, check_int
from lightnets.models import LightweightNet

if TYPE_CHECKING:
    from lightnets.data import DataSplits


def _splits(
    name: str, data_dir: Any, state: dict | None, model: LightweightNet, subset: int | None
) -> DataSplits:
    from lightnets.data import load_splits

    stored = (state or {}).get("dataset") or {}
    config = (state or {}).get("config") or {}
    same = stored.get("name") == name
    if data_dir is None and same:
        data_dir = config.get("data_dir")
    image_size: int | None
    if same and stored.get("input_size"):
        image_size = int(stored["input_size"][-1])
    else:
        size = int(model.default_input_size[-1])
        image_size = None if size == 32 else size
    splits = load_splits(
        name,
        data_dir,
        val_size=config.get("val_size") if same else None,
        seed=int(config.get("seed", 0)) if same else 0,
        train_subset=subset,
        image_size=image_size,
    )
    if len(splits.classes) != model.num_classes:
        raise InvalidArgumentError(
            f"{name} has {len(splits.classes)} classes but the model has {model.num_classes} "
            "outputs (pass --num-classes, or a checkpoint trained on it)"
        )
    return splits


def compression_data(
    model: LightweightNet,
    state: dict[str, Any] | None,
    *,
    finetune_dataset: str | None = None,
    finetune_epochs: int = 1,
    finetune_images: int | None = None,
    lr: float = 0.005,
    eval_dataset: str | None = None,
    eval_images: int | None = None,
    data_dir: str | None = None,
    batch_size: int = 128,
) -> CompressionData | None:
    """Loaders for fine-tuning and/or evaluation, or None when no data set is named."""
    from lightnets.data import make_loader

    check_int("--finetune-epochs", finetune_epochs, minimum=0)
    check_int("--batch-size", batch_size, minimum=1)
    check_float("--finetune-lr", lr, minimum=0.0, exclusive_minimum=True)
    for name, value in (("--finetune-images", finetune_images), ("--eval-images", eval_images)):
        if value is not None:
            check_int(name, value, minimum=1)
    eval_dataset = eval_dataset or finetune_dataset
    if finetune_dataset is None and eval_dataset is None:
        return None
    device = next(model.parameters()).device
    data = CompressionData(
        num_classes=model.num_classes,
        finetune_epochs=finetune_epochs if finetune_dataset else 0,
        lr=lr,
        batch_size=batch_size,
        name=eval_dataset or finetune_dataset,
    )
    if finetune_dataset is not None:
        splits = _splits(finetune_dataset, data_dir, state, model, finetune_images)
        data.finetune = make_loader(
            splits.train, splits, batch_size=batch_size, train=True, device=device
        )
    if eval_dataset is not None:
        splits = _splits(eval_dataset, data_dir, state, model, None)
        test = splits.test
        if eval_images is not None and eval_images < len(test):
            test = test.subset(torch.arange(eval_images))
        data.evaluate = make_loader(test, splits, batch_size=256, train=False, device=device)
    return data
