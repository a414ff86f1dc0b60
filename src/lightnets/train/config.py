"""The configuration of a training run, as plain data stored in every checkpoint.

A resumed run takes its configuration from its checkpoint; only the settings that do not change
the arithmetic of training (where the data lives, the device, logging) may differ, plus
``epochs`` (which stretches the schedule, so the continuation is then no longer exact).

Every field of :class:`TrainConfig` and of :class:`~lightnets.train.recipes.Recipe` is a flag of
``lightnets train`` (``cli/train.py`` generates them): its help text is the field's
``metadata["help"]``, its name ``--field-name`` unless :data:`FLAG_NAMES` says otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightnets.errors import CheckpointError, InvalidArgumentError, check_float, check_int
from lightnets.train.precision import AMP_MODES
from lightnets.train.recipes import Recipe, get_recipe

#: Settings a resumed run may change.
RESUME_MUTABLE = frozenset(
    {
        "data_dir",
        "device",
        "tensorboard",
        "compile",
        "cuda_graphs",
        "device_data",
        "static_shapes",
        "num_workers",
        "epochs",
        "output",
    }
)
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
#: Fields whose command-line flag is not ``--`` + the field name with dashes.
FLAG_NAMES = {
    "name": "--recipe",
    "num_workers": "--workers",
    "ema_decay": "--ema",
    "image_size": "--input-size",
}


def flag_for(name: str) -> str:
    """The command-line flag of a TrainConfig or Recipe field (``num_workers`` -> ``--workers``)."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _setting(default: Any, help: str, group: str = "run", **cli: Any) -> Any:
    """A run setting: its default, and its flag's help text, group and argparse extras."""
    return field(default=default, metadata={"help": help, "group": group, **cli})


@dataclass
class TrainConfig:
    """Everything a run needs besides the code; ``recipe`` holds the optimisation settings."""

    model: str
    output: str = field(
        metadata={
            "help": "run directory (refused if it holds anything else, or a run: see --resume)",
            "group": "run",
            "aliases": ("-o",),
            "metavar": "RUN_DIR",
        }
    )
    dataset: str = _setting("synthetic", "data set (default: synthetic)", "data")
    data_dir: str | None = _setting(None, "where the data set lives", "data")
    #: create_model hyperparameters other than name and num_classes (width_mult, groups, ...).
    model_hparams: dict[str, Any] = field(default_factory=dict)
    #: "cifar" or "imagenet"; None picks cifar for inputs up to 64 px, else imagenet.
    variant: str | None = None
    recipe: Recipe = field(default_factory=lambda: get_recipe("cifar"))
    #: Where the recipe's values came from, for the first line of ``train`` (from
    #: :meth:`~lightnets.train.recipes.ResolvedRecipe.describe`; None: the recipe's name).
    recipe_source: str | None = None
    val_size: int | None = _setting(None, "validation images carved from the training set", "data")
    train_subset: int | None = _setting(
        None, "train on the first N training images only", "data", metavar="N"
    )
    image_size: int | None = None
    seed: int = _setting(0, "random seed (default 0)")
    deterministic: bool = _setting(False, "deterministic kernels (bitwise-reproducible on the CPU)")
    #: The fast CUDA path (issue 9): None means "on with CUDA, off on the CPU".
    amp: str | None = _setting(
        None, "mixed precision: bf16 (CPU, CUDA), fp16 (CUDA), none (default: bf16 on CUDA)"
    )
    channels_last: bool | None = _setting(None, "NHWC memory format (default: on with CUDA)")
    compile: bool = _setting(False, "torch.compile the model")
    cuda_graphs: bool | None = _setting(
        None,
        "capture the training step in CUDA graphs (torch.compile mode reduce-overhead; "
        "default: on with CUDA in one process)",
    )
    device_data: bool | None = _setting(
        None,
        "keep the whole data set on the GPU as uint8 and augment it there "
        "(default: on with CUDA, for data sets up to 4 GiB)",
        "data",
    )
    static_shapes: bool | None = _setting(
        None,
        "pad the last evaluation batch, so that every batch has one shape (the ragged last "
        "training batch is always dropped; default: on with CUDA)",
        "data",
    )
    sync_bn: bool = _setting(False, "SyncBatchNorm across processes (CUDA, torchrun)")
    tensorboard: bool = _setting(
        False, "also log to RUN_DIR/tensorboard (needs lightnets[tensorboard])"
    )
    device: str | None = _setting(None, "default: cuda when available")
    num_workers: int = _setting(
        0, "decoding processes for image folders (default 0)", "data", metavar="N"
    )
    cutout: int = _setting(0, "cutout square side (0: off)", "data", metavar="PIXELS")
    random_erasing: float = _setting(
        0.0, "random erasing probability (0: off)", "data", metavar="P"
    )
    download: bool = _setting(
        False, "download CIFAR or MNIST if missing (checksums verified)", "data"
    )
    #: None: on for runs of SHORT_RUN_EPOCHS or more, off for shorter ones, where the random
    #: crop and flip cost more accuracy than they give (benchmarks/short_run_accuracy.py).
    augment: bool | None = _setting(
        None,
        "random crop and flip of the training images (default: on for runs of 30 epochs or "
        "more, off for shorter runs)",
        "data",
    )
    #: Fine-tuning (train/finetune.py): start from this weights file (--weights, a model flag);
    #: a classifier size other than the file's needs ``num_classes`` (= the data set's) given.
    weights: str | None = None
    num_classes: int | None = None
    freeze_backbone: bool = _setting(
        False,
        "train only the classifier (backbone weights and BatchNorm statistics fixed)",
        "fine-tuning",
    )
    lr_backbone: float = _setting(
        1.0, "backbone learning rate = lr x FACTOR (default 1)", "fine-tuning", metavar="FACTOR"
    )
    freeze_bn: bool = _setting(
        False,
        "keep every BatchNorm's running statistics (use them in training too)",
        "fine-tuning",
    )

    def validate(self) -> TrainConfig:
        from lightnets.data import DATASET_NAMES
        from lightnets.train.finetune import check_finetune_options

        self.recipe.validate()
        check_finetune_options(self)
        _check_choice("dataset", self.dataset, DATASET_NAMES)
        _check_choice("amp", self.amp, (None, *AMP_MODES))
        _check_choice("variant", self.variant, (None, "cifar", "imagenet"))
        _check_choice("device", self.device, (None, "cpu", "cuda"))
        for name, minimum in (("val_size", 0), ("train_subset", 1), ("image_size", 8)):
            if getattr(self, name) is not None:
                check_int(flag_for(name), getattr(self, name), minimum=minimum)
        for name in ("seed", "num_workers", "cutout"):
            check_int(flag_for(name), getattr(self, name), minimum=0)
        check_float("--random-erasing", self.random_erasing, minimum=0.0, maximum=1.0)
        return self

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["recipe"] = self.recipe.to_dict()
        data["model_hparams"] = dict(self.model_hparams)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["recipe"] = Recipe.from_dict(data["recipe"])
        kwargs.setdefault("augment", True)  # runs stored before the setting always augmented
        return cls(**kwargs)


