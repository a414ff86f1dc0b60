"""The configuration of a training run, as plain data stored in every checkpoint.

A resumed run takes its configuration from its checkpoint; only the settings that do not change
the arithmetic of training (where the data lives, the device, logging) may differ, plus
``epochs`` (which stretches the schedule, so the continuation is then no longer exact).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightnets.errors import CheckpointError, InvalidArgumentError
from lightnets.train.recipes import Recipe, get_recipe

AMP_MODES = ("none", "bf16", "fp16")
#: Settings a resumed run may change.
RESUME_MUTABLE = frozenset(
    {"data_dir", "device", "tensorboard", "compile", "num_workers", "epochs", "output"}
)
#: Recipe fields that are also top-level flags (``--lr`` overrides ``recipe.lr``).
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


@dataclass
class TrainConfig:
    """Everything a run needs besides the code; ``recipe`` holds the optimisation settings."""

    model: str
    output: str
    dataset: str = "synthetic"
    data_dir: str | None = None
    #: create_model hyperparameters other than name and num_classes (width_mult, groups, ...).
    model_hparams: dict[str, Any] = field(default_factory=dict)
    #: "cifar" or "imagenet"; None picks cifar for inputs up to 64 px, else imagenet.
    variant: str | None = None
    recipe: Recipe = field(default_factory=lambda: get_recipe("cifar"))
    val_size: int | None = None
    train_subset: int | None = None
    image_size: int | None = None
    seed: int = 0
    deterministic: bool = False
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    tensorboard: bool = False
    device: str | None = None
    num_workers: int = 0
    cutout: int = 0
    random_erasing: float = 0.0
    download: bool = False
    #: Fine-tuning (train/finetune.py): start from this weights file; a classifier size other
    #: than the file's needs ``num_classes`` (= the data set's) to be given.
    weights: str | None = None
    num_classes: int | None = None
    freeze_backbone: bool = False
    lr_backbone: float = 1.0
    freeze_bn: bool = False

    def validate(self) -> TrainConfig:
        from lightnets.data import DATASET_NAMES
        from lightnets.train.finetune import check_finetune_options

        self.recipe.validate()
        check_finetune_options(self)
        if self.dataset not in DATASET_NAMES:
            raise InvalidArgumentError(
                f"unknown dataset {self.dataset!r}; allowed: {', '.join(DATASET_NAMES)}"
            )
        if self.amp not in AMP_MODES:
            raise InvalidArgumentError(
                f"unknown amp mode {self.amp!r}; allowed: {', '.join(AMP_MODES)}"
            )
        if self.variant not in (None, "cifar", "imagenet"):
            raise InvalidArgumentError(
                f"unknown variant {self.variant!r}; allowed: cifar, imagenet"
            )
        for name in ("val_size", "train_subset"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidArgumentError(f"{name.replace('_', ' ')} must be >= 0, got {value}")
        if self.train_subset == 0:
            raise InvalidArgumentError("train subset must be >= 1 image")
        if self.image_size is not None and self.image_size < 8:
            raise InvalidArgumentError(f"input size must be >= 8 pixels, got {self.image_size}")
        if self.num_workers < 0:
            raise InvalidArgumentError(f"workers must be >= 0, got {self.num_workers}")
        if self.cutout < 0:
            raise InvalidArgumentError(f"cutout must be >= 0 pixels, got {self.cutout}")
        if not 0 <= self.random_erasing <= 1:
            raise InvalidArgumentError(
                f"random erasing probability must be in [0, 1], got {self.random_erasing}"
            )
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
        return cls(**kwargs)


def resume_config(run_dir: str | Path, overrides: dict[str, Any]) -> TrainConfig:
    """The stored configuration of the run in ``run_dir``, with the allowed ``overrides``.

    ``overrides`` holds the settings given on the command line (absent ones left out); recipe
    fields go in ``overrides["recipe"]``. A different model is a :class:`CheckpointError`; any
    other differing setting that would change training is an :class:`InvalidArgumentError`.
    """
    from lightnets.train.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    path = run_dir / LAST_CHECKPOINT
    if not run_dir.is_dir():
        raise CheckpointError(f"cannot resume: {run_dir} is not a directory")
    if not path.exists():
        raise CheckpointError(
            f"cannot resume: {run_dir} holds no {LAST_CHECKPOINT} (start a new run with --output)"
        )
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict) or "epoch" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint (no run configuration)")
    try:
        stored = TrainConfig.from_dict(state["config"])
    except (TypeError, KeyError, InvalidArgumentError) as exc:
        raise CheckpointError(f"{path}: unreadable run configuration: {exc}") from exc

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

    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in ("model", "model_hparams", "recipe") or value is None:
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
    recipe_changes: dict[str, Any] = {}
    for key, value in (overrides.get("recipe") or {}).items():
        if value is None:
            continue
        if key == "epochs":
            recipe_changes[key] = value
        elif getattr(stored.recipe, key) != value:
            raise InvalidArgumentError(_fixed_message(key, value, getattr(stored.recipe, key)))
    config = dataclasses.replace(stored, **changes)
    config.output = str(run_dir)
    if recipe_changes:
        config.recipe = config.recipe.replace(**recipe_changes)
    return config.validate()


def _fixed_message(key: str, given: Any, stored: Any) -> str:
    flag = "--" + key.replace("_", "-")
    allowed = ", ".join("--" + k.replace("_", "-") for k in sorted(RESUME_MUTABLE - {"output"}))
    return (
        f"{flag} {given!r} differs from the resumed run's {stored!r}; a resumed run keeps its "
        f"configuration (only {allowed} may change)"
    )
