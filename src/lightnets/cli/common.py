"""Arguments shared by the sub-commands that build a model."""

from __future__ import annotations

import argparse
from typing import Any

from lightnets.errors import InvalidArgumentError
from lightnets.models import LightweightNet, create_model

SQUEEZENET_VERSIONS = {
    "1.0": "squeezenet1_0",
    "1_0": "squeezenet1_0",
    "1.1": "squeezenet1_1",
    "1_1": "squeezenet1_1",
}


def add_model_arguments(parser: argparse.ArgumentParser, *, name: bool = True) -> None:
    """Add NAME and the model flags: --width-mult, --groups, --version, --bypass, ..."""
    if name:
        parser.add_argument("name", metavar="NAME", help="model name (see `lightnets models`)")
    group = parser.add_argument_group("model")
    group.add_argument("--width-mult", type=float, help="width multiplier (alpha)")
    group.add_argument("--groups", type=int, help="ShuffleNet V1 group count g")
    group.add_argument(
        "--version",
        dest="model_version",
        metavar="V",
        help="SqueezeNet version (1.0 or 1.1) when NAME is 'squeezenet'",
    )
    group.add_argument(
        "--bypass",
        choices=("none", "simple", "complex"),
        help="SqueezeNet bypass connections (paper, Section 6)",
    )
    group.add_argument(
        "--batch-norm",
        action="store_true",
        default=None,
        help="SqueezeNet with BatchNorm after every convolution",
    )
    group.add_argument(
        "--variant",
        choices=("imagenet", "cifar"),
        default=None,
        help="imagenet: 224 px, total stride 32; cifar: 32 px stem (default: imagenet, or the "
        "--weights file's)",
    )
    group.add_argument(
        "--weights",
        metavar="FILE",
        default=None,
        help="start from these weights: a lightnets checkpoint or .safetensors, a torchvision "
        "or timm state dict (.pth, .bin, .safetensors); unset flags are read from the file",
    )
    group.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifier outputs (default: 1000 for imagenet, 100 for cifar)",
    )
    group.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="input height and width in pixels (default: 224 imagenet, 32 cifar)",
    )


def resolve_model_name(name: str, version: str | None) -> str:
    if name == "squeezenet":
        if version is None:
            version = "1.0"
        if version not in SQUEEZENET_VERSIONS:
            raise InvalidArgumentError(f"unknown SqueezeNet version {version!r}; allowed: 1.0, 1.1")
        return SQUEEZENET_VERSIONS[version]
    if version is not None:
        raise InvalidArgumentError("--version applies only to NAME 'squeezenet'")
    return name


def model_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The create_model keyword arguments given on the command line (unset flags left out)."""
    if getattr(args, "weights", None) is not None:
        # Only what was given: the rest (width, classes, variant...) comes from the file.
        kwargs: dict[str, Any] = {
            "name": resolve_model_name(args.name, getattr(args, "model_version", None)),
            "weights": args.weights,
            "variant": args.variant,
            "num_classes": args.num_classes,
        }
    else:
        variant = args.variant or "imagenet"
        kwargs = {
            "name": resolve_model_name(args.name, getattr(args, "model_version", None)),
            "variant": variant,
            "num_classes": args.num_classes
            if args.num_classes is not None
            else (100 if variant == "cifar" else 1000),
        }
    for flag in ("width_mult", "groups", "bypass", "batch_norm"):
        value = getattr(args, flag, None)
        if value is not None:
            kwargs[flag] = value
    return kwargs


def model_from_args(args: argparse.Namespace) -> LightweightNet:
    kwargs = model_kwargs_from_args(args)
    return create_model(kwargs.pop("name"), **kwargs)


def input_size_from_args(args: argparse.Namespace, model: LightweightNet) -> tuple[int, int, int]:
    """(C, H, W) from --input-size, defaulting to the model's ``default_input_size``."""
    channels, height, _ = model.default_input_size
    size = args.input_size if args.input_size is not None else height
    if size < 1:
        raise InvalidArgumentError(f"--input-size must be >= 1, got {size}")
    return (channels, size, size)


def looks_like_checkpoint(name: str) -> bool:
    """True when NAME refers to a file (a checkpoint) rather than a registered model name."""
    from pathlib import Path

    return name.endswith((".pt", ".pth")) or "/" in name or Path(name).is_file()


def model_or_checkpoint_from_args(
    args: argparse.Namespace,
) -> tuple[LightweightNet, dict[str, Any] | None]:
    """Build NAME from the model flags, or load it when NAME is a checkpoint file.

    Returns the model in eval mode and the checkpoint dict (None for a fresh model; {} for
    torchvision or timm weights, which record no data set).
    """
    if looks_like_checkpoint(args.name):
        from lightnets.train.checkpoint import model_from_checkpoint

        model, state = model_from_checkpoint(args.name)
        return model, state
    model = model_from_args(args)
    model.eval()
    if getattr(args, "weights", None) is not None:
        from lightnets.models.weights import read_weights_file, weights_state

        # A lightnets file records its preprocessing; a foreign one is ImageNet's ({}: trained
        # weights, no data set recorded).
        return model, weights_state(read_weights_file(args.weights)) or {}
    return model, None
