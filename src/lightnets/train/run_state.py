"""A run's state outside the model and optimiser: its directory, and where it stands.

:class:`RunDirectory` is the folder a run owns: checked before anything is written (a new run
needs a folder of its own, :func:`~lightnets.train.rundir.check_new_run_dir`), locked by the
main process while it trains (:class:`~lightnets.train.rundir.RunLock`), tidied and repaired
when a run resumes (:func:`~lightnets.train.rundir.repair_best`), and written only through
atomic writes: ``config.json``, ``metrics.jsonl``, ``last.pt`` / ``best.pt`` and
``summary.json``. :class:`RunProgress` is where the run stands (completed epochs, the position
inside an interrupted epoch, the metric history, the best epoch and its weights), which every
checkpoint stores and a resumed run restores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightnets.errors import CheckpointError
from lightnets.train.checkpoint import load_checkpoint, save_checkpoint
from lightnets.train.config import BEST_CHECKPOINT, LAST_CHECKPOINT
from lightnets.train.metrics import write_json_atomic, write_metrics_jsonl
from lightnets.train.rundir import (
    CONFIG,
    MARKER,
    METRICS,
    SUMMARY,
    RunLock,
    cannot_resume,
    check_new_run_dir,
    read_marker,
    remove_stray_temps,
    repair_best,
    write_marker,
)

__all__ = ["RunDirectory", "RunProgress"]


class RunDirectory:
    """The folder of one run, as the process ``is_main`` (which alone locks and writes) sees it.

    What its set-up repaired or took over is appended to ``notes`` (shared with the trainer,
    which prints them when the run starts). ``record``: fields a new run writes into its marker
    beside lightnets' own.
    """

    def __init__(
        self, path: Path, *, is_main: bool, notes: list[str], record: dict[str, Any] | None = None
    ) -> None:
        self.path = path
        self.record = dict(record or {})
        self.is_main = is_main
        self.notes = notes
        self.lock: RunLock | None = None

    @property
    def last(self) -> Path:
        return self.path / LAST_CHECKPOINT

    @property
    def best(self) -> Path:
        return self.path / BEST_CHECKPOINT

    def open(self, *, resume: bool) -> dict[str, Any] | None:
        """Check the directory; to resume, lock it, tidy it and read its ``last.pt``.

        A new run writes nothing yet: :meth:`claim` creates and locks the directory.
        """
        if not resume:
            check_new_run_dir(self.path)
            return None
        if not self.path.is_dir():
            raise CheckpointError(f"cannot resume: {self.path} is not a directory")
        if self.is_main:
            self._lock()
        if not self.last.exists():
            raise CheckpointError(cannot_resume(self.path))
        state = load_checkpoint(self.last, map_location="cpu")
        if self.is_main and read_marker(self.path / MARKER, "run") is None:
            write_marker(self.path / MARKER, "run")  # a run made before the marker existed
        note, lost = repair_best(self.path, state, write=self.is_main)
        if note is not None:
            self.notes.append(note)
        if lost:
            state["best_epoch"] = state["best_top1"] = None
        return state

    def claim(self) -> None:
        """A new run's directory (main process): create it, lock it, check again that no other
        run started there meanwhile, and mark it as a run of ours. A no-op once locked."""
        if self.lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        check_new_run_dir(self.path)  # again, now that no other run can start here
        write_marker(self.path / MARKER, "run", **self.record)  # first: the folder is a run

    def _lock(self) -> None:
        """Own the directory (main process): lock it, remove our stray temporary files."""
        self.lock = RunLock(self.path).acquire()
        if self.lock.stale_pid is not None:
            self.notes.append(
                f"took over the lock of process {self.lock.stale_pid}, which no longer runs"
            )
        removed = remove_stray_temps(self.path)
        if removed:
            self.notes.append(f"removed {len(removed)} temporary file(s) of an interrupted write")

    def unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def write_config(self, config: Mapping[str, Any]) -> None:
        write_json_atomic(self.path / CONFIG, dict(config))

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        write_metrics_jsonl(self.path / METRICS, history)

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        write_json_atomic(self.path / SUMMARY, dict(summary))
        return self.path / SUMMARY

    def save(self, state: dict[str, Any], *, best: bool = False) -> None:
        """``last.pt``, then ``best.pt`` when ``best``: ``last.pt`` names the best epoch, so a
        crash before ``best.pt`` is written is repaired by the resume
        (:func:`~lightnets.train.rundir.repair_best`)."""
        save_checkpoint(self.last, state)
        if best:
            save_checkpoint(self.best, state)

    def save_interrupted(self, state: dict[str, Any]) -> None:
        """``last.pt`` at a Ctrl-C (the directory made if the run had not written it yet)."""
        self.path.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.last, state)


@dataclass
class RunProgress:
    """Where a run stands: ``epoch`` epochs completed, ``step_in_epoch`` steps of the next
    done before a Ctrl-C (with the running sums of those steps in ``partial``), one metrics
    record per completed epoch, the best validation top-1 so far, its epoch and (in this
    process only, never stored) its weights, and the wall time of earlier sessions."""

    epoch: int = 0
    step_in_epoch: int = 0
    partial: dict[str, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_top1: float | None = None
    best_epoch: int | None = None
    best_weights: dict[str, torch.Tensor] | None = None
    wall_time: float = 0.0

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> RunProgress:
        """The position a checkpoint stored (its best weights are read again at the end)."""
        return cls(
            epoch=int(state["epoch"]),
            step_in_epoch=int(state.get("step", 0)),
            partial=state.get("partial"),
            history=list(state.get("history", [])),
            best_top1=state.get("best_top1"),
            best_epoch=state.get("best_epoch"),
            wall_time=float(state.get("wall_time", 0.0)),
        )

    def end_epoch(self, record: dict[str, Any], *, validated: bool, model: nn.Module) -> bool:
        """Count the epoch of ``record``; whether it is the best so far (always, without a
        validation split), in which case ``model``'s weights are kept as the best."""
        self.epoch += 1
        self.history.append(record)
        improved = not validated or (self.best_top1 is None or record["val_top1"] > self.best_top1)
        if improved:
            self.best_top1 = record["val_top1"]
            self.best_epoch = record["epoch"]
            self.best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        return improved
