"""What every section uses: the run's context, counting a zoo model, and cost rows beside the
paper's figures (:func:`lightnets.analysis.reference.paper_figures`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightnets.analysis.compare import ComparisonRow
from lightnets.analysis.report import LayerRecord, Profile
from lightnets.analysis.timing import LatencyStats
from lightnets.lab.reproduce.plan import Plan
from lightnets.lab.reproduce.report import (
    Table,
    compare_count,
    integer_text,
    millions_text,
    printed_step,
)
from lightnets.lab.reproduce.store import Workspace

__all__ = ["COST_COLUMNS", "Context", "add_cost_rows", "count", "paper_text", "widest"]


@dataclass
class Context:
    """What a section may use: the plan, the report's folder, the weights folder, and a
    ``log`` for progress lines within the section."""

    plan: Plan
    workspace: Workspace
    weights_dir: Path | None = None
    log: Callable[[str], None] = field(default=lambda line: None)


@functools.lru_cache(maxsize=64)
def _count(name: str, size: int, hparams: tuple[tuple[str, Any], ...]) -> Profile:
    from lightnets.analysis import profile
    from lightnets.models import create_model

    model = create_model(name, **dict(hparams)).eval()
    return profile(model, (3, size, size))


def count(name: str, size: int = 224, **hparams: Any) -> Profile:
    """:func:`lightnets.profile` of the ImageNet network (1000 classes), batch 1, float32
    (cached: several tables count the same networks)."""
    return _count(name, size, tuple(sorted(hparams.items())))


def paper_text(value: float, step: float) -> str:
    """A paper's figure as the paper prints it: "569M", "4.2M", or an exact "3,504,872"."""
    return integer_text(round(value)) if step == 1 else f"{value / 1e6:g}M"


def _ours_text(step: float) -> Callable[[float], str]:
    if step == 1:
        return lambda v: integer_text(round(v))
    return lambda v: millions_text(v, 1 if step >= 1e6 else 2)


COST_COLUMNS = ["network", "input", "quantity", "paper", "ours", "difference", "verdict", "note"]


def add_cost_rows(
    table: Table,
    label: str,
    name: str,
    hparams: dict[str, Any],
    *,
    size: int = 224,
    notes: dict[str, str] | None = None,
) -> Profile:
    """Rows "MACs" and "params" of one network beside its paper's figures (:data:`COST_COLUMNS`);
    ``notes`` by quantity explain a known departure. Returns the profile."""
    from lightnets.analysis.reference import paper_figure

    prof = count(name, size, **hparams)
    figure = paper_figure(name, hparams, size)
    notes = notes or {}
    for quantity, ours, paper in (
        ("MACs", prof.macs, figure.macs if figure else None),
        ("params", prof.params, figure.params if figure else None),
    ):
        step = printed_step(paper) if paper is not None else 1e6
        cells = compare_count(
            paper,
            ours,
            step=step,
            text=_ours_text(step),
            paper_text=paper_text(paper, step) if paper is not None else None,
        )
        source = figure.source.rsplit(", ", 1)[-1] if figure else ""
        note = notes.get(quantity, "")
        if not note and paper is not None:
            note = source
        table.add(f"{label} {size} {quantity}", label, f"{size} px", quantity, *cells, note)
    return prof


def resolution_of(row: LayerRecord) -> int | None:
    """Height (= width) of a row's square output; 1 for a pooled (N, C) output."""
    shape = row.output_shape
    if len(shape) == 4 and shape[2] == shape[3]:
        return shape[2]
    return 1 if len(shape) == 2 else None


def widest(rows: Iterable[LayerRecord]) -> dict[int, int]:
    """Resolution -> the most channels of any of these rows' outputs at that resolution."""
    found: dict[int, int] = {}
    for row in rows:
        resolution = resolution_of(row)
        if resolution is not None:
            found[resolution] = max(found.get(resolution, 0), row.output_shape[1])
    return found


def timed(row: ComparisonRow) -> LatencyStats:
    """The latency of a row :func:`lightnets.analysis.compare.compare` timed (it times every
    row unless asked not to)."""
    if row.latency is None:
        raise ValueError(f"{row.label} was not timed (compare(..., latency=True))")
    return row.latency
