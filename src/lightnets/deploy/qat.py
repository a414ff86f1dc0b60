"""``lightnets quantize --qat``: a short quantization-aware fine-tune, then the runtime's int8 file.

From a training checkpoint's fp32 weights, the network is fine-tuned with fake int8 on the data
set the checkpoint records, by the trainer itself (:mod:`lightnets.train.trainer`, whose last
``--qat-epochs`` epochs are quantization-aware, :mod:`lightnets.train.qat`): same loader,
optimiser, schedule, NaN guard and checkpoints, in a run directory beside the int8 file
(``OUT.qat-run``, :func:`qat_run_dir`): a Ctrl-C leaves the fine-tune's exact position there and
the same command resumes it, as ``train --resume`` does; the folder goes once OUT is written.
The schedule is the one the PyTorch and TensorFlow QAT recipes use: short (default 10% of the
original run, at least one epoch), a small learning rate (default 1% of the run's peak,
annealed by cosine, no warm-up), BatchNorm statistics frozen after the first half. The
fine-tuned network is then converted (``convert_pt2e``) and written by the method's own
lowering, as post-training int8 is.

QAT needs the quantizer it trained against to be the one that lowers (:data:`QAT_METHODS`):
the device runtimes' PT2E quantizers for ExecuTorch and LiteRT. ONNX Runtime and OpenVINO are
given the converted network itself, exported as QDQ ONNX (``torch.onnx.export`` turns its
quantize/dequantize pairs into QuantizeLinear/DequantizeLinear, which ONNX Runtime fuses into
QLinearConv and OpenVINO reads as FakeQuantize, then runs as u8 convolutions): the int8 the
network trained with, not a second quantization of it. Core ML's int8 is weight-only
compression with no QAT counterpart here.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from lightnets.errors import InvalidArgumentError, check_float, check_int
from lightnets.train.qat import QAT_BACKENDS, default_qat_epochs, default_reduce_range

if TYPE_CHECKING:
    from lightnets.train.config import TrainConfig

__all__ = [
    "QAT_METHODS",
    "QatResult",
    "check_qat_method",
    "check_qat_result",
    "finetune_qat",
    "qat_finetune_config",
    "qat_plan",
    "qat_run_dir",
    "remove_qat_run",
]

#: The ``quantize --method`` values ``--qat`` supports.
QAT_METHODS = tuple(QAT_BACKENDS)
#: The fine-tune's peak learning rate, as a fraction of the original run's.
LR_FRACTION = 0.01


def check_qat_method(method: str) -> None:
    if method not in QAT_METHODS:
        raise InvalidArgumentError(
            f"--qat supports only --method {', '.join(QAT_METHODS[:-1])} or {QAT_METHODS[-1]} "
            f"(a PT2E quantizer whose int8 the runtime runs as trained); got {method}"
        )


@dataclass(frozen=True)
class QatResult:
    """The fine-tuned network converted to int8, and how it was trained."""

    method: str  # the quantize method whose quantizer it was trained with
    converted: nn.Module
    quantizer: Any
    epochs: int
    lr: float
    train_images: int
    dataset: str
    weights: str
    activations: str
    wall_time_s: float = 0.0  # the fine-tune's, over every session of an interrupted one
    reduce_range: bool = False  # weights on the 7-bit grid (train/qat.py)

    def describe(self) -> str:
        return (
            f"{self.epochs} epoch{'s' if self.epochs != 1 else ''} on {self.train_images:,} "
            f"{self.dataset} training images (lr {self.lr:.3g}, cosine, BatchNorm statistics "
            f"frozen after half)"
        )


def check_qat_result(qat: QatResult, method: str) -> None:
    """One-line error unless ``qat`` (fine-tuned for ``qat.method``) is ``method``'s int8: a
    network trained against one quantizer's grid is not another's."""
    check_qat_method(method)
    if not QAT_BACKENDS[method].quantizes_like(QAT_BACKENDS[qat.method]):
        raise InvalidArgumentError(
            f"the network was fine-tuned quantization-aware for {qat.method}, whose quantizer "
            f"is not {method}'s; fine-tune it for {method}, or write it with --method {qat.method}"
        )


def qat_plan(
    state: dict[str, Any], where: str, *, epochs: int | None, lr: float | None
) -> tuple[Any, int, float]:
    """The stored run's configuration, the fine-tune's epochs and peak lr (checked)."""
    from lightnets.train.config import TrainConfig

    config = state.get("config")
    if not isinstance(config, dict):
        raise InvalidArgumentError(
            f"{where} records no training run: --qat fine-tunes on the data set a checkpoint "
            "written by `lightnets train` records"
        )
    stored = TrainConfig.from_dict(config)
    if epochs is not None:
        check_int("--epochs", epochs, minimum=1)
    if lr is not None:
        check_float("--lr", lr, minimum=0.0, exclusive_minimum=True)
    epochs = epochs if epochs is not None else default_qat_epochs(stored.recipe.epochs)
    lr = lr if lr is not None else LR_FRACTION * stored.recipe.lr
    return stored, epochs, lr


def qat_finetune_config(
    stored: TrainConfig,
    checkpoint: str | Path,
    method: str,
    *,
    epochs: int,
    lr: float,
    output: str | Path,
    data_dir: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    reduce_range: bool | None = None,
) -> TrainConfig:
    """The trainer's configuration for the fine-tune of ``checkpoint`` (its run's configuration
    ``stored``, from :func:`qat_plan`): the run's model, data and optimiser, a cosine schedule
    without warm-up over ``epochs``, all of them quantization-aware for ``method``. Its first
    line names this fine-tune, not the recipe of the run it starts from."""
    recipe = dataclasses.replace(
        stored.recipe,
        name="cosine",
        epochs=epochs,
        lr=lr,
        schedule="cosine",
        warmup_epochs=0.0,
        min_lr=0.0,
        ema_decay=None,
    ).validate()
    return dataclasses.replace(
        stored,
        output=str(output),
        data_dir=data_dir or stored.data_dir,
        weights=str(checkpoint),
        num_classes=None,
        recipe=recipe,
        recipe_source=(
            f"cosine (a quantization-aware fine-tune of {Path(checkpoint).name} for {method}: "
            f"peak lr {lr:.3g}, no warm-up)"
        ),
        qat_epochs=epochs,
        qat_backend=method,
        qat_reduce_range=reduce_range,
        device=device,
        threads=threads if threads is not None else stored.threads,
        compile=False,
        cuda_graphs=None,
        channels_last=None,
        sync_bn=False,
        freeze_bn=False,
        freeze_backbone=False,
        lr_backbone=1.0,
        tensorboard=False,
        download=False,
    )


#: The fine-tune's run directory beside the int8 file OUT: ``OUT`` with this suffix.
RUN_SUFFIX = ".qat-run"
#: The marker field of a fine-tune's run directory naming the checkpoint it started from.
SOURCE_FIELD = "qat_source"


def qat_run_dir(output: str | Path) -> Path:
    """Where ``quantize --qat`` keeps the fine-tune writing ``output`` while it runs: beside
    it, so that a Ctrl-C leaves a run the same command resumes (``OUT.qat-run``)."""
    return Path(output).with_suffix(RUN_SUFFIX)


def _source_record(checkpoint: str | Path) -> dict[str, str]:
    from lightnets.data.download import file_digest

    path = Path(checkpoint).resolve()
    return {"path": str(path), "sha256": file_digest(path, "sha256")}


def _differences(saved: TrainConfig, planned: TrainConfig) -> list[str]:
    """What in ``planned`` (this fine-tune) differs from the ``saved`` one, in the command's
    own terms; settings a resumed run may change (device, threads, data folder) and those the
    trainer resolves (None in ``planned``; the saved run keeps its resolved value) do not."""
    from lightnets.train.config import RESUME_MUTABLE

    found = []
    for flag, key in (("--epochs", "epochs"), ("--lr", "lr")):
        was, now = getattr(saved.recipe, key), getattr(planned.recipe, key)
        if was != now:
            found.append(f"{flag} {now:g}, not {was:g}")
    if saved.qat_backend != planned.qat_backend:
        found.append(f"--method {planned.qat_backend}, not {saved.qat_backend}")
    if planned.qat_reduce_range is not None:  # not given: the run keeps the grid it trained on
        was = saved.qat_reduce_range
        if was is None:
            was = default_reduce_range(saved.qat_backend)
        if was != planned.qat_reduce_range:
            flags = ("--no-reduce-range", "--reduce-range")
            found.append(f"{flags[planned.qat_reduce_range]}, not {flags[was]}")
    named = {"weights", "recipe_source"}  # the checkpoint's path: its bytes are compared instead
    ignored = RESUME_MUTABLE | named
    ignored |= {"output", "recipe", "qat_epochs", "qat_backend", "qat_reduce_range"}
    others = [
        f.name
        for f in dataclasses.fields(planned)
        if f.name not in ignored
        and getattr(planned, f.name) is not None
        and getattr(saved, f.name) != getattr(planned, f.name)
    ]
    if others or (not found and saved.recipe != planned.recipe):
        found.append(f"the run's {', '.join(others) or 'recipe'}")
    return found


def _resumed_config(
    run_dir: Path, planned: TrainConfig, source: dict[str, str], restart: bool
) -> TrainConfig | None:
    """The configuration to resume when ``run_dir`` holds this fine-tune, interrupted (its
    stored one, as ``train --resume`` takes it); None to start anew: ``run_dir`` is missing,
    empty or stopped before its first checkpoint. A fine-tune of other settings or of another
    checkpoint is refused, or removed when ``restart``."""
    import shutil

    from lightnets.train.config import LAST_CHECKPOINT
    from lightnets.train.resume import resume_config, stored_run
    from lightnets.train.rundir import MARKER, read_marker

    if not run_dir.exists():
        return None
    marker = read_marker(run_dir / MARKER, "run") if run_dir.is_dir() else None
    if marker is None:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            return None
        raise InvalidArgumentError(
            f"{run_dir}, where --qat keeps its fine-tune, exists and is not one: move it away "
            "or choose another -o"
        )
    if not (run_dir / LAST_CHECKPOINT).exists():
        return None
    _, _, saved = stored_run(run_dir)
    differences = _differences(saved, planned)
    recorded = marker.get(SOURCE_FIELD)
    if not isinstance(recorded, dict) or recorded.get("sha256") != source["sha256"]:
        was = recorded.get("path") if isinstance(recorded, dict) else None
        differences.insert(0, f"a checkpoint other than {was or 'this one'} (its bytes differ)")
    if not differences:
        changed = ("data_dir", "device", "threads")
        return resume_config(run_dir, {key: getattr(planned, key) for key in changed})
    if restart:
        shutil.rmtree(run_dir)
        return None
    raise InvalidArgumentError(
        f"{run_dir} holds an interrupted fine-tune of other settings ({'; '.join(differences)}): "
        "rerun with them to continue it, or add --force to start the fine-tune over"
    )


def remove_qat_run(run_dir: str | Path) -> None:
    """Delete a fine-tune's run directory once its int8 file is written (only ours: a folder
    without lightnets' run marker is left alone)."""
    import shutil

    from lightnets.train.rundir import MARKER, read_marker

    run_dir = Path(run_dir)
    if run_dir.is_dir() and read_marker(run_dir / MARKER, "run") is not None:
        shutil.rmtree(run_dir)


