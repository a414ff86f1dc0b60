"""``lightnets quantize --qat``: a short quantization-aware fine-tune, then the runtime's int8 file.

From a training checkpoint's fp32 weights, the network is fine-tuned with fake int8 on the data
set the checkpoint records, by the trainer itself (:mod:`lightnets.train.trainer`, whose last
``--qat-epochs`` epochs are quantization-aware, :mod:`lightnets.train.qat`): same loader,
optimiser, schedule, NaN guard and checkpoints, in a temporary run directory. The schedule is
the one the PyTorch and TensorFlow QAT recipes use: short (default 10% of the original run, at
least one epoch), a small learning rate (default 1% of the run's peak, annealed by cosine, no
warm-up), BatchNorm statistics frozen after the first half. The fine-tuned network is then
converted (``convert_pt2e``) and written by the method's own lowering, as post-training int8 is.

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
from lightnets.train.qat import QAT_BACKENDS, default_qat_epochs

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
        device=device,
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


def finetune_qat(
    checkpoint: str | Path,
    state: dict[str, Any],
    method: str,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    data_dir: str | None = None,
    device: str | None = None,
) -> QatResult:
    """Fine-tune ``checkpoint`` quantization-aware for ``method`` and convert it to int8.

    Progress lines go to stderr (stdout stays clean for ``--json``). A diverging fine-tune
    stops with :class:`~lightnets.train.guard.TrainingDiverged` and nothing is written.
    """
    from lightnets.train.trainer import Trainer

    check_qat_method(method)
    stored, epochs, lr = qat_plan(state, str(checkpoint), epochs=epochs, lr=lr)
    with tempfile.TemporaryDirectory(prefix="lightnets-qat-") as folder:
        config = qat_finetune_config(
            stored,
            checkpoint,
            method,
            epochs=epochs,
            lr=lr,
            output=Path(folder, "run"),
            data_dir=data_dir,
            device=device,
        )
        trainer = Trainer(config, progress_stream=sys.stderr)
        try:
            summary = trainer.fit(test=False)  # quantize measures the int8 file itself
            qat = trainer.qat
            train_images = len(trainer.splits.train)
        finally:
            trainer.close()
    if qat is None:  # the loop starts QAT before its first epoch, and there is one at least
        raise RuntimeError(
            f"the fine-tune of {checkpoint} ended before it became quantization-aware"
        )
    converted = qat.convert(fold_quantize=method != "litert")  # litert lowers weight quantizes
    return QatResult(
        method=method,
        converted=converted.cpu(),
        quantizer=qat.quantizer,
        epochs=epochs,
        lr=lr,
        train_images=train_images,
        dataset=summary["dataset"],
        weights=qat.backend.weights,
        activations=qat.backend.activations,
    )
