"""Fine-tuning from pretrained weights: the model, what is frozen, the backbone's learning rate.

The three choices users expect when starting from (ImageNet) weights:

- ``freeze_backbone``: train only the classifier. Every other parameter stops receiving
  gradients and every BatchNorm outside the classifier keeps its running statistics, so the
  backbone is exactly the loaded one at the end (a "linear probe", cheap: no backbone gradients).
- ``lr_backbone``: the backbone's learning rate is ``lr x lr_backbone`` (the classifier's is
  ``lr``), following every step of the schedule.
- ``freeze_bn``: every BatchNorm uses and keeps its running statistics (its scale and shift
  still train unless frozen with the backbone); useful with small batches.

The trainer calls :func:`create_train_model` and :func:`scale_backbone_lr`; nothing else changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightnets.errors import CheckpointError, InvalidArgumentError
from lightnets.models import LightweightNet, create_model, get_model_entry


def classifier_module(model: LightweightNet) -> nn.Module:
    """The module ``reset_classifier`` replaces (its family's registry entry names it)."""
    return model.get_submodule(get_model_entry(model.hparams["name"]).classifier)


def head_parameters(model: LightweightNet) -> list[nn.Parameter]:
    """The classifier's parameters (what ``reset_classifier`` replaces)."""
    return list(classifier_module(model).parameters())


def backbone_parameters(model: LightweightNet) -> list[nn.Parameter]:
    head = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head]


def _keep_statistics(module: nn.Module, args: Any) -> None:
    # A forward pre-hook: train() switches BatchNorm to batch statistics; undo it before use.
    module.train(False)


def freeze_batchnorm(model: nn.Module, *, skip: nn.Module | None = None) -> int:
    """Make every BatchNorm of ``model`` (outside ``skip``) use and keep its running statistics,
    whatever ``model.train()`` says. Returns how many were frozen."""
    skipped = set(skip.modules()) if skip is not None else set()
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module not in skipped:
            module.register_forward_pre_hook(_keep_statistics)
            count += 1
    return count


def freeze_backbone(model: LightweightNet) -> None:
    """Train only the classifier: no gradients and fixed BatchNorm statistics elsewhere."""
    for param in backbone_parameters(model):
        param.requires_grad_(False)
    freeze_batchnorm(model, skip=classifier_module(model))


def scale_backbone_lr(
    optimizer: torch.optim.Optimizer, model: LightweightNet, factor: float
) -> None:
    """Give the backbone's parameters ``factor`` x their group's learning rate, in new groups
    (same weight decay); call before the scheduler is built, which then scales every group."""
    if factor == 1.0:
        return
    head = {id(p) for p in head_parameters(model)}
    for group in list(optimizer.param_groups):
        backbone = [p for p in group["params"] if id(p) not in head]
        if not backbone:
            continue
        group["params"] = [p for p in group["params"] if id(p) in head]
        settings = {key: value for key, value in group.items() if key != "params"}
        optimizer.add_param_group({**settings, "params": backbone, "lr": group["lr"] * factor})


def check_finetune_options(config: Any) -> None:
    """The fine-tuning fields of a :class:`~lightnets.train.config.TrainConfig`."""
    from lightnets.errors import check_float, check_int

    check_float("lr_backbone", config.lr_backbone, minimum=0.0, exclusive_minimum=True)
    if config.freeze_backbone and config.lr_backbone != 1.0:
        raise InvalidArgumentError(
            "--lr-backbone does not apply with --freeze-backbone (the backbone does not train)"
        )
    if config.num_classes is not None:
        check_int("num_classes", config.num_classes, minimum=1)
        if config.weights is None:
            raise InvalidArgumentError(
                "--num-classes does not apply to train without --weights: the classifier has "
                "one output per class of the data set"
            )


def create_train_model(
    config: Any, *, num_classes: int, variant: str, resume: bool
) -> LightweightNet:
    """The model a run trains: fresh, or from ``config.weights`` (not re-read on resume, where
    the checkpoint holds the weights), then frozen as ``config`` asks.

    A file whose classifier has another number of classes than the data set needs
    ``config.num_classes`` equal to the data set's: the classifier then starts afresh.
    """
    hparams = dict(config.model_hparams)
    if config.weights is None or resume:
        model = create_model(config.model, num_classes=num_classes, variant=variant, **hparams)
    else:
        if config.num_classes is not None and config.num_classes != num_classes:
            raise InvalidArgumentError(
                f"--num-classes {config.num_classes} differs from the data set's {num_classes} "
                "classes"
            )
        model = _pretrained(config, num_classes, variant, hparams)
    if config.freeze_backbone:
        freeze_backbone(model)
    if config.freeze_bn:
        freeze_batchnorm(model)
    return model


def _pretrained(
    config: Any, num_classes: int, variant: str, hparams: dict[str, Any]
) -> LightweightNet:
    from lightnets.models.weights import read_weights_file, source_of

    file = read_weights_file(config.weights)
    source = source_of(file)
    if source.num_classes != num_classes and config.num_classes is None:
        raise CheckpointError(
            f"{config.weights}: its classifier has {source.num_classes} classes, the data set "
            f"{num_classes}: pass --num-classes {num_classes} to train a fresh classifier on the "
            "loaded backbone"
        )
    return create_model(
        config.model,
        weights=file,
        num_classes=config.num_classes,
        variant=config.variant or source.variant or variant,
        **hparams,
    )
