"""The training loop: one process or data-parallel under torchrun, resumable bit for bit.

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per epoch), ``last.pt``
(every epoch, and on Ctrl-C), ``best.pt`` (best validation top-1), and at the end
``summary.json`` (test accuracy of the best weights, evaluated once) and ``curves.png``; while
a process trains in it, its lock file (``rundir.py``: ownership, locking, crash repair).

A checkpoint is written only when its weights, BatchNorm statistics and losses are finite
(checked at every epoch end, and the running loss every ``LOG_EVERY`` steps); otherwise the run
stops with :class:`TrainingDiverged` and the last good checkpoint stays.

Exact resume: the data loader draws its shuffling and augmentation from (seed, epoch, rank)
alone, and a checkpoint holds every other piece of state (weights, optimiser, per-iteration
schedule, gradient scaler, EMA, the torch and Python RNGs of every rank, the metric history),
so ``--resume`` continues as if the run had never stopped. A Ctrl-C mid-epoch saves the
position inside the epoch too; the resumed run skips the batches already trained on.
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightnets.errors import CheckpointError, InvalidArgumentError, LightnetsError, require
from lightnets.models.memory import check_memory
from lightnets.train.checkpoint import load_checkpoint, save_checkpoint
from lightnets.train.config import BEST_CHECKPOINT, LAST_CHECKPOINT, TrainConfig
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
from lightnets.train.metrics import (
    EvalResult,
    write_json_atomic,
    write_metrics_jsonl,
)
from lightnets.train.precision import autocast_context
from lightnets.train.progress import format_epoch, make_progress
from lightnets.train.recipes import SHORT_RUN_EPOCHS, build_optimizer, build_scheduler
from lightnets.train.rundir import (
    CONFIG,
    CURVES,
    METRICS,
    SUMMARY,
    RunLock,
    check_new_run_dir,
    remove_stray_temps,
    repair_best,
)

#: Running metrics are read back (a device sync) and the loss checked every this many steps.
LOG_EVERY = 10
#: The first steps of a process (compilation, graph capture, autotuning) timed as warm-up.
WARMUP_STEPS = 3


class TrainingDiverged(LightnetsError):
    """The training loss became NaN or infinite."""


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
    """First Ctrl-C: finish the current step, save, stop. Second Ctrl-C: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _SigintFlag:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


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
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        train_loader: Any = None,
    ) -> None:
        self.config = config.validate()
        self.recipe = config.recipe
        self.run_dir = Path(config.output)
        self.resume = resume
        self.lock: RunLock | None = None
        # What the set-up repaired or shortened, printed when the run starts.
        self.notes: list[str] = [n for n in [self.recipe.warmup_note()] if n]
        try:
            self._check_runtime()
            state = self._open_run_dir()
            self._build_data(train_loader)
            self._build_model(state)
            self._build_optimisation()
            self._restore_or_start(state)
            self._wrap_for_training()
        except BaseException:
            self._unlock()
            raise

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

    def _resolve_fast_path(self, kind: str) -> TrainConfig:
        """Fill in the fast CUDA path's settings left at None: on with CUDA, off on the CPU
        (and ``augment``: on for runs of SHORT_RUN_EPOCHS or more).

        ``amp`` and ``channels_last`` change the arithmetic, so the run's stored configuration
        keeps their resolved values (a resumed run keeps them); the others only change speed
        and are resolved again by each (resumed) process.
        """
        config, cuda = self.config, kind == "cuda"
        if config.cuda_graphs and not cuda:
            raise InvalidArgumentError(
                "--cuda-graphs needs CUDA; on the CPU leave it out (or use --compile)"
            )
        self.device_data = cuda if config.device_data is None else config.device_data
        self.static_shapes = cuda if config.static_shapes is None else config.static_shapes
        self.cuda_graphs = cuda if config.cuda_graphs is None else config.cuda_graphs
        short_run = config.recipe.epochs < SHORT_RUN_EPOCHS
        return dataclasses.replace(
            config,
            amp=("bf16" if cuda else "none") if config.amp is None else config.amp,
            channels_last=cuda if config.channels_last is None else config.channels_last,
            augment=not short_run if config.augment is None else config.augment,
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
        from lightnets.data import make_loader

        config = self.config
        extra = {
            "cutout": config.cutout,
            "random_erasing": config.random_erasing,
            "crop_and_flip": config.augment,
        }
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
            channels_last=config.channels_last,
            device_data=self.device_data,
            pad_last=self.static_shapes and not train,
            **(extra if train else {}),
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
                    f"{self.run_dir / LAST_CHECKPOINT} holds {state['hparams']}, but the run "
                    f"builds {model.hparams}"
                )
            model.load_state_dict(state["model"])
        model.to(self.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
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
        """The position in the run: epoch 0 of a new run, or the checkpoint's."""
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0  # steps done in the epoch after `epoch` (a Ctrl-C mid-epoch)
        self.partial: dict[str, float] | None = None
        self.history: list[dict[str, Any]] = []
        self.best_top1: float | None = None
        self.best_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.wall_time = 0.0
        if state is not None:
            self._restore(state)

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
            train_module = torch.compile(train_module)
        elif self.cuda_graphs:
            # Forward and backward replay as CUDA graphs; optimiser, clipping and EMA stay eager.
            train_module = torch.compile(train_module, mode="reduce-overhead")
        elif self.config.compile:
            train_module = torch.compile(train_module)
        self.train_module = train_module
        self._warming_up = True  # until this process's first WARMUP_STEPS steps are done
        self.progress = make_progress(self.ctx.is_main)
        self.tb_writer = None

    def _open_run_dir(self) -> dict[str, Any] | None:
        """Check the run directory; to resume, lock it, tidy it and read its ``last.pt``.

        A new run writes nothing yet: :meth:`fit` creates and locks the directory.
        """
        if not self.resume:
            check_new_run_dir(self.run_dir)
            return None
        last = self.run_dir / LAST_CHECKPOINT
        if not self.run_dir.is_dir():
            raise CheckpointError(f"cannot resume: {self.run_dir} is not a directory")
        if self.ctx.is_main:
            self._lock()
        if not last.exists():
            raise CheckpointError(
                f"cannot resume: {self.run_dir} holds no {LAST_CHECKPOINT} (the run saved no "
                "checkpoint: remove the directory, or start a new run with --output)"
            )
        state = load_checkpoint(last, map_location="cpu")
        note, lost = repair_best(self.run_dir, state, write=self.ctx.is_main)
        if note is not None:
            self.notes.append(note)
        if lost:
            state["best_epoch"] = state["best_top1"] = None
        return state

    def _lock(self) -> None:
        """Own the run directory (main process): lock it, remove our stray temporary files."""
        self.lock = RunLock(self.run_dir).acquire()
        if self.lock.stale_pid is not None:
            self.notes.append(
                f"took over the lock of process {self.lock.stale_pid}, which no longer runs"
            )
        removed = remove_stray_temps(self.run_dir)
        if removed:
            self.notes.append(f"removed {len(removed)} temporary file(s) of an interrupted write")

    def _unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.restore(state["scheduler"], self.recipe, self.steps_per_epoch)
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if not isinstance(state.get("ema"), dict):
                raise InvalidArgumentError(f"{self.run_dir / LAST_CHECKPOINT} has no EMA weights")
            self.ema.module.load_state_dict(state["ema"])
        rng = state.get("rng") or []
        if self.ctx.rank < len(rng):
            _set_rng_state(rng[self.ctx.rank])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state.get("step", 0))
        self.partial = state.get("partial")
        self.history = list(state.get("history", []))
        self.best_top1 = state.get("best_top1")
        self.best_epoch = state.get("best_epoch")
        self.wall_time = float(state.get("wall_time", 0.0))

    # -- checkpoints --------------------------------------------------------------------------

    def _state(self, *, step: int = 0, partial: dict | None = None, rng: list | None = None):
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
            "epoch": self.epoch,
            "step": step,
            "partial": partial,
            "rng": rng if rng is not None else [_rng_state()],
            "history": self.history,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "wall_time": self.wall_time + (time.perf_counter() - self._t_start),
            "world_size": self.ctx.world_size,
            "params": self.params,
        }

    def _gather_rng(self) -> list[dict[str, Any]]:
        if not self.ctx.distributed:
            return [_rng_state()]
        states: list[Any] = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(states, _rng_state())
        return states

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs, test the best weights once; returns the summary."""
        config, ctx = self.config, self.ctx
        self._t_start = time.perf_counter()
        if ctx.is_main:
            if self.lock is None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._lock()
                check_new_run_dir(self.run_dir)  # again, now that no other run can start here
            write_json_atomic(self.run_dir / CONFIG, config.to_dict())
            write_metrics_jsonl(self.run_dir / METRICS, self.history)
            if self.tb_module is not None:
                self.tb_writer = self.tb_module.SummaryWriter(str(self.run_dir / "tensorboard"))
        with self.progress, _SigintFlag() as interrupt:
            self._announce()
            while self.epoch < self.recipe.epochs:
                record = self._train_epoch(interrupt)
                self._end_epoch(record)
                if interrupt.requested:
                    self._say_interrupted(self.epoch, 0)
                    raise KeyboardInterrupt
            summary = self._finish()
        return summary

    def close(self, *, keep_process_group: bool = False) -> None:
        """Release the run directory, the TensorBoard writer and the process group.

        ``keep_process_group=True`` leaves a torchrun process group up for another run in the
        same processes (a sweep's next cell: a re-created group hangs in DDP's first collective).
        """
        if self.tb_writer is not None:
            self.tb_writer.close()
        self._unlock()
        if not keep_process_group:
            shutdown_distributed(self.ctx)

    def _announce(self) -> None:
        s = self.splits
        action = f"resuming at epoch {self.epoch + 1}" if self.resume else "training"
        self.progress.message(
            f"{action} {self.config.model} ({self.variant}, {self.params / 1e6:.2f}M params) on "
            f"{s.name}: {len(s.train)} train / {len(s.val)} val / {len(s.test)} test images; "
            f"{self.recipe.epochs} epochs x {self.steps_per_epoch} steps, global batch "
            f"{self.recipe.batch_size}, recipe {self.config.recipe_source or self.recipe.name}, "
            f"device {self.device.type}"
            + (f", {self.ctx.world_size} processes" if self.ctx.distributed else "")
        )
        for note in self.notes:
            self.progress.message(f"note: {note}")

    def _train_epoch(self, interrupt: _SigintFlag) -> dict[str, Any]:
        """Train the epoch after ``self.epoch`` (from a mid-epoch position), validate, guard."""
        epoch = self.epoch
        skip, self.step_in_epoch = self.step_in_epoch, 0
        partial, self.partial = self.partial or {}, None
        keys = ("loss_sum", "correct", "count")
        sums = torch.tensor(
            [partial.get(k, 0.0) for k in keys], dtype=torch.float64, device=self.device
        )
        clock = _EpochClock(float(partial.get("seconds", 0.0)), float(partial.get("count", 0.0)))
        self.train_loader.set_epoch(epoch)
        self.train_module.train()
        self.progress.start_epoch(epoch + 1, self.recipe.epochs, self.steps_per_epoch, skip)
        lr = self._run_steps(interrupt, sums, skip, clock)
        self._warming_up = False
        all_reduce_sum(sums, self.ctx)
        record = self._epoch_record(epoch, lr, sums, clock)
        self._check_good(record)
        return record

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
                lr = self.optimizer.param_groups[0]["lr"]
                self._step(images, targets, sums)
                in_step = False
                done = index + 1
                if self._warming_up and done - skip == WARMUP_STEPS and done < steps:
                    clock.end_warmup(sums, self.device)
                if done % LOG_EVERY == 0 or done == steps:
                    self._check_finite(sums, self.epoch, lr)
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
        with autocast_context(self.device, self.config.amp):
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

    def _check_finite(self, sums: torch.Tensor, epoch: int, lr: float) -> None:
        """Mid-epoch guard: the running training loss."""
        self._stop_if_diverged({"training loss": ~torch.isfinite(sums[0])}, epoch, lr)

    def _check_good(self, record: dict[str, Any]) -> None:
        """Epoch-end guard: only finite weights, BN statistics and losses make a checkpoint."""
        losses = [record["train_loss"], record["val_loss"]]
        bad = {
            "weights or BatchNorm statistics": not self._weights_finite(),
            "validation loss": record["val_loss"] is not None and not math.isfinite(losses[1]),
            "training loss": not math.isfinite(losses[0]),
        }
        self._stop_if_diverged(bad, record["epoch"] - 1, record["lr"])

    def _weights_finite(self) -> bool:
        """Whether every float tensor of the model's (and EMA's) state is finite (one sync)."""
        modules = [self.model] + ([self.ema.module] if self.ema is not None else [])
        tensors = [t for m in modules for t in m.state_dict().values() if t.is_floating_point()]
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

    def _stop_if_diverged(self, bad: dict[str, Any], epoch: int, lr: float) -> None:
        """Raise :class:`TrainingDiverged` naming the first of ``bad`` true on any rank."""
        flags = torch.tensor([float(v) for v in bad.values()], dtype=torch.float64)
        flags = all_reduce_sum(flags.to(self.device), self.ctx).cpu()
        names = [name for name, flag in zip(bad, flags.tolist(), strict=True) if flag]
        if not names:
            return
        last = self.run_dir / LAST_CHECKPOINT
        if self.epoch > 0 and last.exists():
            kept = f"the last good checkpoint {last} (epoch {self.epoch}) is kept"
        else:
            kept = "no checkpoint was written"
        raise TrainingDiverged(
            f"the {names[0]} became NaN or infinite in epoch {epoch + 1} (lr {lr:.4g}): "
            f"training stopped; {kept}; lower --lr or add --clip-grad"
        )

    def _evaluate(self, loader) -> EvalResult:
        return evaluate(
            self.eval_model,
            loader,
            num_classes=len(self.splits.classes),
            device=self.device,
            amp=self.config.amp,
            ctx=self.ctx,
        )

    def _end_epoch(self, record: dict[str, Any]) -> None:
        self.epoch += 1
        self.history.append(record)
        improved = self.val_loader is None or (
            self.best_top1 is None or record["val_top1"] > self.best_top1
        )
        if improved:
            self.best_top1 = record["val_top1"]
            self.best_epoch = record["epoch"]
            self.best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in self.eval_model.state_dict().items()
            }
        rng = self._gather_rng()
        if self.ctx.is_main:
            state = self._state(rng=rng)
            # last.pt first: it names the best epoch, so a crash before best.pt is written is
            # repaired by the resume (rundir.repair_best).
            save_checkpoint(self.run_dir / LAST_CHECKPOINT, state)
            if improved:
                save_checkpoint(self.run_dir / BEST_CHECKPOINT, state)
            write_metrics_jsonl(self.run_dir / METRICS, self.history)
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
        if not torch.isfinite(sums).all() or not self._weights_finite():
            return  # the last good checkpoint stays
        if done == 0:
            partial = None
        else:
            partial = {"loss_sum": loss_sum, "correct": correct, "count": count, "seconds": seconds}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.run_dir / LAST_CHECKPOINT, self._state(step=done, partial=partial))
        self._say_interrupted(self.epoch, done)

    def _say_interrupted(self, epoch: int, step: int) -> None:
        if not self.ctx.is_main:
            return
        where = (
            f"epoch {epoch}"
            if step == 0
            else f"epoch {epoch + 1}, step {step}/{self.steps_per_epoch}"
        )
        self.progress.message(
            f"interrupted: saved {self.run_dir / LAST_CHECKPOINT} ({where}); continue with "
            f"lightnets train --resume {self.run_dir}"
        )

    # -- the end -----------------------------------------------------------------------------

    def _finish(self) -> dict[str, Any]:
        weights, source = self.best_weights, "best"
        if weights is None:
            best = self.run_dir / BEST_CHECKPOINT
            if self.best_epoch is not None and best.exists():
                state = load_checkpoint(best, map_location="cpu")
                weights = state["ema"] if self.ema is not None else state["model"]
            else:
                source = "last"
        if weights is not None:
            self.eval_model.load_state_dict(weights)
        test = self._evaluate(self.test_loader)
        wall = self.wall_time + (time.perf_counter() - self._t_start)
        summary = {
            "model": self.config.model,
            "hparams": dict(self.model.hparams),
            "dataset": self.splits.name,
            "test_top1": test.top1,
            "test_top5": test.top5,
            "test_loss": test.loss,
            "test_images": test.images,
            "test_weights": source if self.ema is None else f"{source} (EMA)",
            "best_epoch": self.best_epoch,
            "best_val_top1": self.best_top1,
            "epochs": self.epoch,
            "params": self.params,
            "wall_time_s": wall,
            "world_size": self.ctx.world_size,
            "device": self.device.type,
            "recipe": self.recipe.to_dict(),
        }
        if self.ctx.is_main:
            write_json_atomic(self.run_dir / SUMMARY, summary)
            from lightnets.train.plots import plot_training_curves

            plot_training_curves(
                self.history,
                self.run_dir / CURVES,
                title=f"{self.config.model} on {self.splits.name}",
            )
            self.progress.message(
                f"test top-1 {100 * test.top1:.2f}%  top-5 {100 * test.top5:.2f}%  "
                f"loss {test.loss:.4f} on {test.images} images (weights of epoch "
                f"{self.best_epoch if source == 'best' else self.epoch}); {wall:.0f} s; "
                f"wrote {self.run_dir / SUMMARY}"
            )
        barrier(self.ctx)
        return summary


def train(config: TrainConfig, *, resume: bool = False, train_loader: Any = None) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) a training run; returns its summary."""
    trainer = Trainer(config, resume=resume, train_loader=train_loader)
    try:
        return trainer.fit()
    finally:
        trainer.close()
