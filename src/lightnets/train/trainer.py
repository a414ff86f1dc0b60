"""The training loop: one process or data-parallel under torchrun, resumable bit for bit.

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per epoch), ``last.pt``
(every epoch, and on Ctrl-C), ``best.pt`` (best validation top-1), and at the end
``summary.json`` (test accuracy of the best weights, evaluated once) and ``curves.png``; while
a process trains in it, its lock file (``rundir.py``: ownership, locking, crash repair).

A checkpoint is written only when its weights, BatchNorm statistics and losses are finite
(checked at every epoch end, and the running loss every ``LOG_EVERY`` steps, by
:class:`~lightnets.train.guard.DivergenceGuard`); otherwise the run stops with
:class:`~lightnets.train.guard.TrainingDiverged` and the last good checkpoint stays. The run
directory and the run's position live in :mod:`lightnets.train.run_state`.

Exact resume: the data loader draws its shuffling and augmentation from (seed, epoch, rank)
alone, and a checkpoint holds every other piece of state (weights, optimiser, per-iteration
schedule, gradient scaler, EMA, the torch and Python RNGs of every rank, the metric history),
so ``--resume`` continues as if the run had never stopped. A Ctrl-C mid-epoch saves the
position inside the epoch too; the resumed run skips the batches already trained on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, cast

import torch
from torch import nn

from lightnets.analysis import machine
from lightnets.analysis.threads import (
    apply_thread_policy,
    local_processes,
    slowdown_warning,
    thread_record,
)
from lightnets.errors import CheckpointError, InvalidArgumentError, require
from lightnets.models.memory import check_input_memory, check_memory
from lightnets.train.checkpoint import load_checkpoint
from lightnets.train.config import LAST_CHECKPOINT, TrainConfig
from lightnets.train.distributed import (
    all_reduce_sum,
    barrier,
    init_distributed,
    resolve_device,
    shutdown_distributed,
)
from lightnets.train.ema import ModelEma
from lightnets.train.evaluate import evaluate
from lightnets.train.finetune import create_train_model, scale_backbone_lr
from lightnets.train.guard import DivergenceGuard
from lightnets.train.metrics import (
    EvalResult,
    at_chance,
    chance_warning,
    unlearned_classes,
    unlearned_warning,
)
from lightnets.train.precision import autocast_context
from lightnets.train.progress import format_epoch, make_progress
from lightnets.train.qat import REDUCED_RANGE_NOTE, QatNetwork, check_reduce_range
from lightnets.train.recipes import SHORT_RUN_EPOCHS, build_optimizer, build_scheduler
from lightnets.train.run_state import RunDirectory, RunProgress
from lightnets.train.rundir import CURVES, SUMMARY

#: Running metrics are read back (a device sync) and the loss checked every this many steps.
LOG_EVERY = 10
#: The first steps of a process (compilation, graph capture, autotuning) timed as warm-up.
WARMUP_STEPS = 3


def _variant_for(input_size: tuple[int, int, int]) -> str:
    return "cifar" if input_size[-1] <= 64 else "imagenet"


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _SigintFlag:
    """First Ctrl-C: finish the current step, save, stop. Second Ctrl-C: stop at once (the
    position is still saved); any later one is ignored until :meth:`restore` (called by
    :meth:`Trainer.close`), so that a user pressing it again and again cannot interrupt that
    save or the clean-up after it."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None
        self._stopping = False

    def __enter__(self) -> _SigintFlag:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            self._stopping = True
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if not self._stopping:
            self.restore()

    def restore(self) -> None:
        """Give Ctrl-C back its previous handler."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class _EpochClock:
    """An epoch's wall time, and this process's warm-up: its first steps (compilation, CUDA
    graph capture, cuDNN autotuning), timed apart so that images/s measures the steady state."""

    def __init__(self, seconds_before: float, counted_before: float) -> None:
        self.seconds_before = seconds_before  # of this epoch, before an interruption
        self.counted_before = counted_before
        self.t0 = time.perf_counter()
        self.warmup: float | None = None
        self.warm_images = 0.0  # images of the warm-up steps, on this rank

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.t0

    def end_warmup(self, sums: torch.Tensor, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.warmup = time.perf_counter() - self.t0
        self.warm_images = float(sums[2]) - self.counted_before


class Trainer:
    """Prepares a run (validating everything before writing anything) and runs it.

    Args:
        config: the run's configuration.
        resume: continue the run in ``config.output`` from its ``last.pt``.
        train_loader: a replacement for the training loader (for tests and custom data): an
            iterable of (images, labels) batches with ``__len__`` and ``set_epoch(epoch)``.
        progress_stream: where progress lines go (default stdout).
        run_record: fields written into the run directory's marker beside lightnets' own
            (what a caller needs to recognise its run later, such as the file it started from).
        continue_with: the command that continues the run after a Ctrl-C, named in its message
            (default: ``lightnets train --resume RUN_DIR``).
        reduce_range_flag: the option that keeps 8-bit weights, named when QAT defaults to 7
            bits on this CPU (default ``train``'s ``--no-qat-reduce-range``).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        train_loader: Any = None,
        progress_stream: Any = None,
        run_record: dict[str, Any] | None = None,
        continue_with: str | None = None,
        reduce_range_flag: str = "--no-qat-reduce-range",
    ) -> None:
        self.config = config.validate()
        self.continue_with = continue_with
        self.reduce_range_flag = reduce_range_flag
        self.progress_stream = progress_stream
        self.recipe = config.recipe
        self.resume = resume
        # What the set-up repaired or shortened, printed when the run starts.
        self.notes: list[str] = [n for n in [self.recipe.warmup_note()] if n]
        run: RunDirectory | None = None
        # The thread policy sets torch's count; close() gives back the caller's.
        self._threads_before = torch.get_num_threads()
        try:
            self._check_runtime()
            self._check_input_size()
            self.run = run = RunDirectory(
                Path(config.output), is_main=self.ctx.is_main, notes=self.notes, record=run_record
            )
            self.guard = DivergenceGuard(self.ctx, self.device, self.run.last)
            state = self.run.open(resume=resume)
            self._keep_the_runs_threads(state)
            self._build_data(train_loader)
            self._build_model(state)
            self._build_optimisation()
            self._restore_or_start(state)
            self._wrap_for_training()
        except BaseException:
            torch.set_num_threads(self._threads_before)
            if run is not None:
                run.unlock()
            raise

    @property
    def epoch(self) -> int:
        """Epochs completed (the one training now, counted from 0)."""
        return self.position.epoch

    @property
    def history(self) -> list[dict[str, Any]]:
        """One metrics record per completed epoch (``metrics.jsonl``)."""
        return self.position.history

    # -- set-up stages, in order ----------------------------------------------------------------

    def _check_runtime(self) -> None:
        """Device, precision and process group; refuses what this machine cannot run."""
        kind = resolve_device(self.config.device)
        self.config = config = self._resolve_fast_path(kind)
        if config.amp == "fp16" and kind != "cuda":
            raise InvalidArgumentError(
                "--amp fp16 needs CUDA (fp16 training needs its gradient scaler); "
                "on the CPU use --amp bf16"
            )
        if config.sync_bn and kind != "cuda":
            raise InvalidArgumentError("--sync-bn needs CUDA (torch's SyncBatchNorm runs on GPUs)")
        self.tb_module = None
        if config.tensorboard:
            self.tb_module = require("torch.utils.tensorboard", "tensorboard")
        self.ctx = ctx = init_distributed(config.device)
        self.device = ctx.device
        # One choice per process, said once when the run starts (_announce).
        self.thread_lines: list[str] = []
        self.threads = apply_thread_policy(
            config.threads, processes=local_processes(), announce=self.thread_lines.append
        )
        self._fastest: tuple[int, float] | None = None  # (epoch, img/s) of this process
        if self.recipe.batch_size % ctx.world_size:
            raise InvalidArgumentError(
                f"--batch-size {self.recipe.batch_size} (the global batch) must be divisible by "
                f"the world size {ctx.world_size}"
            )
        self.batch_per_rank = self.recipe.batch_size // ctx.world_size
        if config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif kind == "cuda":
            torch.backends.cudnn.benchmark = True

    def _keep_the_runs_threads(self, state: dict[str, Any] | None) -> None:
        """A ``--deterministic`` run resumes with the thread count it trained with, not the
        one the machine's load suggests now: CPU kernels split their sums by thread, so another
        count ends the run off the straight run's weights. ``--threads`` (or OMP_NUM_THREADS)
        still overrides; a count above this machine's cores cannot be kept (the policy's
        choice stands, said in the line)."""
        if not (self.resume and state and self.config.deterministic):
            return
        chosen = self.threads
        if chosen.free is None:  # not the policy's reading: --threads or OMP_NUM_THREADS
            return
        recorded = [r.get("threads") for r in state.get("history") or []]
        ran = recorded[-1] if recorded else None
        if not isinstance(ran, int) or ran == chosen.threads:
            return
        if ran > chosen.cores:
            reason = f"{chosen.reason}; the run's {ran} threads exceed this machine's cores"
            self.threads = dataclasses.replace(chosen, reason=reason)
        else:
            reason = f"the run's {ran}, kept for an exact --deterministic resume"
            self.threads = dataclasses.replace(chosen, threads=ran, reason=reason)
            torch.set_num_threads(ran)
        self.thread_lines[:] = [self.threads.line()]

    def _check_input_size(self) -> None:
        """``--input-size`` against memory before the run directory is touched or any data made
        (synthetic images of 100,000 px would take terabytes). The classifier's width is known
        only once the data set is read, so this uses 2 classes: a lower bound of the model
        :meth:`_build_model` checks again. With ``--weights`` (widths from the file, read
        later) the input batch alone is checked."""
        config = self.config
        if config.image_size is None:
            return
        size = (3, config.image_size, config.image_size)
        if config.weights is not None:
            check_input_memory(size, self.batch_per_rank)
            return
        hparams = {
            "name": config.model,
            **config.model_hparams,
            "num_classes": 2,
            "variant": config.variant or _variant_for(size),
        }
        check_memory(hparams, size, self.batch_per_rank, training=True)

    def _resolve_fast_path(self, kind: str) -> TrainConfig:
        """Fill in the fast CUDA path's settings left at None: on with CUDA, off on the CPU
        (and ``augment``: on for runs of SHORT_RUN_EPOCHS or more).

        ``amp`` and ``channels_last`` change the arithmetic, so the run's stored configuration
        keeps their resolved values (a resumed run keeps them); the others only change speed
        and are resolved again by each (resumed) process.
        """
        config, cuda = self.config, kind == "cuda"
        graph_capture = cuda and not config.qat_epochs  # a QAT network is an exported graph
        if config.cuda_graphs and not cuda:
            raise InvalidArgumentError(
                "--cuda-graphs needs CUDA; on the CPU leave it out (or use --compile)"
            )
        self.device_data = cuda if config.device_data is None else config.device_data
        self.static_shapes = cuda if config.static_shapes is None else config.static_shapes
        self.cuda_graphs = graph_capture if config.cuda_graphs is None else config.cuda_graphs
        short_run = config.recipe.epochs < SHORT_RUN_EPOCHS
        self.amp: str = ("bf16" if cuda else "none") if config.amp is None else config.amp
        self.channels_last: bool = (
            graph_capture if config.channels_last is None else config.channels_last
        )
        self.augment: bool = not short_run if config.augment is None else config.augment
        return dataclasses.replace(
            config, amp=self.amp, channels_last=self.channels_last, augment=self.augment
        )

    def _build_data(self, train_loader: Any) -> None:
        """The splits and their loaders (``train_loader`` replaces the training one)."""
        from lightnets.data import load_splits

        config = self.config
        self.splits = load_splits(
            config.dataset,
            config.data_dir,
            val_size=config.val_size,
            train_subset=config.train_subset,
            seed=config.seed,
            download=config.download,
            image_size=config.image_size,
        )
        self.train_loader = train_loader or self._loader(self.splits.train, train=True)
        self.val_loader = self._loader(self.splits.val) if len(self.splits.val) > 0 else None
        self.test_loader = self._loader(self.splits.test)
        self.steps_per_epoch = len(self.train_loader)

    def _loader(self, dataset: Any, *, train: bool = False) -> Any:
        from lightnets.data import Augmentation, make_loader

        config = self.config
        augmentation = Augmentation(
            crop_and_flip=self.augment,
            cutout=config.cutout,
            random_erasing=config.random_erasing,
        )
        return make_loader(
            dataset,
            self.splits,
            batch_size=self.batch_per_rank if train else max(self.batch_per_rank, 256),
            train=train,
            device=self.device,
            seed=config.seed,
            rank=self.ctx.rank,
            world_size=self.ctx.world_size,
            num_workers=config.num_workers,
            channels_last=self.channels_last,
            device_data=self.device_data,
            pad_last=self.static_shapes and not train,
            augmentation=augmentation if train else None,
        )

    def _build_model(self, state: dict[str, Any] | None) -> None:
        """The network (the checkpoint's weights when resuming), on the device, and its EMA."""
        config, ctx = self.config, self.ctx
        self.variant = config.variant or _variant_for(self.splits.input_size)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        hparams = {"name": config.model, **config.model_hparams}
        hparams.update(num_classes=len(self.splits.classes), variant=self.variant)
        check_memory(hparams, self.splits.input_size, self.batch_per_rank, training=True)
        model = create_train_model(
            config,
            num_classes=len(self.splits.classes),
            variant=self.variant,
            resume=state is not None,
        )
        if ctx.rank > 0:
            # Same initial weights everywhere, different dropout draws per rank.
            torch.manual_seed(config.seed + ctx.rank)
        self.params = sum(p.numel() for p in model.parameters())
        if state is not None:
            if state["hparams"] != model.hparams:
                raise CheckpointError(
                    f"{self.run.last} holds {state['hparams']}, but the run builds {model.hparams}"
                )
            model.load_state_dict(state["model"])
        model.to(self.device)
        if config.channels_last:
            # Module.to takes memory_format at run time; torch's overloads leave it out.
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if config.sync_bn and ctx.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.ema = ModelEma(model, self.recipe.ema_decay) if self.recipe.ema_decay else None
        self.eval_model = self.ema.module if self.ema is not None else model

    def _build_optimisation(self) -> None:
        """Optimiser, per-step lr schedule, gradient scaler (fp16) and loss."""
        recipe = self.recipe
        self.optimizer = build_optimizer(self.model, recipe)
        scale_backbone_lr(self.optimizer, self.model, self.config.lr_backbone)
        self.scheduler = build_scheduler(self.optimizer, recipe, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.config.amp == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    def _restore_or_start(self, state: dict[str, Any] | None) -> None:
        """The position in the run: epoch 0 of a new run, or the checkpoint's (its
        quantization-aware network rebuilt when it had started)."""
        self.position = RunProgress()
        self.qat: QatNetwork | None = None
        self.qat_record: dict[str, Any] = {}  # the checkpoint's "qat" entry once QAT has started
        if state is not None:
            self._restore(state)
            if state.get("qat"):
                self._start_qat(state["qat"])

    def _wrap_for_training(self) -> None:
        """DDP and torch.compile around the model for the training step; progress display."""
        train_module: nn.Module = self.model
        if self.ctx.distributed:
            train_module = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.ctx.local_rank] if self.device.type == "cuda" else None,
            )
        if self.cuda_graphs and self.ctx.distributed:
            # Collectives inside captured graphs are not exercised here: plain compile instead.
            self.notes.append("CUDA graphs are not used with several processes; torch.compile is")
            self.cuda_graphs = False
            train_module = _compiled(train_module)
        elif self.cuda_graphs:
            # Forward and backward replay as CUDA graphs; optimiser, clipping and EMA stay eager.
            train_module = _compiled(train_module, mode="reduce-overhead")
        elif self.config.compile:
            train_module = _compiled(train_module)
        self.train_module = train_module
        if self.qat is not None:
            self._wrap_qat(self.qat)
        self._warming_up = True  # until this process's first WARMUP_STEPS steps are done
        self.progress = make_progress(self.ctx.is_main, self.progress_stream)
        self.tb_writer = None
        self.sigint: _SigintFlag | None = None

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.restore(state["scheduler"], self.recipe, self.steps_per_epoch)
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if not isinstance(state.get("ema"), dict):
                raise InvalidArgumentError(f"{self.run.last} has no EMA weights")
            self.ema.module.load_state_dict(state["ema"])
        rng = state.get("rng") or []
        if self.ctx.rank < len(rng):
            _set_rng_state(rng[self.ctx.rank])
        self.position = RunProgress.from_checkpoint(state)

    # -- quantization-aware training ---------------------------------------------------------

    def _start_qat(self, saved: dict[str, Any] | None = None) -> QatNetwork:
        """From here on train and evaluate the network with fake int8 (train/qat.py).

        A fresh start picks the best epoch among the quantization-aware ones only (the network
        that is kept must be the one trained for int8); BatchNorm statistics freeze halfway
        through the quantization-aware steps. ``saved``: the checkpoint's record, on resume.
        """
        config, steps = self.config, self.steps_per_epoch
        if saved is not None:  # the grid it started on, also on a machine of other ISA
            reduce_range = bool(saved.get("reduce_range", False))
        else:
            reduce_range = check_reduce_range(
                config.qat_backend, config.qat_reduce_range, "--qat-reduce-range"
            )
        qat = QatNetwork(
            self.model, config.qat_backend, self.splits.input_size, reduce_range=reduce_range
        )
        if saved is not None:
            qat.load_extra_state(saved["state"])
            record = {k: v for k, v in saved.items() if k != "state"}
        else:
            start = self.position.epoch
            qat_steps = (self.recipe.epochs - start) * steps
            record = {
                "backend": config.qat_backend,
                "start_epoch": start,
                "freeze_bn_step": start * steps + math.ceil(qat_steps / 2),
                "weights": qat.weights,
                "activations": qat.backend.activations,
                "reduce_range": reduce_range,
            }
            position = self.position
            position.best_top1 = position.best_epoch = position.best_weights = None
        self.qat, self.qat_record = qat, record
        self.eval_model = qat.module
        return qat

    def _wrap_qat(self, qat: QatNetwork) -> None:
        """The quantization-aware network as the training module (under DDP when distributed)."""
        module: nn.Module = qat.module
        if self.ctx.distributed:
            module = nn.parallel.DistributedDataParallel(
                module, device_ids=[self.ctx.local_rank] if self.device.type == "cuda" else None
            )
        self.train_module = module

    def _maybe_start_qat(self) -> None:
        if self.qat is None and self.position.epoch >= self.recipe.epochs - self.config.qat_epochs:
            if self.config.qat_epochs == 0:
                return
            qat = self._start_qat()
            self._wrap_qat(qat)
            self.progress.message(
                f"quantization-aware training from epoch {self.position.epoch + 1} "
                f"({self.config.qat_backend} int8: {qat.weights} weights, "
                f"{qat.backend.activations} activations; BatchNorm statistics frozen from "
                f"step {self.qat_record['freeze_bn_step']})"
            )
            if qat.reduce_range and self.config.qat_reduce_range is None:
                self.progress.message(REDUCED_RANGE_NOTE.format(flag=self.reduce_range_flag))

    def _freeze_qat_batchnorm(self, step: int) -> None:
        """Freeze the QAT network's BatchNorm statistics once ``step`` (counted over the whole
        run, so a resumed run freezes at the same step) reaches the recorded one."""
        qat = self.qat
        if qat is not None and not qat.bn_frozen and step >= self.qat_record["freeze_bn_step"]:
            qat.freeze_batchnorm()

    def _qat_state(self) -> dict[str, Any] | None:
        if self.qat is None:
            return None
        epochs = self.recipe.epochs - self.qat_record["start_epoch"]
        return {**self.qat_record, "epochs": epochs, "state": self.qat.extra_state()}

    # -- checkpoints --------------------------------------------------------------------------

    def _state(
        self, *, step: int = 0, partial: dict | None = None, rng: list | None = None
    ) -> dict[str, Any]:
        position = self.position
        return {
            "hparams": dict(self.model.hparams),
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "dataset": self.splits.metadata(),
            "config": self.config.to_dict(),
            "recipe": self.recipe.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": position.epoch,
            "step": step,
            "partial": partial,
            "rng": rng if rng is not None else [_rng_state()],
            "history": position.history,
            "best_top1": position.best_top1,
            "best_epoch": position.best_epoch,
            "wall_time": position.wall_time + (time.perf_counter() - self._t_start),
            "world_size": self.ctx.world_size,
            "params": self.params,
            "qat": self._qat_state(),
        }

    def _gather_rng(self) -> list[dict[str, Any]]:
        if not self.ctx.distributed:
            return [_rng_state()]
        states: list[Any] = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(states, _rng_state())
        return states

    # -- the loop ----------------------------------------------------------------------------

    def fit(self, *, test: bool = True) -> dict[str, Any]:
        """Train the remaining epochs, test the best weights once; returns the summary.

        ``test=False`` stops after the last epoch without the test (and writes no summary), the
        best weights loaded as for the test: for a caller that measures the result its own way,
        as ``quantize --qat`` measures the int8 file. The summary then holds only ``dataset``,
        ``epochs`` and ``wall_time_s``.
        """
        config, ctx = self.config, self.ctx
        self._t_start = time.perf_counter()
        if ctx.is_main:
            self.run.claim()
            self.run.write_config(config.to_dict())
            self.run.write_metrics(self.position.history)
            if self.tb_module is not None:
                self.tb_writer = self.tb_module.SummaryWriter(str(self.run.path / "tensorboard"))
        self.sigint = _SigintFlag()
        with self.progress, self.sigint as interrupt:
            self._announce()
            while self.position.epoch < self.recipe.epochs:
                self._maybe_start_qat()
                record = self._train_epoch(interrupt)
                self._end_epoch(record)
                if interrupt.requested:
                    self._say_interrupted(self.position.epoch, 0)
                    raise KeyboardInterrupt
            if not test:
                self._load_best_weights()
                wall = self.position.wall_time + (time.perf_counter() - self._t_start)
                return {
                    "dataset": self.splits.name,
                    "epochs": self.position.epoch,
                    "wall_time_s": wall,
                }
            summary = self._finish()
        return summary

    def close(self, *, keep_process_group: bool = False) -> None:
        """Release the run directory, the TensorBoard writer and the process group.

        ``keep_process_group=True`` leaves a torchrun process group up for another run in the
        same processes (a sweep's next cell: a re-created group hangs in DDP's first collective).
        """
        if self.tb_writer is not None:
            self.tb_writer.close()
        torch.set_num_threads(self._threads_before)
        self.run.unlock()
        if not keep_process_group:
            shutdown_distributed(self.ctx)
        if self.sigint is not None:  # last: Ctrl-C could not interrupt the clean-up above
            self.sigint.restore()

    def _announce(self) -> None:
        s = self.splits
        action = "training"
        if self.resume:
            done = self.position.epoch >= self.recipe.epochs  # killed between its end and use
            action = (
                "resuming after its last epoch"
                if done
                else f"resuming at epoch {self.position.epoch + 1}"
            )
        data = f"{s.name} ({s.origin})" if s.origin else s.name  # e.g. a folder's val/ as test
        self.progress.message(
            f"{action} {self.config.model} ({self.variant}, {self.params / 1e6:.2f}M params) on "
            f"{data}: {len(s.train)} train / {len(s.val)} val / {len(s.test)} test images; "
            f"{_count(self.recipe.epochs, 'epoch')} x {_count(self.steps_per_epoch, 'step')}, "
            f"global batch {self.recipe.batch_size}, "
            f"recipe {self.config.recipe_source or self.recipe.name}, device {self.device.type}"
            + (f", {self.ctx.world_size} processes" if self.ctx.distributed else "")
        )
        for line in self.thread_lines:
            self.progress.message(line)
        for note in self.notes:
            self.progress.message(f"note: {note}")

    def _train_epoch(self, interrupt: _SigintFlag) -> dict[str, Any]:
        """Train the epoch after the completed ones (from a mid-epoch position), validate,
        guard."""
        position = self.position
        epoch = position.epoch
        skip, position.step_in_epoch = position.step_in_epoch, 0
        partial, position.partial = position.partial or {}, None
        keys = ("loss_sum", "correct", "count")
        sums = torch.tensor(
            [partial.get(k, 0.0) for k in keys], dtype=torch.float64, device=self.device
        )
        clock = _EpochClock(float(partial.get("seconds", 0.0)), float(partial.get("count", 0.0)))
        self.train_loader.set_epoch(epoch)
        self.train_module.train()
        self.progress.start_epoch(epoch + 1, self.recipe.epochs, self.steps_per_epoch, skip)
        counters = machine.read_cpu_times()
        lr = self._run_steps(interrupt, sums, skip, clock)
        after = machine.read_cpu_times()
        load = None
        if counters is not None and after is not None:
            load = machine.machine_load(after - counters, self.threads.threads * local_processes())
        self._warming_up = False
        all_reduce_sum(sums, self.ctx)
        record = self._epoch_record(epoch, lr, sums, clock)
        self._watch_speed(record, load)
        self.guard.check_epoch(record, self._modules(), done=self.position.epoch)
        return record

    def _watch_speed(self, record: dict[str, Any], load: machine.MachineLoad | None) -> None:
        """Record the threads; warn (one line) when the machine became busy and the epoch ran
        markedly slower than this process's fastest (:func:`slowdown_warning`)."""
        record["threads"] = self.threads.threads
        rate = record["images_per_sec"]
        if load is not None and self.device.type == "cpu":
            warning = slowdown_warning(record["epoch"], rate, self._fastest, load)
            if warning is not None and self.ctx.is_main:
                self.progress.message(warning)
        if self._fastest is None or rate > self._fastest[1]:
            self._fastest = (record["epoch"], rate)

    def _run_steps(
        self, interrupt: _SigintFlag, sums: torch.Tensor, skip: int, clock: _EpochClock
    ) -> float:
        """The epoch's steps from ``skip`` on; saves the position on Ctrl-C. Returns the lr."""
        steps = self.steps_per_epoch
        done, in_step, lr = skip, False, self.optimizer.param_groups[0]["lr"]
        try:
            for index, (images, targets) in enumerate(self.train_loader):
                if index < skip:
                    continue
                in_step = True
                self._freeze_qat_batchnorm(self.position.epoch * steps + index)
                lr = self.optimizer.param_groups[0]["lr"]
                self._step(images, targets, sums)
                in_step = False
                done = index + 1
                if self._warming_up and done - skip == WARMUP_STEPS and done < steps:
                    clock.end_warmup(sums, self.device)
                if done % LOG_EVERY == 0 or done == steps:
                    epoch = self.position.epoch
                    self.guard.check_running_loss(sums[0], epoch, lr, done=epoch)
                    self._show_progress(done, sums, clock)
                if interrupt.requested and done < steps:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if not in_step:
                self._save_interrupted(done, sums, clock.seconds())
            raise
        return lr

    def _show_progress(self, done: int, sums: torch.Tensor, clock: _EpochClock) -> None:
        if not self.ctx.is_main:
            return
        loss_sum, correct, count = sums.tolist()
        elapsed = max(time.perf_counter() - clock.t0, 1e-9)
        rate = (count - clock.counted_before) * self.ctx.world_size / elapsed
        self.progress.update(done, rate, loss_sum / max(count, 1), correct / max(count, 1))

    def _epoch_record(
        self, epoch: int, lr: float, sums: torch.Tensor, clock: _EpochClock
    ) -> dict[str, Any]:
        """One line of metrics.jsonl: training sums (all ranks), validation, timing."""
        loss_sum, correct, count = sums.tolist()
        train_seconds = clock.seconds()
        warm_images = clock.warm_images * self.ctx.world_size
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / count,
            "train_top1": correct / count,
            "val_loss": None,
            "val_top1": None,
            "val_top5": None,
            "images_per_sec": (count - warm_images) / (train_seconds - (clock.warmup or 0.0)),
        }
        if self.val_loader is not None:
            val = self._evaluate(self.val_loader)
            record.update(val_loss=val.loss, val_top1=val.top1, val_top5=val.top5)
        record["seconds"] = clock.seconds()
        record["warmup_seconds"] = clock.warmup
        return record

    def _step(self, images: torch.Tensor, targets: torch.Tensor, sums: torch.Tensor) -> None:
        recipe = self.recipe
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are spent
        with autocast_context(self.device, self.amp):
            logits = self.train_module(images)
            loss = self.criterion(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if recipe.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), recipe.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        with torch.no_grad():  # in place: no host-to-device copy, no sync
            n = targets.numel()
            sums[0] += loss.detach().double() * n
            sums[1] += logits.argmax(1).eq(targets).sum()
            sums[2] += n

    def _modules(self) -> list[nn.Module]:
        """The model and its EMA: what the divergence guard checks."""
        return [self.model] + ([self.ema.module] if self.ema is not None else [])

    def _evaluate(self, loader: Iterable[Any], per_class: bool = False) -> EvalResult:
        return evaluate(
            self.eval_model,
            loader,
            num_classes=len(self.splits.classes),
            device=self.device,
            amp=self.amp,
            ctx=self.ctx,
            per_class=per_class,
        )

    def _end_epoch(self, record: dict[str, Any]) -> None:
        validated = self.val_loader is not None
        improved = self.position.end_epoch(record, validated=validated, model=self.eval_model)
        rng = self._gather_rng()
        if self.ctx.is_main:
            self.run.save(self._state(rng=rng), best=improved)
            self.run.write_metrics(self.position.history)
            if self.tb_writer is not None:
                for key, value in record.items():
                    if key != "epoch" and value is not None:
                        self.tb_writer.add_scalar(key, value, record["epoch"])
                self.tb_writer.flush()
            self.progress.message(format_epoch(record, self.recipe.epochs))

    def _save_interrupted(self, done: int, sums: torch.Tensor, seconds: float) -> None:
        if not self.ctx.is_main:
            return
        loss_sum, correct, count = sums.tolist()
        if not torch.isfinite(sums).all() or not DivergenceGuard.weights_finite(self._modules()):
            return  # the last good checkpoint stays
        if done == 0:
            partial = None
        else:
            partial = {"loss_sum": loss_sum, "correct": correct, "count": count, "seconds": seconds}
        self.run.save_interrupted(self._state(step=done, partial=partial))
        self._say_interrupted(self.position.epoch, done)

    def _say_interrupted(self, epoch: int, step: int) -> None:
        if not self.ctx.is_main:
            return
        where = (
            f"epoch {epoch}"
            if step == 0
            else f"epoch {epoch + 1}, step {step}/{self.steps_per_epoch}"
        )
        command = self.continue_with or f"lightnets train --resume {self.run.path}"
        self.progress.message(
            f"interrupted: saved {self.run.last} ({where}); continue with {command}"
        )

    # -- the end -----------------------------------------------------------------------------

    def _load_best_weights(self) -> str:
        """Put the best epoch's weights (by validation top-1) into the evaluated network;
        ``"best"``, or ``"last"`` when there is no validation split to choose by."""
        position = self.position
        weights, source = position.best_weights, "best"
        if weights is None:
            if position.best_epoch is not None and self.run.best.exists():
                state = load_checkpoint(self.run.best, map_location="cpu")
                weights = state["ema"] if self.ema is not None else state["model"]
                if self.qat is not None:
                    weights = {**weights, **state["qat"]["state"]}
            else:
                source = "last"
        if weights is not None:
            self.eval_model.load_state_dict(weights)
        return source

    def _finish(self) -> dict[str, Any]:
        position = self.position
        source = self._load_best_weights()
        test = self._evaluate(self.test_loader, per_class=True)
        assert test.per_class is not None  # asked for
        classes = list(self.splits.classes)
        wall = position.wall_time + (time.perf_counter() - self._t_start)
        num_classes = len(self.splits.classes)
        summary = {
            "model": self.config.model,
            "hparams": dict(self.model.hparams),
            "dataset": self.splits.name,
            "test_top1": test.top1,
            "test_top5": test.top5,
            "test_loss": test.loss,
            "test_images": test.images,
            "at_chance": at_chance(test.top1, num_classes, test.images),
            "unlearned_classes": unlearned_classes(test.per_class, classes),
            "test_weights": source if self.ema is None else f"{source} (EMA)",
            "best_epoch": position.best_epoch,
            "best_val_top1": position.best_top1,
            "epochs": position.epoch,
            "params": self.params,
            "wall_time_s": wall,
            "world_size": self.ctx.world_size,
            "device": self.device.type,
            "threads": thread_record(self.threads),
            "recipe": self.recipe.to_dict(),
        }
        if self.qat is not None:
            # The test top-1 above is the fake-int8 network's.
            summary["qat"] = {k: v for k, v in (self._qat_state() or {}).items() if k != "state"}
        if self.ctx.is_main:
            summary_path = self.run.write_summary(summary)
            from lightnets.figures import save_figure
            from lightnets.figures.curves import training_curves

            title = f"{self.config.model} on {self.splits.name}"
            curves = training_curves(position.history, title=title)
            save_figure(curves, self.run.path / CURVES, dpi=100, check_path=False)
            top5 = f"  top-5 {100 * test.top5:.2f}%" if test.top5 is not None else ""
            self.progress.message(
                f"test top-1 {100 * test.top1:.2f}%{top5}  "
                f"loss {test.loss:.4f} on {test.images} images (weights of epoch "
                f"{position.best_epoch if source == 'best' else position.epoch}); {wall:.0f} s; "
                f"wrote {summary_path}"
            )
            for warning in (
                chance_warning(test.top1, num_classes, test.images),
                unlearned_warning(test.top1, test.per_class, classes, test.images),
            ):
                if warning is not None:
                    self.progress.message(warning)
        barrier(self.ctx)
        return summary


