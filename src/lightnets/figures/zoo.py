"""The zoo side by side: MACs against measured latency, and against the papers' top-1.

One colour and marker per family, given by the caller (:class:`FamilyStyle`; each family
declares its own on its registry entry); a family without one is drawn in a spare style.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightnets.figures.axes import log_axis, place_labels, wrap

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SPARE_STYLES", "FamilyStyle", "ZooPoint", "zoo_figure"]


@dataclass(frozen=True)
class FamilyStyle:
    """A family's markers (``colour``, ``marker``: matplotlib's names) and the colour of its
    point labels (``label_colour``: darker than the markers, to stay readable on white)."""

    colour: str
    marker: str
    label_colour: str


#: Styles for families the caller gave none, in turn (colours no zoo family uses).
SPARE_STYLES = (
    FamilyStyle("tab:olive", "P", "#5c5c0a"),
    FamilyStyle("tab:cyan", "X", "#0b5a66"),
    FamilyStyle("tab:pink", "*", "#8a2f6e"),
    FamilyStyle("tab:orange", "h", "#8a4a00"),
)


@dataclass(frozen=True)
class ZooPoint:
    """One model: its label, family (its legend entry) and MACs; its latency (median, p10, p90
    in ms) when timed, and the paper's top-1 (%) when there is one."""

    label: str
    family: str
    macs: int
    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    top1: float | None = None


def zoo_figure(
    points: Sequence[ZooPoint],
    *,
    styles: Mapping[str, FamilyStyle] | None = None,
    device: str,
    threads: int,
    input_size: int,
    stable: bool | None = None,
    note: str = "",
) -> Figure:
    """Two panels: MACs against measured latency, and MACs against the papers' top-1.

    ``styles`` gives each family's markers, in legend order (families without one follow, in
    :data:`SPARE_STYLES`). ``device`` and ``threads`` name where the latencies were measured;
    ``stable=False`` puts ``note`` (why they cannot be trusted) in the title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_speed, ax_acc = fig.subplots(1, 2)
    panels: dict[Any, list[tuple[float, float, str, str]]] = {ax_speed: [], ax_acc: []}
    styles = _complete(styles or {}, [p.family for p in points])
    timed = [p for p in points if p.median_ms is not None]
    for p in points:
        if p.median_ms is not None:
            panels[ax_speed].append((p.macs / 1e6, p.median_ms, p.label, p.family))
        if p.top1 is not None:
            panels[ax_acc].append((p.macs / 1e6, p.top1, p.label, p.family))
    for ax, mine in panels.items():
        _scatter_families(ax, mine, styles)
    _spread_bars(ax_speed, timed)
    spread = [y for p in timed for y in (p.p10_ms, p.p90_ms) if y is not None]
    if panels[ax_speed] and spread:
        ax_speed.set_yscale("log")
        ax_speed.set_ylim(min(spread) / 1.4, max(spread) * 1.4)
        log_axis(ax_speed.yaxis, spread)
    if panels[ax_acc]:
        top1s = [p[1] for p in panels[ax_acc]]
        ax_acc.set_ylim(min(top1s) - 2, max(top1s) + 2)
    ax_speed.set_ylabel("measured latency, batch 1 (ms, median and p10-p90; log scale)")
    ax_speed.set_title(
        f"Same MACs, different speed: measured on {device}, "
        f"{threads} thread{'s' if threads != 1 else ''}",
        fontsize=10,
    )
    ax_acc.set_ylabel("ImageNet top-1 (%, as reported by the papers)")
    ax_acc.set_title("MACs against the papers' ImageNet top-1", fontsize=10)
    ax_speed.legend(loc="upper left", fontsize=8)
    title = f"lightnets zoo at {input_size}x{input_size}, float32"
    if stable is False:
        title += "\nlatencies NOT STABLE: " + wrap(note, 140)
    fig.suptitle(title, fontsize=11)
    fig.draw_without_rendering()
    fig.set_layout_engine("none")  # freeze the layout the labels are placed in
    for ax, mine in panels.items():
        place_labels(
            fig, ax, [(x, y, label, styles[family].label_colour) for x, y, label, family in mine]
        )
    return fig


def _complete(styles: Mapping[str, FamilyStyle], families: list[str]) -> dict[str, FamilyStyle]:
    """``styles``, then a spare style for each family it lacks, in order of appearance."""
    complete = dict(styles)
    for family in dict.fromkeys(families):
        if family not in complete:
            spare = sum(1 for f in complete if f not in styles)
            complete[family] = SPARE_STYLES[spare % len(SPARE_STYLES)]
    return complete


def _scatter_families(
    ax: Any, points: list[tuple[float, float, str, str]], styles: Mapping[str, FamilyStyle]
) -> None:
    """(MACs, y, label, family) points, one marker and colour per family, on a log MACs axis."""
    if not points:
        ax.text(0.5, 0.5, "nothing to show", ha="center", transform=ax.transAxes)
        return
    for family, style in styles.items():
        mine = [p for p in points if p[3] == family]
        if mine:
            ax.scatter(
                [p[0] for p in mine],
                [p[1] for p in mine],
                s=55,
                color=style.colour,
                marker=style.marker,
                edgecolors="black",
                linewidths=0.5,
                zorder=3,
                label=family,
            )
    ax.set_xscale("log")
    xs = [p[0] for p in points]
    ax.set_xlim(min(xs) / 1.5, max(xs) * 2.2)
    log_axis(ax.xaxis, xs)
    ax.set_xlabel("MACs (millions of multiply-accumulates, log scale)")
    ax.grid(True, which="major", alpha=0.3)


def _spread_bars(ax: Any, timed: Sequence[ZooPoint]) -> None:
    """A vertical bar from p10 to p90 through every measured median."""
    if timed:
        ax.vlines(
            [p.macs / 1e6 for p in timed],
            [p.p10_ms for p in timed],
            [p.p90_ms for p in timed],
            colors="grey",
            lw=1,
            zorder=2,
            label="p10-p90",
        )