def finetune_qat(
    checkpoint: str | Path,
    state: dict[str, Any],
    method: str,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    run_dir: str | Path | None = None,
    restart: bool = False,
    continue_with: str | None = None,
    reduce_range: bool | None = None,
) -> QatResult:
    """Fine-tune ``checkpoint`` quantization-aware for ``method`` and convert it to int8.

    The fine-tune is a training run in ``run_dir`` (default: a temporary folder, lost with a
    Ctrl-C). There a Ctrl-C leaves its exact position, as in ``train``, and the same call
    resumes it, provided the checkpoint (by its SHA-256) and the settings are the same; other
    ones are refused, or with ``restart`` start over. ``continue_with``: the command named in
    the Ctrl-C message. ``reduce_range``: 7-bit weights (None: where this CPU needs them,
    :func:`lightnets.train.qat.default_reduce_range`). The caller removes ``run_dir``
    (:func:`remove_qat_run`) once the int8 file is written; a run directory this call created
    is removed if the fine-tune fails.

    Progress lines go to stderr (stdout stays clean for ``--json``). A diverging fine-tune
    stops with :class:`~lightnets.train.guard.TrainingDiverged` and nothing is written.
    """
    check_qat_method(method)
    stored, epochs, lr = qat_plan(state, str(checkpoint), epochs=epochs, lr=lr)

    def planned(output: Path) -> TrainConfig:
        return qat_finetune_config(
            stored,
            checkpoint,
            method,
            epochs=epochs,
            lr=lr,
            output=output,
            data_dir=data_dir,
            device=device,
            threads=threads,
            reduce_range=reduce_range,
        )

    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="lightnets-qat-") as folder:
            return _finetune(planned(Path(folder, "run")), method, resume=False)
    run_dir = Path(run_dir)
    config = planned(run_dir)
    source = _source_record(checkpoint)
    resumed = _resumed_config(run_dir, config, source, restart)
    created = not run_dir.exists()
    try:
        return _finetune(
            resumed or config,
            method,
            resume=resumed is not None,
            run_record={SOURCE_FIELD: source},
            continue_with=continue_with,
        )
    except KeyboardInterrupt:
        raise  # its exact position is saved: the same command continues it
    except BaseException:
        if created:
            remove_qat_run(run_dir)
        raise


