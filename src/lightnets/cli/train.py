"""``lightnets train``: train a model on a data set (one process, or DDP under torchrun).

The run-setting and recipe flags are generated from the fields of :class:`TrainConfig` and
:class:`Recipe` (type, help text, flag name): a new field is a new flag with no edit here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightnets.train.config import TrainConfig

import argparse
import dataclasses
import types
import typing
from typing import Any

from lightnets.cli.common import add_model_arguments, model_hparams_from_args, resolve_model_name
from lightnets.errors import InvalidArgumentError

EPILOG = """\
--batch-size is the GLOBAL batch: under torchrun each of N processes takes batch/N.
Examples:
  lightnets train --model shufflenet_v2 --width-mult 0.5 --dataset fashion-mnist \\
      --output runs/fmnist --epochs 5 --recipe cosine --lr 0.2
  lightnets train --resume runs/fmnist --epochs 10
  torchrun --nproc-per-node 2 -m lightnets train --model mobilenet_v2 --dataset cifar100 ...
"""

#: TrainConfig fields that get no generated flag: set by --model, the model flags (--weights,
#: --num-classes among them), --recipe.
NOT_FLAGS = frozenset(
    {
        "model",
        "model_hparams",
        "variant",
        "recipe",
        "recipe_source",
        "image_size",
        "weights",
        "num_classes",
    }
)
#: Recipe fields land in ``args.recipe_<field>`` (``name`` would clash with --model's).
RECIPE_PREFIX = "recipe_"
#: Help for the recipe's fields (a field's ``metadata["help"]``, when it has one, wins).
RECIPE_HELP = {
    "name": "cifar: SGD 0.1, x0.2 at 30/60/80%%, 200 epochs; cosine: warm-up + cosine; "
    "onecycle: one-cycle policy; finetune: lower lr, cosine (default: finetune with --weights, "
    "else onecycle for --epochs below 30, else cifar; each model family may set its own values "
    "of a recipe, said in the first line)",
    "batch_size": "global batch size",
    "lr": "peak learning rate",
    "decay_norm_and_bias": "weight decay on BatchNorm and biases too (default: no)",
    "warmup_epochs": "linear warm-up length in epochs (may be fractional)",
    "warmup_cap": "the warm-up lasts at most this fraction of the run (default 0.1)",
    "milestones": "step schedule: fractions of the epochs where lr is multiplied by gamma",
    "min_lr": "cosine schedule's final lr",
    "pct_start": "onecycle: fraction of the steps spent rising to lr",
    "div_factor": "onecycle: the lr starts at lr / div_factor",
    "final_div_factor": "onecycle: the lr ends at lr / (div_factor * final_div_factor)",
    "clip_grad": "clip the gradient's global L2 norm",
    "ema_decay": "keep an EMA of the weights (e.g. 0.999) and evaluate with it",
    "epochs": "training epochs",
    "optimizer": "sgd (with momentum) or adamw",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum (SGD)",
    "weight_decay": "weight decay (AdamW: decoupled)",
    "schedule": "lr schedule: step (x gamma at the milestones), cosine, onecycle",
    "gamma": "step schedule: lr factor at each milestone",
    "label_smoothing": "cross-entropy label smoothing, 0 to 1",
}
RECIPE_METAVARS = {
    "milestones": "FRACTION",
    "warmup_cap": "FRACTION",
    "clip_grad": "NORM",
    "ema_decay": "DECAY",
}


def _choices() -> dict[str, tuple[str, ...]]:
    from lightnets.data import DATASET_NAMES
    from lightnets.train.precision import AMP_MODES
    from lightnets.train.qat import QAT_BACKENDS
    from lightnets.train.recipes import OPTIMIZERS, RECIPES, SCHEDULES

    return {
        "dataset": DATASET_NAMES,
        "amp": AMP_MODES,
        "device": ("cpu", "cuda"),
        "name": tuple(RECIPES),
        "optimizer": OPTIMIZERS,
        "schedule": SCHEDULES,
        "qat_backend": tuple(QAT_BACKENDS),
    }


def _recipe_defaults() -> dict[str, str]:
    """Each recipe field's default as help text: one value when every recipe agrees, else
    each recipe's (read from the recipes themselves, so the help cannot go stale)."""
    from lightnets.train.recipes import RECIPES

    def shown(value: Any) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, tuple):
            return " ".join(f"{v:g}" for v in value)
        if value is None:
            return "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    texts = {}
    for f in dataclasses.fields(next(iter(RECIPES.values()))):
        values = {name: shown(getattr(recipe, f.name)) for name, recipe in RECIPES.items()}
        if len(set(values.values())) == 1:
            texts[f.name] = f"default {next(iter(values.values()))}"
        else:
            each = ", ".join(f"{name} {value}" for name, value in values.items())
            texts[f.name] = f"default: the recipe's: {each}"
    return texts


def _data_defaults() -> dict[str, str]:
    """Defaults of the data settings that depend on the data set, from the data layer."""
    from lightnets.data.cifar import DEFAULT_DIR
    from lightnets.data.idx import DEFAULT_DIRS
    from lightnets.data.splits import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SIZE

    fixed = sorted(set(DEFAULT_VAL_SIZE.values()))
    dirs = ", ".join(f"{path} ({name})" for name, path in DEFAULT_DIRS.items())
    return {
        "val_size": f"default {', '.join(f'{v:,}' for v in fixed)} for "
        f"{', '.join(DEFAULT_VAL_SIZE)}; {100 * DEFAULT_VAL_FRACTION:g}%% of the training "
        "images for folder and synthetic; 0: none",
        "data_dir": f"default: {dirs}, ./{DEFAULT_DIR} (cifar10, cifar100); required for folder",
    }


