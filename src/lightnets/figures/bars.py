"""Measured beside published figures, as grouped bars: one panel per table or network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SpeedPanel", "normalised_speed_figure", "paper_and_ours_figure"]


@dataclass(frozen=True)
class SpeedPanel:
    """One table's configurations, each one's speed relative to the first configuration's:
    measured here, and the paper's on its GPU and ARM platforms."""

    title: str
    configs: Sequence[str]
    measured: Sequence[float | None]
    paper_gpu: Sequence[float | None]
    paper_arm: Sequence[float | None]


def normalised_speed_figure(panels: Sequence[SpeedPanel]) -> Figure:
    """One panel per table: three bars per configuration (this machine, paper GPU, paper
    ARM), a dotted line at 1 (the first configuration's speed)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * max(1, len(panels)), 4.2), layout="constrained")
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        x = np.arange(len(panel.configs))
        series = (
            ("this machine", panel.measured, "tab:blue"),
            ("paper GPU", panel.paper_gpu, "tab:green"),
            ("paper ARM", panel.paper_arm, "tab:orange"),
        )
        for k, (label, values, colour) in enumerate(series):
            heights = [np.nan if v is None else v for v in values]  # no figure: no bar
            ax.bar(x + (k - 1) * 0.27, heights, 0.27, label=label, color=colour)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xticks(x, list(panel.configs), rotation=30, ha="right", fontsize=8)
        ax.set_title(panel.title, fontsize=8)
        ax.set_ylabel(f"speed / speed of {panel.configs[0]}")
        if i == 0:
            ax.legend(fontsize=8)
    return fig


def paper_and_ours_figure(
    values: Mapping[str, Mapping[str, Sequence[float]]],
    labels: Sequence[str],
    *,
    ylabel: str,
    title: str,
    log: bool = True,
) -> Figure:
    """One panel per key of ``values`` (its title), sharing the y axis: at each of ``labels``
    the paper's value (grey) beside ours (blue), from ``{"paper": [...], "ours": [...]}``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 3.6), layout="constrained")
    axes = fig.subplots(1, len(values), sharey=True)
    positions = range(len(labels))
    for ax, (name, pair) in zip(axes, values.items(), strict=True):
        ax.bar([p - 0.2 for p in positions], pair["paper"], 0.4, label="paper", color="#bbbbbb")
        ax.bar([p + 0.2 for p in positions], pair["ours"], 0.4, label="ours", color="tab:blue")
        ax.set_xticks(list(positions), list(labels), fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig
