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

from lightnets.errors import (
    InvalidArgumentError,
    check_float,
    check_int,
    check_threads,
    max_threads,
)
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
        "threads",
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


#: Data-loading processes allowed per logical CPU: decoding waits on disk as well as on the
#: CPU, so a few per core can pay; thousands only exhaust the process table and memory.
WORKERS_PER_CPU = 4


def max_workers() -> int:
    """The most ``--workers`` accepts on this machine."""
    return WORKERS_PER_CPU * max_threads()


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
    threads: int | None = _setting(
        None,
        "torch threads (default: OMP_NUM_THREADS when set, else the cores free when the run "
        "starts, at most the physical cores; printed, and recorded in metrics.jsonl)",
        metavar="N",
    )
    num_workers: int = _setting(
        0,
        "decoding processes for image folders (default 0; at most "
        f"{WORKERS_PER_CPU} per logical CPU)",
        "data",
        metavar="N",
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
    #: Quantization-aware training (train/qat.py): the last ``qat_epochs`` epochs train with
    #: fake int8 for ``qat_backend``'s quantizer; the checkpoint records it.
    qat_epochs: int = _setting(
        0,
        "train the last N epochs quantization-aware: fake int8 as QAT_BACKEND runs it, BatchNorm "
        "statistics frozen after the first half of them (default 0: off)",
        metavar="N",
    )
    qat_backend: str = _setting(
        "executorch",
        "the runtime whose int8 quantizer --qat-epochs trains for (default executorch)",
    )
    qat_reduce_range: bool | None = _setting(
        None,
        "weights on a 7-bit grid, for onnxruntime and openvino, whose x86 int8 kernels saturate "
        "with 8-bit weights on CPUs without VNNI (default: on where this CPU lacks VNNI and AMX)",
    )

    def validate(self) -> TrainConfig:
        from lightnets.data import DATASET_NAMES
        from lightnets.data.splits import MAX_SEED
        from lightnets.train.finetune import check_finetune_options

        self.recipe.validate()
        check_finetune_options(self)
        _check_model_hparams(self.model_hparams)
        _check_choice("dataset", self.dataset, DATASET_NAMES)
        _check_choice("amp", self.amp, (None, *AMP_MODES))
        _check_choice("variant", self.variant, (None, "cifar", "imagenet"))
        _check_choice("device", self.device, (None, "cpu", "cuda"))
        for name, minimum in (("val_size", 0), ("train_subset", 1), ("image_size", 8)):
            if getattr(self, name) is not None:
                check_int(flag_for(name), getattr(self, name), minimum=minimum)
        check_int(flag_for("seed"), self.seed, minimum=0, maximum=MAX_SEED)
        if self.threads is not None:
            check_threads("--threads", self.threads)
        check_int(flag_for("num_workers"), self.num_workers, minimum=0, maximum=max_workers())
        check_int(flag_for("cutout"), self.cutout, minimum=0)
        check_float("--random-erasing", self.random_erasing, minimum=0.0, maximum=1.0)
        _check_qat(self)
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


def _check_model_hparams(hparams: Any) -> None:
    """``model_hparams`` holds a family's hyperparameters only: never a create_model argument,
    ``weights`` least of all (a stored run naming a file would make a resume open it)."""
    from lightnets.stored import MODEL_ARGUMENTS, PATH_ARGUMENTS

    if not isinstance(hparams, dict):
        raise InvalidArgumentError(f"model hyperparameters must be a dict, got {hparams!r}")
    reserved = sorted(set(hparams) & {*MODEL_ARGUMENTS, *PATH_ARGUMENTS})
    if reserved:
        raise InvalidArgumentError(
            f"model hyperparameters may not set {', '.join(reserved)} (create_model arguments; "
            "weights are given with --weights)"
        )


def _check_qat(config: TrainConfig) -> None:
    """--qat-epochs: within the run, and without the settings an exported graph cannot take."""
    from lightnets.train.qat import QAT_BACKENDS, check_reduce_range

    _check_choice("qat_backend", config.qat_backend, tuple(QAT_BACKENDS))
    check_int("--qat-epochs", config.qat_epochs, minimum=0, maximum=config.recipe.epochs)
    if config.qat_epochs == 0:
        if config.qat_reduce_range is not None:
            raise InvalidArgumentError("--qat-reduce-range applies only with --qat-epochs")
        return
    check_reduce_range(config.qat_backend, config.qat_reduce_range, "--qat-reduce-range")
    clashes = {
        "--ema": config.recipe.ema_decay is not None,
        "--compile": config.compile,
        "--cuda-graphs": bool(config.cuda_graphs),
        "--channels-last": bool(config.channels_last),
        "--sync-bn": config.sync_bn,
        "--freeze-bn": config.freeze_bn,
        "--freeze-backbone": config.freeze_backbone,
    }
    given = [flag for flag, on in clashes.items() if on]
    if given:
        raise InvalidArgumentError(
            f"--qat-epochs does not combine with {given[0]} (the quantization-aware network is "
            f"an exported graph; not allowed with it: {', '.join(clashes)})"
        )


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
