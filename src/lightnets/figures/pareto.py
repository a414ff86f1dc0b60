"""Accuracy against cost: one panel per cost, the Pareto front joined, and the paper's rows.

Each record is plain data: ``cell`` ((axis, value) pairs, the point's label), ``test_top1``
(a fraction), one number per cost key, ``pareto`` (the cost keys on whose front it lies) and
``at_chance`` (drawn apart, never on a front).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CHANCE_STYLE", "accuracy_cost_figure"]

#: How a record at chance level is drawn.
CHANCE_STYLE: dict[str, Any] = {
    "color": "tab:gray",
    "marker": "x",
    "label": "at chance: off the front",
}


def accuracy_cost_figure(
    records: Sequence[Mapping[str, Any]],
    costs: Sequence[tuple[str, str]],
    *,
    model: str,
    dataset: str,
    paper: Sequence[Mapping[str, Any]] = (),
) -> Figure:
    """Test top-1 against each of ``costs`` ((record key, axis label) pairs; the key
    ``latency_ms`` is labelled as measured here), log cost axes, and, with ``paper`` rows
    (``hparams``, ``resolution``, ``macs``, ``top1``), the paper's ImageNet top-1 against
    MACs in a last panel."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    panels = len(costs) + (1 if paper else 0)
    fig = Figure(figsize=(4.2 * panels, 4.0), layout="constrained")
    for i, (key, label) in enumerate(costs):
        ax = fig.add_subplot(1, panels, i + 1)
        xs = [r[key] for r in records]
        ys = [100 * r["test_top1"] for r in records]
        chance = [bool(r.get("at_chance")) for r in records]
        styles: tuple[tuple[bool, dict[str, Any]], ...] = (
            (False, {"color": "tab:blue"}),
            (True, CHANCE_STYLE),
        )
        for marked, style in styles:
            points = [(x, y) for x, y, c in zip(xs, ys, chance, strict=True) if c == marked]
            if points:
                ax.scatter(*zip(*points, strict=True), zorder=3, **style)
        for r, x, y in zip(records, xs, ys, strict=True):
            ax.annotate(
                ",".join(f"{v:g}" for _, v in r["cell"]),
                (x, y),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        front = sorted((r[key], 100 * r["test_top1"]) for r in records if key in r["pareto"])
        ax.plot(
            [x for x, _ in front],
            [y for _, y in front],
            color="tab:red",
            lw=1.2,
            label="Pareto front",
            zorder=2,
        )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label + (" (ms, batch 1, this machine)" if key == "latency_ms" else ""))
        ax.set_ylabel(f"test top-1 (%), {dataset}")
        if i == 0:
            ax.legend(fontsize=8)
    if paper:
        ax = fig.add_subplot(1, panels, panels)
        rows = [p for p in paper if p["macs"] is not None]
        ax.scatter([p["macs"] for p in rows], [p["top1"] for p in rows], color="tab:green")
        for p in rows:
            ax.annotate(
                f"{p['hparams']} @{p['resolution']}",
                (p["macs"], p["top1"]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("MACs (paper)")
        ax.set_ylabel("ImageNet top-1 (%), paper")
        ax.set_title(f"{model}: the paper's rows", fontsize=9)
    fig.suptitle(f"{model} on {dataset}: accuracy against cost", fontsize=10)
    return fig
