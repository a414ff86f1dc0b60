"""What a run prints: a live progress bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.progress import TaskID


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    """One line summarising an epoch of ``metrics.jsonl``."""
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"lr {record['lr']:.4g}",
        f"train loss {record['train_loss']:.4f} top-1 {100 * record['train_top1']:.2f}%",
    ]
    if record.get("val_top1") is not None:
        val = f"val loss {record['val_loss']:.4f} top-1 {100 * record['val_top1']:.2f}%"
        if record.get("val_top5") is not None:  # None: 5 classes or fewer
            val += f" top-5 {100 * record['val_top5']:.2f}%"
        parts.append(val)
    parts.append(f"{record['images_per_sec']:.0f} img/s")
    parts.append(f"{record['seconds']:.1f} s")
    if record.get("warmup_seconds") is not None:
        parts.append(f"(warm-up {record['warmup_seconds']:.1f} s)")
    return "  ".join(parts)


class PlainProgress:
    """No live display: one line per epoch on ``stream`` (log files, CI, pipes)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        pass

    def update(self, done: int, images_per_sec: float, loss: float, top1: float) -> None:
        pass

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


class RichProgress(PlainProgress):
    """A rich progress bar per epoch with images/s, running loss/accuracy and ETA."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        super().__init__(stream)
        self.console = Console(file=self.stream)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]:>7.0f} img/s"),
            TextColumn("loss {task.fields[loss]:.4f}  top-1 {task.fields[top1]:5.1f}%"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            f"epoch {epoch}/{epochs}", total=steps, completed=done, speed=0.0, loss=0.0, top1=0.0
        )

    def update(self, done: int, images_per_sec: float, loss: float, top1: float) -> None:
        if self.task is not None:
            self.progress.update(
                self.task, completed=done, speed=images_per_sec, loss=loss, top1=100 * top1
            )

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)


def make_progress(enabled: bool, stream: TextIO | None = None) -> PlainProgress:
    """A rich bar when ``stream`` (stdout by default) is a terminal, else one line per epoch.

    ``enabled=False`` (ranks other than 0) prints nothing.
    """
    if not enabled:
        return _Silent()
    stream = stream or sys.stdout
    if stream.isatty():
        return RichProgress(stream)
    return PlainProgress(stream)


class _Silent(PlainProgress):
    def message(self, text: str) -> None:
        pass
