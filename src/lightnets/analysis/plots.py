"""Figures: the roofline of one network and the cost/speed/accuracy comparison of the zoo.

matplotlib's object-oriented API with the Agg canvas (no pyplot, no global backend switch);
files are written atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lightnets import fileio
from lightnets.analysis.kinds import OpKind

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lightnets.analysis.compare import Comparison
    from lightnets.analysis.roofline import MachinePeak, Roofline

__all__ = [
    "check_plot_output",
    "check_writable",
    "plot_comparison",
    "plot_roofline",
    "save_figure",
]

FORMATS = (".png", ".svg", ".pdf")

_KIND_STYLE = {
    OpKind.CONV: ("standard conv", "tab:red", "s"),
    OpKind.POINTWISE_CONV: ("pointwise 1x1", "tab:blue", "o"),
    OpKind.GROUP_CONV: ("group conv", "tab:purple", "D"),
    OpKind.DEPTHWISE_CONV: ("depthwise", "tab:orange", "^"),
    OpKind.LINEAR: ("fully connected", "tab:green", "P"),
}

_LABEL_COLOURS = {
    "squeezenet": "#5b3a29",
    "mobilenet_v1": "#0b4f8a",
    "mobilenet_v2": "#1b6e1b",
    "shufflenet_v1": "#5e3a87",
    "shufflenet_v2": "#a01818",
}

_FAMILY_MARKERS = {
    "squeezenet": "s",
    "mobilenet_v1": "o",
    "mobilenet_v2": "^",
    "shufflenet_v1": "D",
    "shufflenet_v2": "v",
}

_FAMILY_COLOURS = {
    "squeezenet": "tab:brown",
    "mobilenet_v1": "tab:blue",
    "mobilenet_v2": "tab:green",
    "shufflenet_v1": "tab:purple",
    "shufflenet_v2": "tab:red",
}


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Fail now, before a long measurement, if ``path`` cannot be written as a figure."""
    return fileio.check_writable(path, suffixes=FORMATS)


def check_plot_output(
    path: str | os.PathLike[str], *, force: bool, inputs: Sequence[str] = ()
) -> Path:
    """``--plot FILE`` checked by the rule every written file follows
    (:func:`lightnets.fileio.check_output`): a figure format, not an input, and an existing
    file replaced only with a yes or ``--force``."""
    return fileio.check_output(path, inputs=inputs, force=force, suffixes=FORMATS)


