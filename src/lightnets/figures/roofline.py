"""The roofline of one network: every timed layer at (intensity, achieved GFLOP/s) under the
machine's two roofs, min(peak compute, intensity x memory bandwidth) (Williams et al. 2009)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightnets.figures.axes import wrap

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["KIND_STYLE", "Roof", "RooflineLayer", "roofline_figure"]

#: Layer kind -> (legend label, colour, marker), in legend order; other kinds are not drawn.
KIND_STYLE = {
    "conv": ("standard conv", "tab:red", "s"),
    "pointwise_conv": ("pointwise 1x1", "tab:blue", "o"),
    "group_conv": ("group conv", "tab:purple", "D"),
    "depthwise_conv": ("depthwise", "tab:orange", "^"),
    "linear": ("fully connected", "tab:green", "P"),
}


@dataclass(frozen=True)
class Roof:
    """A machine's roofs: peak compute (GFLOP/s) and memory bandwidth (GB/s), measured on
    ``device`` with ``threads`` threads."""

    device: str
    gflops: float
    bandwidth_gb_s: float
    threads: int

    @property
    def ridge_point(self) -> float:
        """Intensity (FLOP/byte) where the roof turns from memory-bound to compute-bound."""
        return self.gflops / self.bandwidth_gb_s


@dataclass(frozen=True)
class RooflineLayer:
    """One timed layer: its kind (a key of :data:`KIND_STYLE`), arithmetic intensity
    (FLOP/byte), achieved GFLOP/s and time; ``in_cache``: measured above the sloped roof;
    ``above_peak``: measured above the compute peak, an error."""

    kind: str
    intensity: float
    achieved_gflops: float
    latency_ms: float
    in_cache: bool = False
    above_peak: bool = False


def roofline_figure(
    model: str,
    input_shape: Sequence[int],
    roof: Roof,
    layers: Sequence[RooflineLayer],
    *,
    stable: bool = True,
    note: str = "",
) -> Figure:
    """Log-log roofline: the measured roofs and every layer as a point.

    Marker area is proportional to the layer's share of the timed total, so the layers that
    matter stand out. ``input_shape`` is (batch, channels, height, width); ``stable`` and
    ``note`` say whether the measurement can be trusted (the note's first clause is shown).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    intensities = [p.intensity for p in layers] or [1.0]
    low = min(min(intensities) / 2, roof.ridge_point / 10)
    high = max(max(intensities) * 2, roof.ridge_point * 10)
    _draw_roofs(ax, roof, low, high)
    _draw_points(ax, layers)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    achieved = [p.achieved_gflops for p in layers if p.achieved_gflops > 0]
    ax.set_ylim(min([*achieved, roof.gflops]) / 3, max([*achieved, roof.gflops]) * 3)
    ax.set_xlabel("arithmetic intensity (FLOP per byte of memory access)")
    ax.set_ylabel("achieved throughput (GFLOP/s)")
    batch, *image = input_shape
    ax.set_title(
        f"{model}, {'x'.join(map(str, image))} input, batch {batch}, float32: each conv/FC "
        f"layer timed alone\n{roof.device}, {roof.threads} thread"
        f"{'s' if roof.threads != 1 else ''} (roofs and layers alike)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(
        loc="lower right", fontsize=9, title="layer kind (marker area ∝ time)", title_fontsize=9
    )
    _label_bandwidth(ax, roof)
    _notes(ax, layers, stable, note)
    return fig


def _draw_roofs(ax: Any, roof: Roof, low: float, high: float) -> None:
    """The roof min(peak, intensity x bandwidth), the ridge point and the peak's label."""
    import numpy as np

    x = np.geomspace(low, high, 200)
    ax.plot(
        x,
        np.minimum(roof.gflops, x * roof.bandwidth_gb_s),
        color="black",
        lw=2,
        label="roof: min(peak, intensity × bandwidth)",
    )
    ax.axvline(roof.ridge_point, color="grey", ls=":", lw=1)
    ax.annotate(
        f"ridge {roof.ridge_point:.1f} FLOP/B",
        (roof.ridge_point, roof.gflops),
        xytext=(6, -14),
        textcoords="offset points",
        fontsize=9,
        color="dimgrey",
    )
    ax.annotate(
        f"peak {roof.gflops:.0f} GFLOP/s (fastest large conv)",
        (roof.ridge_point, roof.gflops),
        xytext=(8, 4),
        textcoords="offset points",
        va="bottom",
        fontsize=9,
    )


def _draw_points(ax: Any, layers: Sequence[RooflineLayer]) -> None:
    """Every timed layer at (intensity, achieved GFLOP/s), one marker style per kind."""
    total = sum(p.latency_ms for p in layers) or 1.0
    for kind, (label, colour, marker) in KIND_STYLE.items():
        points = [p for p in layers if p.kind == kind]
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


def _label_bandwidth(ax: Any, roof: Roof) -> None:
    """The bandwidth label follows the sloped roof, a decade left of the ridge."""
    at = roof.ridge_point / 10
    (x0, y0), (x1, y1) = ax.transData.transform(
        [(at, at * roof.bandwidth_gb_s), (at * 2, 2 * at * roof.bandwidth_gb_s)]
    )
    ax.annotate(
        f"{roof.bandwidth_gb_s:.1f} GB/s (DRAM bandwidth: copy/add of 128 MiB)",
        (at, at * roof.bandwidth_gb_s),
        xytext=(-4, 6),
        textcoords="offset points",
        rotation=math.degrees(math.atan2(y1 - y0, x1 - x0)),
        rotation_mode="anchor",
        fontsize=9,
    )


def _notes(ax: Any, layers: Sequence[RooflineLayer], stable: bool, note: str) -> None:
    """Say why points sit above the roof, and that the measurement was unstable, if it was.

    Cache explains a point above the sloped roof (drawn with DRAM bandwidth); nothing explains
    one above the flat compute roof: that is a measurement error, circled in red.
    """
    lines = []
    if any(p.in_cache for p in layers):
        lines.append(
            "Points above the sloped roof: their working set stays in cache,\n"
            "faster than the DRAM bandwidth the sloped roof is drawn with."
        )
    errors = [p for p in layers if p.above_peak]
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
    if not stable:
        first = note.split("; ")[0]  # the whole note is in the JSON and the terminal
        lines.append("Measurement NOT STABLE: " + wrap(first))
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
