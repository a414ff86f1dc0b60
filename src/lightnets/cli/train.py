"""``lightnets train``: train a model on a data set (one process, or DDP under torchrun)."""

from __future__ import annotations

import argparse
from typing import Any

from lightnets.cli.common import add_model_arguments, resolve_model_name
from lightnets.errors import InvalidArgumentError

EPILOG = """\
--batch-size is the GLOBAL batch: under torchrun each of N processes takes batch/N.
Examples:
  lightnets train --model shufflenet_v2 --width-mult 0.5 --dataset fashion-mnist \\
      --output runs/fmnist --epochs 5 --recipe cosine --lr 0.2
  lightnets train --resume runs/fmnist --epochs 10
  torchrun --nproc-per-node 2 -m lightnets train --model mobilenet_v2 --dataset cifar100 ...
"""

#: Command-line flag -> recipe field.
RECIPE_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
    "decay_norm_and_bias",
    "warmup_epochs",
    "milestones",
    "gamma",
    "min_lr",
    "label_smoothing",
    "clip_grad",
    "ema_decay",
)
#: Command-line flag -> TrainConfig field (run settings).
CONFIG_FLAGS = (
    "dataset",
    "data_dir",
    "output",
    "val_size",
    "train_subset",
    "seed",
    "deterministic",
    "amp",
    "channels_last",
    "compile",
    "sync_bn",
    "tensorboard",
    "device",
    "num_workers",
    "cutout",
    "random_erasing",
    "download",
    "weights",
    "freeze_backbone",
    "lr_backbone",
    "freeze_bn",
)
MODEL_FLAGS = ("width_mult", "groups", "bypass", "batch_norm", "drop_rate")