def _field_kwargs(hint: Any) -> dict[str, Any]:
    """argparse keywords for a field of type ``hint`` (``X | None`` is read as ``X``)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple:
        return {"type": typing.get_args(hint)[0], "nargs": "+"}
    return {"type": hint}


def add_dataclass_flags(
    groups: dict[str, Any],
    cls: type,
    *,
    skip: frozenset[str] = frozenset(),
    extra_help: dict[str, str] | None = None,
    defaults: dict[str, str] | None = None,
    prefix: str = "",
) -> tuple[str, ...]:
    """One flag per field of ``cls`` (default None: "not given"); returns the field names.

    ``groups`` maps a field's ``metadata["group"]`` (default ``"run"``) to an argument group;
    each value lands in ``args.<prefix><field name>``. ``defaults[field]`` is appended to a help
    text that does not state its default already.
    """
    from lightnets.train.config import flag_for

    hints = typing.get_type_hints(cls)
    choices = _choices()
    names = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kwargs = _field_kwargs(hints[f.name])
        if f.name in choices:
            kwargs = {"choices": choices[f.name]}
        help_text = f.metadata.get("help") or (extra_help or {}).get(f.name)
        default = (defaults or {}).get(f.name)
        if default is not None and "default" not in (help_text or ""):
            help_text = f"{help_text} ({default})" if help_text else default
        metavar = f.metadata.get("metavar") or RECIPE_METAVARS.get(f.name)
        if metavar is None and prefix and "type" in kwargs:
            metavar = f.name.upper()  # --epochs EPOCHS, not the destination RECIPE_EPOCHS
        if metavar is not None:
            kwargs["metavar"] = metavar
        group = groups[f.metadata.get("group", "run")]
        flags = (flag_for(f.name), *f.metadata.get("aliases", ()))
        group.add_argument(*flags, dest=prefix + f.name, default=None, help=help_text, **kwargs)
        names.append(f.name)
    return tuple(names)


def register(subparsers: argparse._SubParsersAction) -> None:
    from lightnets.train.config import TrainConfig
    from lightnets.train.recipes import Recipe

    parser = subparsers.add_parser(
        "train",
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
    groups = {
        "data": parser.add_argument_group("data"),
        "run": parser.add_argument_group("run"),
        "fine-tuning": parser.add_argument_group("fine-tuning (with --weights)"),
    }
    groups["run"].add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR exactly where its last.pt left off",
    )
    config_flags = add_dataclass_flags(
        groups, TrainConfig, skip=NOT_FLAGS, defaults=_data_defaults()
    )
    recipe_group = parser.add_argument_group("recipe (every field overrides the recipe's value)")
    recipe_flags = add_dataclass_flags(
        {"run": recipe_group},
        Recipe,
        extra_help=RECIPE_HELP,
        defaults=_recipe_defaults(),
        prefix=RECIPE_PREFIX,
    )
    parser.set_defaults(func=run, config_flags=config_flags, recipe_flags=recipe_flags)


def _given(args: argparse.Namespace, names: tuple[str, ...], prefix: str = "") -> dict[str, Any]:
    values = {n: getattr(args, prefix + n, None) for n in names}
    return {n: v for n, v in values.items() if v is not None}


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """The run's :class:`TrainConfig` (merged with the stored one for --resume) and resume flag."""
    from lightnets.train.config import TrainConfig, flag_for
    from lightnets.train.recipes import resolve_recipe
    from lightnets.train.resume import resume_config

    model_hparams = model_hparams_from_args(args)
    recipe_overrides = _given(args, args.recipe_flags, RECIPE_PREFIX)
    recipe_name = recipe_overrides.pop("name", None)
    settings = _given(args, args.config_flags)
    if args.variant is not None:
        settings["variant"] = args.variant
    if args.input_size is not None:
        settings["image_size"] = args.input_size
    name = resolve_model_name(args.name, args.model_version) if args.name is not None else None
    if args.num_classes is not None:
        settings["num_classes"] = args.num_classes  # with --weights only (TrainConfig checks)
    if args.weights is not None:
        settings["weights"] = args.weights
    if args.resume is not None:
        if recipe_name is not None:
            recipe_overrides["name"] = recipe_name
        overrides = {
            **settings,
            "model": name,
            "model_hparams": model_hparams,
            "recipe": recipe_overrides,
        }
        return resume_config(args.resume, overrides), True
    if name is None:
        raise InvalidArgumentError("--model NAME is required (or --resume RUN_DIR)")
    if settings.get("output") is None:
        raise InvalidArgumentError("--output RUN_DIR is required (or --resume RUN_DIR)")
    resolved = resolve_recipe(
        name,
        recipe_name,
        pretrained=args.weights is not None,
        model_hparams=model_hparams,
        **recipe_overrides,
    )
    config = TrainConfig(
        model=name,
        model_hparams={**resolved.model_hparams, **model_hparams},
        recipe=resolved.recipe,
        recipe_source=resolved.describe(flag_for),
        **settings,
    )
    return config, False


def run(args: argparse.Namespace) -> int:
    from lightnets.train.trainer import train

    config, resume = config_from_args(args)
    train(config, resume=resume)
    return 0
