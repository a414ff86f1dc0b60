"""Helpers shared by the figures: plain-number log ticks, labels placed clear of each other."""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["log_axis", "place_labels", "wrap"]


def wrap(text: str, width: int = 90) -> str:
    """``text`` broken into lines of at most ``width`` characters."""
    return "\n".join(textwrap.wrap(text, width))


def log_axis(axis: Any, values: list[float]) -> None:
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


def place_labels(fig: Figure, ax: Any, points: list[tuple[float, float, str, str]]) -> None:
    """Annotate each (x, y, text, colour) point beside it, trying six positions until the
    label overlaps no other label and no other point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    if not isinstance(fig.canvas, FigureCanvasAgg):  # the renderer measures the labels
        raise TypeError("place_labels needs a figure on an Agg canvas (FigureCanvasAgg(fig))")
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
