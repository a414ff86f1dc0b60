"""A training run's curves: loss, top-1 accuracy and learning rate per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["training_curves"]


def training_curves(history: Sequence[Mapping[str, Any]], *, title: str = "") -> Figure:
    """Three panels from per-epoch records (``metrics.jsonl`` lines): ``epoch``, ``lr``,
    ``train_loss``, ``train_top1`` and, when validated, ``val_loss``, ``val_top1`` and
    ``val_top5`` (a missing or ``None`` value is a gap)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]

    def series(key: str, scale: float = 1.0) -> list[float]:
        return [float("nan") if r.get(key) is None else scale * r[key] for r in history]

    has_val = any(r.get("val_top1") is not None for r in history)
    fig = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    marker = "o" if len(epochs) <= 30 else None

    ax_loss.plot(epochs, series("train_loss"), marker=marker, label="train")
    if has_val:
        ax_loss.plot(epochs, series("val_loss"), marker=marker, label="validation")
    ax_loss.set_title("loss (cross-entropy)")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()

    ax_acc.plot(epochs, series("train_top1", 100), marker=marker, label="train top-1")
    if has_val:
        ax_acc.plot(epochs, series("val_top1", 100), marker=marker, label="validation top-1")
        if any(r.get("val_top5") is not None for r in history):  # None: 5 classes or fewer
            ax_acc.plot(
                epochs,
                series("val_top5", 100),
                marker=marker,
                linestyle="--",
                label="validation top-5",
            )
    ax_acc.set_title("accuracy (%)")
    ax_acc.set_xlabel("epoch")
    ax_acc.legend()

    ax_lr.plot(epochs, series("lr"), marker=marker, color="tab:gray")
    ax_lr.set_title("learning rate (last step of the epoch)")
    ax_lr.set_xlabel("epoch")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    return fig
