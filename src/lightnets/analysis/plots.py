"""The analysis' figures: a roofline and a zoo comparison turned into the plain data that
:mod:`lightnets.figures` draws (which knows nothing of profiles or measurements)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lightnets.analysis.compare import Comparison
    from lightnets.analysis.roofline import Roofline

__all__ = ["plot_comparison", "plot_roofline"]


def plot_roofline(result: Roofline) -> Figure:
    """Log-log roofline: the measured roofs and every timed conv/linear layer as a point
    (:func:`lightnets.figures.roofline.roofline_figure`)."""
    from lightnets.analysis.roofline import ABOVE_MEMORY_ROOF, ABOVE_PEAK
    from lightnets.figures.roofline import Roof, RooflineLayer, roofline_figure

    peak = result.peak
    layers = [
        RooflineLayer(
            kind=str(p.kind),
            intensity=p.intensity,
            achieved_gflops=p.achieved_gflops,
            latency_ms=p.latency_ms,
            in_cache=p.flag == ABOVE_MEMORY_ROOF,
            above_peak=p.flag == ABOVE_PEAK,
        )
        for p in result.points
    ]
    return roofline_figure(
        result.model,
        result.input_shape,
        Roof(peak.device, peak.gflops, peak.bandwidth_gb_s, peak.threads),
        layers,
        stable=result.stable,
        note=result.note,
    )


def plot_comparison(comparison: Comparison) -> Figure:
    """Two panels: MACs against measured latency, and MACs against the papers' top-1
    (:func:`lightnets.figures.zoo.zoo_figure`), each family in the plot style its registry
    entry declares, the legend in the zoo's order."""
    from lightnets.figures.zoo import FamilyStyle, ZooPoint, zoo_figure
    from lightnets.models import get_model_entry, model_entries

    styles = {}
    for entry in model_entries():
        style = entry.plot_style
        if style is not None and style.family not in styles:
            styles[style.family] = FamilyStyle(style.colour, style.marker, style.label_colour)
    points = []
    for row in comparison.rows:
        latency, paper = row.latency, row.paper
        style = get_model_entry(row.name).plot_style
        points.append(
            ZooPoint(
                label=row.label,
                family=style.family if style is not None else row.name,
                macs=row.macs,
                median_ms=latency.median_ms if latency is not None else None,
                p10_ms=latency.p10_ms if latency is not None else None,
                p90_ms=latency.p90_ms if latency is not None else None,
                top1=paper.top1 if paper is not None else None,
            )
        )
    return zoo_figure(
        points,
        styles=styles,
        device=comparison.device,
        threads=comparison.threads,
        input_size=comparison.input_size,
        stable=comparison.stable,
        note=comparison.note,
    )