def register(subparsers: argparse._SubParsersAction) -> None:
    from lightnets.data import DATASET_NAMES
    from lightnets.train.recipes import OPTIMIZERS, RECIPES

    parser = subparsers.add_parser(
        "train",
        help="train a model on CIFAR, (Fashion-)MNIST, an image folder or synthetic data",
        description="Train a model. Writes RUN_DIR/{config.json, metrics.jsonl, last.pt, "
        "best.pt, summary.json, curves.png}.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        dest="name",
        metavar="NAME",
        help="model name (see `lightnets models`); optional with --resume",
    )
    add_model_arguments(parser, name=False)
    # None = not given: the data set decides (cifar up to 64 px, imagenet above).
    parser.set_defaults(variant=None)
    parser.add_argument(
        "--drop-rate",
        type=float,
        default=None,
        help="dropout before the classifier, for models that have one",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset", choices=DATASET_NAMES, default=None, help="data set (default: synthetic)"
    )
    data.add_argument("--data-dir", default=None, help="where the data set lives")
    data.add_argument(
        "--val-size", type=int, default=None, help="validation images carved from the training set"
    )
    data.add_argument(
        "--train-subset",
        type=int,
        default=None,
        metavar="N",
        help="train on the first N training images only",
    )
    data.add_argument(
        "--cutout", type=int, default=None, metavar="PIXELS", help="cutout square side (0: off)"
    )
    data.add_argument(
        "--random-erasing",
        type=float,
        default=None,
        metavar="P",
        help="random erasing probability (0: off)",
    )
    data.add_argument(
        "--workers",
        dest="num_workers",
        type=int,
        default=None,
        help="decoding processes for image folders (default 0)",
    )
    data.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="download CIFAR or MNIST if missing (checksums verified)",
    )

    runs = parser.add_argument_group("run")
    runs.add_argument(
        "--output",
        "-o",
        metavar="RUN_DIR",
        default=None,
        help="run directory (refused if it already holds a checkpoint)",
    )
    runs.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR exactly where its last.pt left off",
    )
    runs.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    runs.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="deterministic kernels (bitwise-reproducible on the CPU)",
    )
    runs.add_argument(
        "--amp",
        choices=("bf16", "fp16", "none"),
        default=None,
        help="mixed precision: bf16 (CPU, CUDA), fp16 (CUDA), none (default)",
    )
    runs.add_argument(
        "--channels-last", action="store_true", default=None, help="NHWC memory format"
    )
    runs.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile the model"
    )
    runs.add_argument(
        "--sync-bn",
        action="store_true",
        default=None,
        help="SyncBatchNorm across processes (CUDA, torchrun)",
    )
    runs.add_argument(
        "--tensorboard",
        action="store_true",
        default=None,
        help="also log to RUN_DIR/tensorboard (needs lightnets[tensorboard])",
    )
    runs.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available"
    )

    tune = parser.add_argument_group("fine-tuning (with --weights)")
    tune.add_argument(
        "--freeze-backbone",
        action="store_true",
        default=None,
        help="train only the classifier (backbone weights and BatchNorm statistics fixed)",
    )
    tune.add_argument(
        "--lr-backbone",
        type=float,
        default=None,
        metavar="FACTOR",
        help="backbone learning rate = lr x FACTOR (default 1)",
    )
    tune.add_argument(
        "--freeze-bn",
        action="store_true",
        default=None,
        help="keep every BatchNorm's running statistics (use them in training too)",
    )

    opt = parser.add_argument_group("recipe (every field overrides the recipe's value)")
    opt.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default=None,
        help="cifar (default): SGD 0.1, x0.2 at 30/60/80%%, 200 epochs; "
        "cosine: warm-up + cosine; onecycle",
    )
    opt.add_argument("--epochs", type=int, default=None)
    opt.add_argument("--batch-size", type=int, default=None, help="global batch size")
    opt.add_argument("--lr", type=float, default=None, help="peak learning rate")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    opt.add_argument("--momentum", type=float, default=None)
    opt.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None)
    opt.add_argument("--weight-decay", type=float, default=None)
    opt.add_argument(
        "--decay-norm-and-bias",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weight decay on BatchNorm and biases too (default: no)",
    )
    opt.add_argument(
        "--warmup-epochs",
        type=float,
        default=None,
        help="linear warm-up length in epochs (may be fractional)",
    )
    opt.add_argument(
        "--milestones",
        type=float,
        nargs="+",
        default=None,
        metavar="FRACTION",
        help="step schedule: fractions of the epochs where lr is multiplied by gamma",
    )
    opt.add_argument("--gamma", type=float, default=None)
    opt.add_argument("--min-lr", type=float, default=None, help="cosine schedule's final lr")
    opt.add_argument("--label-smoothing", type=float, default=None)
    opt.add_argument(
        "--clip-grad",
        type=float,
        default=None,
        metavar="NORM",
        help="clip the gradient's global L2 norm",
    )
    opt.add_argument(
        "--ema",
        dest="ema_decay",
        type=float,
        default=None,
        metavar="DECAY",
        help="keep an EMA of the weights (e.g. 0.999) and evaluate with it",
    )
    parser.set_defaults(func=run)


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def config_from_args(args: argparse.Namespace):
    """The run's :class:`TrainConfig` (merged with the stored one for --resume) and resume flag."""
    from lightnets.train.config import TrainConfig, resume_config
    from lightnets.train.recipes import get_recipe

    model_hparams = _given(args, MODEL_FLAGS)
    recipe_overrides = _given(args, RECIPE_FLAGS)
    settings = _given(args, CONFIG_FLAGS)
    if args.variant is not None:
        settings["variant"] = args.variant
    if args.input_size is not None:
        settings["image_size"] = args.input_size
    name = resolve_model_name(args.name, args.model_version) if args.name is not None else None
    if args.num_classes is not None:
        settings["num_classes"] = args.num_classes  # with --weights only (TrainConfig checks)
    if args.resume is not None:
        if args.recipe is not None:
            recipe_overrides["name"] = args.recipe
        overrides = {
            **settings,
            "model": name,
            "model_hparams": model_hparams,
            "recipe": recipe_overrides,
        }
        return resume_config(args.resume, overrides), True
    if name is None:
        raise InvalidArgumentError("--model NAME is required (or --resume RUN_DIR)")
    if args.output is None:
        raise InvalidArgumentError("--output RUN_DIR is required (or --resume RUN_DIR)")
    recipe = get_recipe(args.recipe or "cifar", **recipe_overrides)
    return TrainConfig(model=name, model_hparams=model_hparams, recipe=recipe, **settings), False


def run(args: argparse.Namespace) -> int:
    from lightnets.train.trainer import train

    config, resume = config_from_args(args)
    train(config, resume=resume)
    return 0