def save_figure(figure: Figure, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    """Write ``figure`` to ``path`` atomically; the format follows the suffix."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = check_writable(path)
    FigureCanvasAgg(figure)
    with fileio.atomic_path(path, path.suffix) as temp:
        figure.savefig(temp, format=path.suffix[1:].lower(), dpi=dpi)
    return path


def plot_roofline(result: Roofline) -> Figure:
    """Log-log roofline: the measured roofs and every conv/linear layer as a point.

    Marker area is proportional to the layer's share of the timed total, so the layers that
    matter stand out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    peak = result.peak
    fig = Figure(figsize=(9, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    intensities = [p.intensity for p in result.points] or [1.0]
    low = min(min(intensities) / 2, peak.ridge_point / 10)
    high = max(max(intensities) * 2, peak.ridge_point * 10)
    _draw_roofs(ax, peak, low, high)
    _draw_points(ax, result)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    achieved = [p.achieved_gflops for p in result.points if p.achieved_gflops > 0]
    ax.set_ylim(min([*achieved, peak.gflops]) / 3, max([*achieved, peak.gflops]) * 3)
    ax.set_xlabel("arithmetic intensity (FLOP per byte of memory access)")
    ax.set_ylabel("achieved throughput (GFLOP/s)")
    batch, *image = result.input_shape
    ax.set_title(
        f"{result.model}, {'x'.join(map(str, image))} input, batch {batch}, float32: each conv/FC "
        f"layer timed alone\n{peak.device}, {peak.threads} thread"
        f"{'s' if peak.threads != 1 else ''} (roofs and layers alike)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(
        loc="lower right", fontsize=9, title="layer kind (marker area ∝ time)", title_fontsize=9
    )
    _label_bandwidth(ax, peak)
    _roofline_notes(ax, result)
    return fig


def _draw_roofs(ax, peak: MachinePeak, low: float, high: float) -> None:
    """The roof min(peak, intensity x bandwidth), the ridge point and the peak's label."""
    import numpy as np

    x = np.geomspace(low, high, 200)
    ax.plot(
        x,
        np.minimum(peak.gflops, x * peak.bandwidth_gb_s),
        color="black",
        lw=2,
        label="roof: min(peak, intensity × bandwidth)",
    )
    ax.axvline(peak.ridge_point, color="grey", ls=":", lw=1)
    ax.annotate(
        f"ridge {peak.ridge_point:.1f} FLOP/B",
        (peak.ridge_point, peak.gflops),
        xytext=(6, -14),
        textcoords="offset points",
        fontsize=9,
        color="dimgrey",
    )
    ax.annotate(
        f"peak {peak.gflops:.0f} GFLOP/s (fastest large conv)",
        (peak.ridge_point, peak.gflops),
        xytext=(8, 4),
        textcoords="offset points",
        va="bottom",
        fontsize=9,
    )


def _draw_points(ax, result: Roofline) -> None:
    """Every timed layer at (intensity, achieved GFLOP/s), one marker style per kind."""
    total = result.total_ms or 1.0
    for kind, (label, colour, marker) in _KIND_STYLE.items():
        points = [p for p in result.points if p.kind == kind]
        if not points:
            continue
        ax.scatter(
            [p.intensity for p in points],
            [p.achieved_gflops for p in points],
            s=[20 + 600 * p.latency_ms / total for p in points],
            c=colour,
            marker=marker,
            alpha=0.75,
            edgecolors="black",
            linewidths=0.5,
            label=f"{label} ({len(points)})",
        )


def _label_bandwidth(ax, peak: MachinePeak) -> None:
    """The bandwidth label follows the sloped roof, a decade left of the ridge."""
    at = peak.ridge_point / 10
    (x0, y0), (x1, y1) = ax.transData.transform(
        [(at, at * peak.bandwidth_gb_s), (at * 2, 2 * at * peak.bandwidth_gb_s)]
    )
    ax.annotate(
        f"{peak.bandwidth_gb_s:.1f} GB/s (DRAM bandwidth: copy/add of 128 MiB)",
        (at, at * peak.bandwidth_gb_s),
        xytext=(-4, 6),
        textcoords="offset points",
        rotation=math.degrees(math.atan2(y1 - y0, x1 - x0)),
        rotation_mode="anchor",
        fontsize=9,
    )


def _roofline_notes(ax, result: Roofline) -> None:
    """Say why points sit above the roof, and that the measurement was unstable, if it was.

    Cache explains a point above the sloped roof (drawn with DRAM bandwidth); nothing explains
    one above the flat compute roof: that is a measurement error, circled in red.
    """
    from lightnets.analysis.roofline import ABOVE_MEMORY_ROOF, ABOVE_PEAK

    lines = []
    if any(p.flag == ABOVE_MEMORY_ROOF for p in result.points):
        lines.append(
            "Points above the sloped roof: their working set stays in cache,\n"
            "faster than the DRAM bandwidth the sloped roof is drawn with."
        )
    errors = [p for p in result.points if p.flag == ABOVE_PEAK]
    if errors:
        ax.scatter(
            [p.intensity for p in errors],
            [p.achieved_gflops for p in errors],
            s=160,
            facecolors="none",
            edgecolors="red",
            linewidths=1.5,
        )
        lines.append(
            f"Circled in red: {len(errors)} point(s) above the compute peak, a measurement\n"
            "error (the peak was underestimated, e.g. on a busy machine)."
        )
    if not result.stable:
        first = result.note.split("; ")[0]  # the whole note is in the JSON and the terminal
        lines.append("Measurement NOT STABLE: " + _wrap(first))
    if lines:
        ax.text(
            0.01,
            0.99,
            "\n".join(lines),
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            color="dimgrey",
        )


def _wrap(text: str, width: int = 90) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _log_axis(axis, values: list[float]) -> None:
    """Log scale with plain-number ticks (1, 2, 5 x 10^k) covering ``values``."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    low, high = min(values), max(values)
    ticks = [
        m * 10**e
        for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
        for m in (1, 2, 5)
    ]
    ticks = [t for t in ticks if low / 1.6 <= t <= high * 1.6] or [low, high]
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(NullFormatter())


def _place_labels(fig: Figure, ax, points: list[tuple[float, float, str, str]]) -> None:
    """Annotate each point beside it (in its family's colour), trying six positions until the
    label overlaps no other label and no other point."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    radius = 6 * fig.dpi / 72  # markers of size 55 pt^2 are about 7 pt across
    markers = {
        (x, y): Bbox.from_extents(px - radius, py - radius, px + radius, py + radius)
        for x, y, _, _ in points
        for px, py in [ax.transData.transform((x, y))]
    }
    labels: list[Bbox] = []
    for x, y, text, colour in sorted(points, key=lambda p: (p[1], p[0])):
        others = [box for point, box in markers.items() if point != (x, y)] + labels
        for dx, dy, ha, va in (
            (7, 2, "left", "bottom"),
            (7, -2, "left", "top"),
            (0, 8, "center", "bottom"),
            (0, -8, "center", "top"),
            (-7, 2, "right", "bottom"),
            (-7, -2, "right", "top"),
        ):
            label = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=8,
                color=colour,
            )
            box = label.get_window_extent(renderer).expanded(1.04, 1.15)
            clear = not any(box.overlaps(b) for b in others)
            if clear and inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1):
                break
            label.remove()
        else:
            label = ax.annotate(
                text, (x, y), xytext=(7, 2), textcoords="offset points", fontsize=8, color=colour
            )
            box = label.get_window_extent(renderer)
        labels.append(box)


def _scatter_families(ax, points: list[tuple[float, float, str, str]]) -> None:
    """(MACs, y, label, family) points, one marker and colour per family, on a log MACs axis."""
    if not points:
        ax.text(0.5, 0.5, "nothing to show", ha="center", transform=ax.transAxes)
        return
    for family, colour in _FAMILY_COLOURS.items():
        mine = [p for p in points if p[3] == family]
        if mine:
            ax.scatter(
                [p[0] for p in mine],
                [p[1] for p in mine],
                s=55,
                color=colour,
                marker=_FAMILY_MARKERS[family],
                edgecolors="black",
                linewidths=0.5,
                zorder=3,
                label=family,
            )
    ax.set_xscale("log")
    xs = [p[0] for p in points]
    ax.set_xlim(min(xs) / 1.5, max(xs) * 2.2)
    _log_axis(ax.xaxis, xs)
    ax.set_xlabel("MACs (millions of multiply-accumulates, log scale)")
    ax.grid(True, which="major", alpha=0.3)


def _spread_bars(ax, comparison: Comparison) -> None:
    """A vertical bar from p10 to p90 through every measured median."""
    timed = [row for row in comparison.rows if row.latency is not None]
    if timed:
        ax.vlines(
            [row.macs / 1e6 for row in timed],
            [row.latency.p10_ms for row in timed],
            [row.latency.p90_ms for row in timed],
            colors="grey",
            lw=1,
            zorder=2,
            label="p10-p90",
        )


def plot_comparison(comparison: Comparison) -> Figure:
    """Two panels: MACs against measured latency, and MACs against the papers' top-1."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_speed, ax_acc = fig.subplots(1, 2)
    panels = {ax_speed: [], ax_acc: []}
    for row in comparison.rows:
        family = "squeezenet" if row.name.startswith("squeezenet") else row.name
        if row.latency is not None:
            panels[ax_speed].append((row.macs / 1e6, row.latency.median_ms, row.label, family))
        if row.paper is not None and row.paper.top1 is not None:
            panels[ax_acc].append((row.macs / 1e6, row.paper.top1, row.label, family))
    for ax, points in panels.items():
        _scatter_families(ax, points)
    _spread_bars(ax_speed, comparison)
    if panels[ax_speed]:
        ys = [
            y
            for row in comparison.rows
            if row.latency
            for y in (row.latency.p10_ms, row.latency.p90_ms)
        ]
        ax_speed.set_yscale("log")
        ax_speed.set_ylim(min(ys) / 1.4, max(ys) * 1.4)
        _log_axis(ax_speed.yaxis, ys)
    if panels[ax_acc]:
        ys = [p[1] for p in panels[ax_acc]]
        ax_acc.set_ylim(min(ys) - 2, max(ys) + 2)
    ax_speed.set_ylabel("measured latency, batch 1 (ms, median and p10-p90; log scale)")
    ax_speed.set_title(
        f"Same MACs, different speed: measured on {comparison.device}, "
        f"{comparison.threads} thread{'s' if comparison.threads != 1 else ''}",
        fontsize=10,
    )
    ax_acc.set_ylabel("ImageNet top-1 (%, as reported by the papers)")
    ax_acc.set_title("MACs against the papers' ImageNet top-1", fontsize=10)
    ax_speed.legend(loc="upper left", fontsize=8)
    size = comparison.input_size
    title = f"lightnets zoo at {size}x{size}, float32"
    if comparison.stable is False:
        title += "\nlatencies NOT STABLE: " + _wrap(comparison.note, 140)
    fig.suptitle(title, fontsize=11)
    fig.draw_without_rendering()
    fig.set_layout_engine("none")  # freeze the layout the labels are placed in
    for ax, points in panels.items():
        _place_labels(
            fig, ax, [(x, y, label, _LABEL_COLOURS[family]) for x, y, label, family in points]
        )
    return fig