def finished_summary(config: TrainConfig) -> dict[str, Any] | None:
    """The summary of the run in ``config.output`` when it has nothing left to do: its
    ``last.pt`` ends at an epoch boundary at or past ``config``'s epochs and ``summary.json``
    was written from that very epoch. None when training (or the final test) remains."""
    import json

    run_dir = Path(config.output)
    last, summary_path = run_dir / LAST_CHECKPOINT, run_dir / SUMMARY
    if not (last.is_file() and summary_path.is_file()):
        return None
    state = load_checkpoint(last, map_location="cpu")
    epoch = int(state.get("epoch", 0))
    if int(state.get("step", 0)) != 0 or epoch < config.recipe.epochs:
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: the final test runs again and rewrites it
    if not isinstance(summary, dict) or summary.get("epochs") != epoch:
        return None
    return summary


def train(config: TrainConfig, *, resume: bool = False, train_loader: Any = None) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) a training run; returns its summary.

    Resuming a finished run (see :func:`finished_summary`) changes nothing: it says so and
    returns the stored summary.
    """
    if resume:
        summary = finished_summary(config)
        if summary is not None:
            if os.environ.get("RANK", "0") == "0":
                top1 = summary.get("test_top1")
                tested = f", test top-1 {100 * top1:.2f}%" if isinstance(top1, float) else ""
                epochs = summary["epochs"]
                print(
                    f"{config.output} is finished: {epochs} epochs{tested} ({SUMMARY}); nothing "
                    f"changed (--epochs N above {epochs} trains it further)",
                    flush=True,
                )
            return summary
    trainer = Trainer(config, resume=resume, train_loader=train_loader)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _compiled(module: nn.Module, **options: Any) -> nn.Module:
    """``torch.compile(module)``: an ``OptimizedModule``, a Module (torch types it as a bare
    callable, which would lose ``.train()`` and ``.parameters()``)."""
    return cast(nn.Module, torch.compile(module, **options))