def _finetune(config: TrainConfig, method: str, *, resume: bool, **options: Any) -> QatResult:
    """Run the fine-tune ``config`` (``options``: the trainer's) and convert it to int8."""
    from lightnets.train.trainer import Trainer

    trainer = Trainer(
        config,
        resume=resume,
        progress_stream=sys.stderr,
        reduce_range_flag="--no-reduce-range",  # quantize --qat's option
        **options,
    )
    try:
        summary = trainer.fit(test=False)  # quantize measures the int8 file itself
        qat = trainer.qat
        train_images = len(trainer.splits.train)
    finally:
        trainer.close()
    if qat is None:  # the loop starts QAT before its first epoch, and there is one at least
        raise RuntimeError(
            f"the fine-tune of {config.weights} ended before it became quantization-aware"
        )
    converted = qat.convert(fold_quantize=method != "litert")  # litert lowers weight quantizes
    return QatResult(
        method=method,
        converted=converted.cpu(),
        quantizer=qat.quantizer,
        epochs=config.recipe.epochs,
        lr=config.recipe.lr,
        train_images=train_images,
        dataset=summary["dataset"],
        wall_time_s=summary["wall_time_s"],
        weights=qat.weights,
        activations=qat.backend.activations,
        reduce_range=qat.reduce_range,
    )