def resume_config(run_dir: str | Path, overrides: dict[str, Any]) -> TrainConfig:
    """The stored configuration of the run in ``run_dir``, with the allowed ``overrides``.

    ``overrides`` holds the settings given on the command line (absent ones left out); recipe
    fields go in ``overrides["recipe"]``. A different model is a :class:`CheckpointError`; any
    other differing setting that would change training is an :class:`InvalidArgumentError`.
    """
    run_dir = Path(run_dir)
    path, state, stored = _stored_run(run_dir)
    _check_same_model(path, state, stored, overrides)
    changes = _resume_changes(run_dir, stored, overrides)
    recipe_changes = _recipe_changes(stored.recipe, overrides.get("recipe") or {})
    config = dataclasses.replace(stored, **changes)
    config.output = str(run_dir)
    if recipe_changes:
        config.recipe = config.recipe.replace(**recipe_changes)
    return config.validate()


def _stored_run(run_dir: Path) -> tuple[Path, dict[str, Any], TrainConfig]:
    """The last checkpoint of ``run_dir``: its path, its contents and its run configuration."""
    from lightnets.train.checkpoint import load_checkpoint

    path = run_dir / LAST_CHECKPOINT
    if not run_dir.is_dir():
        raise CheckpointError(f"cannot resume: {run_dir} is not a directory")
    if not path.exists():
        raise CheckpointError(
            f"cannot resume: {run_dir} holds no {LAST_CHECKPOINT} (the run saved no checkpoint: "
            "remove the directory, or start a new run with --output)"
        )
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict) or "epoch" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint (no run configuration)")
    try:
        stored = TrainConfig.from_dict(state["config"])
    except (TypeError, KeyError, InvalidArgumentError) as exc:
        raise CheckpointError(f"{path}: unreadable run configuration: {exc}") from exc
    return path, state, stored


def _check_same_model(
    path: Path, state: dict[str, Any], stored: TrainConfig, overrides: dict[str, Any]
) -> None:
    """A :class:`CheckpointError` when ``overrides`` name another model or hyperparameters."""
    model = overrides.get("model")
    if model is not None and model != stored.model:
        raise CheckpointError(f"{path} is a checkpoint of {stored.model}, not {model}")
    hparams = overrides.get("model_hparams") or {}
    for key, value in hparams.items():
        if stored.model_hparams.get(key, state["hparams"].get(key)) != value:
            raise CheckpointError(
                f"{path} is a checkpoint of {stored.model} with {key}="
                f"{state['hparams'].get(key)!r}, not {value!r}"
            )


def _resume_changes(
    run_dir: Path, stored: TrainConfig, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The run settings ``overrides`` may change (:data:`RESUME_MUTABLE`); any other that
    differs from ``stored`` is an error."""
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in ("model", "model_hparams", "recipe", "recipe_source") or value is None:
            continue
        if key == "output":
            if Path(value).resolve() != run_dir.resolve():
                raise InvalidArgumentError(
                    f"--output {value} differs from --resume {run_dir}; a run resumes in place"
                )
            continue
        if key in RESUME_MUTABLE:
            changes[key] = value
        elif getattr(stored, key) != value:
            raise InvalidArgumentError(_fixed_message(key, value, getattr(stored, key)))
    return changes


def _recipe_changes(stored: Recipe, overrides: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields a resumed run may change (only ``epochs``); any other that differs
    from ``stored`` is an error."""
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "epochs":
            changes[key] = value
        elif getattr(stored, key) != value:
            raise InvalidArgumentError(_fixed_message(key, value, getattr(stored, key)))
    return changes


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        names = ", ".join(str(a) for a in allowed if a is not None)
        raise InvalidArgumentError(f"unknown {name} {value!r}; allowed: {names}")


def _fixed_message(key: str, given: Any, stored: Any) -> str:
    flag = flag_for(key)
    allowed = ", ".join(flag_for(k) for k in sorted(RESUME_MUTABLE - {"output"}))
    return (
        f"{flag} {given!r} differs from the resumed run's {stored!r}; a resumed run keeps its "
        f"configuration (only {allowed} may change)"
    )
