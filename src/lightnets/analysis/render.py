"""Printing what the analysis counted and measured: rich tables, Markdown, CSV and JSON.

Counting lives in :mod:`~lightnets.analysis.counter` and :mod:`~lightnets.analysis.report`,
measuring in :mod:`~lightnets.analysis.timing`, :mod:`~lightnets.analysis.compare` and
:mod:`~lightnets.analysis.roofline`; this module only turns their results into text, as fvcore
separates its counters from its printers. The command line calls these functions and nothing
else to print. The rich tables are built by :func:`lightnets.tables.rich_table` from the cells
formatted here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from lightnets import jsonio
from lightnets.analysis.reference import PaperFigure
from lightnets.analysis.report import (
    SHORT_CONVENTIONS,
    LayerRecord,
    Profile,
    format_bytes,
    format_count,
)
from lightnets.analysis.roofline import ABOVE_MEMORY_ROOF, ABOVE_PEAK
from lightnets.tables import Column, Justify, rich_table

if TYPE_CHECKING:
    from rich.table import Table

    from lightnets.analysis.compare import Comparison, ComparisonRow
    from lightnets.analysis.roofline import Roofline

__all__ = [
    "BY_TYPE_FIELDS",
    "COMPARISON_HEADERS",
    "by_type_csv",
    "by_type_markdown",
    "by_type_table",
    "comparison_markdown",
    "comparison_table",
    "format_shape",
    "measurement_line",
    "paper_line",
    "profile_csv",
    "profile_json",
    "profile_markdown",
    "profile_table",
    "roofline_table",
    "roofline_title",
    "to_json",
    "totals_table",
]

Table2 = dict[str, tuple[float, float]]

#: Columns of the by-type CSV, in the order of :class:`~lightnets.analysis.report.TypeShare`.
BY_TYPE_FIELDS = (
    "type",
    "description",
    "layers",
    "macs",
    "macs_percent",
    "params",
    "params_percent",
)

_TABLE2_CAPTION = (
    "weights: conv/FC weight tensors only, as Table 2. The paper's 1.19% for conv3x3 swaps "
    "two digits: its shares then sum to 99.29%; the network gives 1.91%"
)


def format_shape(shape: tuple[int, ...] | None) -> str:
    """``(1, 3, 224, 224)`` -> ``'1x3x224x224'``; ``None`` or ``()`` -> ``''``."""
    return "x".join(map(str, shape)) if shape else ""


def to_json(data: Any, indent: int | None = 2) -> str:
    """Strict JSON (non-finite floats written as null) of plain data."""
    return jsonio.dumps(data, indent=indent)


# -- lightnets profile: machine formats ----------------------------------------------------------
def profile_json(prof: Profile, *, by_type: bool = False, figure: PaperFigure | None = None) -> str:
    """Everything :class:`Profile` holds, with the paper's figures; ``by_type``: without the
    per-operation rows and per-kind sums (the model, its totals and by-type shares stay)."""
    data = prof.to_dict()
    if by_type:
        del data["rows"], data["by_kind"]
    if figure is not None:
        data["paper"] = {**asdict(figure), "hparams": dict(figure.hparams)}
    return to_json(data)


def profile_csv(prof: Profile) -> str:
    """One line per operation; shapes written as ``1x3x224x224``."""
    names = [f.name for f in fields(LayerRecord)] + ["flops", "intensity", "layer_type"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in prof.rows:
        data = row.to_dict()
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = format_shape(value)
            elif value is None:
                data[key] = ""
        writer.writerow(data)
    return buffer.getvalue()


def by_type_csv(prof: Profile) -> str:
    """One line per layer type (MobileNets, Table 2)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(BY_TYPE_FIELDS)
    for share in prof.by_type():
        writer.writerow([getattr(share, name) for name in BY_TYPE_FIELDS])
    return buffer.getvalue()


def profile_markdown(prof: Profile, *, all_rows: bool = False) -> str:
    """Totals, the by-type table and the operations (zero-cost views left out by default)."""
    lines = [
        f"**{prof.model}**, input {format_shape(prof.input_shape)} ({prof.dtype}, {prof.device})",
        "",
        "| total | value | counts |",
        "|---|---:|---|",
    ]
    for key, value in prof.totals().items():
        shown = format_bytes(value) if key.endswith(("access", "bytes")) else f"{value:,}"
        lines.append(f"| {key} | {shown} | {prof.conventions[key]} |")
    lines += [
        "",
        "| layer type | layers | MACs | MACs % | weights | weights % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for share in prof.by_type():
        lines.append(
            f"| {share.type} | {share.layers} | {share.macs:,} | {share.macs_percent:.2f} "
            f"| {share.params:,} | {share.params_percent:.2f} |"
        )
    lines += [
        "",
        "| # | module | kind | kernel | groups | input | output | params | MACs "
        "| memory access | FLOP/byte |",
        "|---:|---|---|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in prof.rows:
        if row.free and not all_rows:
            continue
        lines.append(
            f"| {row.index} | {row.module or '(root)'} | {row.kind} | {format_shape(row.kernel)} "
            f"| {row.groups or ''} | {format_shape(row.input_shape)} "
            f"| {format_shape(row.output_shape)} | {row.params:,} | {row.macs:,} "
            f"| {row.memory_access:,} | {row.intensity:.2f} |"
        )
    return "\n".join(lines) + "\n"


def by_type_markdown(prof: Profile, table2: Table2 | None = None) -> str:
    """The by-type shares, beside MobileNets' Table 2 when ``table2`` is given."""
    header = "| type | layers | MACs | MACs % |"
    header += " paper MACs % |" if table2 else ""
    header += " weights | weights % |" + (" paper weights % |" if table2 else "")
    lines = [header, "|---" + "|---:" * (header.count("|") - 2) + "|"]
    for s in prof.by_type():
        cells = [s.type, str(s.layers), f"{s.macs:,}", f"{s.macs_percent:.2f}"]
        paper = (table2 or {}).get(s.type)
        if table2:
            cells.append(f"{paper[0]:.2f}" if paper else "")
        cells += [f"{s.params:,}", f"{s.params_percent:.2f}"]
        if table2:
            cells.append(f"{paper[1]:.2f}" if paper else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- lightnets profile: terminal -----------------------------------------------------------------
_PROFILE_COLUMNS: tuple[tuple[str, Justify], ...] = (
    ("#", "right"),
    ("module", "left"),
    ("kind", "left"),
    ("kernel", "left"),
    ("output", "left"),
    ("params", "right"),
    ("MACs", "right"),
    ("elem. ops", "right"),
    ("mem. access", "right"),
    ("FLOP/B", "right"),
)


def _geometry(row: LayerRecord) -> str:
    """``3x3 /2x2 g32``: kernel, stride when not 1, groups when more than one."""
    if row.kernel is None:
        return ""
    geometry = format_shape(row.kernel)
    if row.stride and any(s != 1 for s in row.stride):
        geometry += f" /{format_shape(row.stride)}"
    if row.groups and row.groups > 1:
        geometry += f" g{row.groups}"
    return geometry


def _profile_cells(row: LayerRecord) -> list[str]:
    return [
        str(row.index),
        row.module or "(root)",
        row.kind,
        _geometry(row),
        format_shape(row.output_shape),
        format_count(row.params) if row.params else "",
        format_count(row.macs) if row.macs else "",
        format_count(row.elementwise_ops) if row.elementwise_ops else "",
        format_bytes(row.memory_access) if row.memory_access else "",
        f"{row.intensity:.1f}" if row.macs else "",
    ]


def profile_table(prof: Profile, *, all_rows: bool = False) -> Table:
    """A rich table of the operations (zero-cost views hidden by default)."""
    shown = [row for row in prof.rows if all_rows or not row.free]
    hidden = len(prof.rows) - len(shown)
    return rich_table(
        [Column(name, justify, no_wrap=name != "module") for name, justify in _PROFILE_COLUMNS],
        [_profile_cells(row) for row in shown],
        title=f"{prof.model} — input {format_shape(prof.input_shape)} ({prof.dtype})",
        caption=f"{hidden} zero-cost views not shown" if hidden else None,
        header_style="bold",
        box="simple_head",
        padding=(0, 1),
    )


def totals_table(prof: Profile) -> Table:
    """The totals, each with what it counts in a few words."""
    rows = []
    for key, value in prof.totals().items():
        if key.endswith(("access", "bytes")):
            shown = format_bytes(value)
        else:
            shown = f"{value:,} ({format_count(value)})"
        rows.append([key, shown, SHORT_CONVENTIONS.get(key, "")])
    return rich_table(
        ["total", Column("value", "right"), "what it counts"],
        rows,
        title="totals",
        caption="full definitions: Profile.conventions (in --json output)",
        header_style="bold",
    )


def by_type_table(prof: Profile, table2: Table2 | None = None) -> Table:
    """MACs and weights per layer type; beside MobileNets' Table 2 when ``table2`` is given."""
    if table2 is not None:
        return _by_type_beside_table2(prof, table2)
    rows = [
        [
            share.type,
            str(share.layers),
            format_count(share.macs),
            f"{share.macs_percent:.2f}",
            format_count(share.params),
            f"{share.params_percent:.2f}",
        ]
        for share in prof.by_type()
    ]
    return rich_table(
        _first_left("type", "layers", "MACs", "MACs %", "weights", "weights %"),
        rows,
        title="by layer type",
        caption="weights: conv and FC weight tensors only (biases, BN left out), as Table 2",
        header_style="bold",
    )


def _first_left(*names: str) -> list[Column]:
    """The first column text (left-aligned), the others numbers (right-aligned)."""
    return [Column(name, "left" if i == 0 else "right") for i, name in enumerate(names)]


def _by_type_beside_table2(prof: Profile, table2: Table2) -> Table:
    rows = []
    for s in prof.by_type():
        paper = table2.get(s.type)
        if s.layers == 0 and paper is None:
            continue
        sic = " (sic)" if s.type == "conv3x3" else ""
        rows.append(
            [
                s.type,
                f"{s.macs_percent:.2f}",
                f"{paper[0]:.2f}{sic}" if paper else "",
                f"{s.params_percent:.2f}",
                f"{paper[1]:.2f}" if paper else "",
            ]
        )
    return rich_table(
        _first_left("type", "MACs %", "paper", "weights %", "paper "),
        rows,
        title="by layer type, beside MobileNets' Table 2",
        caption=_TABLE2_CAPTION,
        header_style="bold",
    )


def paper_line(prof: Profile, figure: PaperFigure) -> str:
    """``paper: 300M MACs (ours 300.8M), 3.40M params (ours 3.50M), top-1 72.0% — source``."""
    parts = []
    if figure.macs:
        parts.append(f"{figure.macs / 1e6:.0f}M MACs (ours {prof.macs / 1e6:.1f}M)")
    if figure.params:
        parts.append(f"{figure.params / 1e6:.2f}M params (ours {prof.params / 1e6:.2f}M)")
    if figure.top1 is not None:
        parts.append(f"top-1 {figure.top1}%")
    return f"paper: {', '.join(parts)} — {figure.source}"


# -- lightnets compare ---------------------------------------------------------------------------
COMPARISON_HEADERS = (
    "model",
    "params",
    "MACs",
    "paper MACs",
    "FLOPs",
    "memory access (MB)",
    "weights MB fp32 / int8",
    "peak activations (MB)",
    "latency (ms)",
    "p10-p90 (ms)",
    "paper top-1",
)


def _comparison_cells(row: ComparisonRow) -> list[str]:
    paper_macs = row.paper.macs if row.paper and row.paper.macs else None
    latency = row.latency
    return [
        row.label,
        f"{row.params / 1e6:.2f}M",
        f"{row.macs / 1e6:.0f}M",
        f"{paper_macs / 1e6:.0f}M" if paper_macs else "",
        f"{row.flops / 1e6:.0f}M",
        f"{row.memory_access / 1e6:.1f}",
        f"{row.weights_bytes_fp32 / 1e6:.1f} / {row.weights_bytes_int8 / 1e6:.1f}",
        f"{row.peak_activation_bytes / 1e6:.1f}",
        f"{latency.median_ms:.1f}" if latency else "",
        f"{latency.p10_ms:.1f}-{latency.p90_ms:.1f}" if latency else "",
        f"{row.paper.top1:.1f}" if row.paper and row.paper.top1 is not None else "",
    ]


def measurement_line(stable: bool | None, note: str) -> str:
    """The one line every timed command prints about its measurement ('' when nothing was
    timed)."""
    if stable is None:
        return ""
    return f"measurement: {note}" if stable else f"WARNING, measurement not stable: {note}"


def comparison_markdown(comparison: Comparison) -> str:
    """The comparison as a Markdown table, then the measurement line."""
    lines = [
        "| " + " | ".join(COMPARISON_HEADERS) + " |",
        "|---|" + "---:|" * (len(COMPARISON_HEADERS) - 1),
    ]
    lines += ["| " + " | ".join(_comparison_cells(row)) + " |" for row in comparison.rows]
    line = measurement_line(comparison.stable, comparison.note)
    return "\n".join(lines) + "\n" + (f"\n{line}\n" if line else "")


def comparison_table(comparison: Comparison) -> Table:
    """The comparison as a rich table; the caption names the conventions and the machine."""
    size, threads = comparison.input_size, comparison.threads
    return rich_table(
        _first_left(*COMPARISON_HEADERS),
        [_comparison_cells(row) for row in comparison.rows],
        title=f"lightnets zoo at {size}x{size}, batch 1, float32",
        caption=(
            f"MACs = multiply-accumulates (the papers' FLOPs); FLOPs = 2 x MACs. Latency: "
            f"median batch-1 forward pass on {comparison.device} with {threads} "
            f"thread{'s' if threads != 1 else ''}, models timed in interleaved rounds."
        ),
        header_style="bold",
    )


# -- lightnets roofline --------------------------------------------------------------------------
_ROOFLINE_COLUMNS = (
    "#",
    "module",
    "kind",
    "MFLOPs",
    "FLOP/B",
    "ms",
    "GFLOP/s",
    "attainable",
    "of roof",
    "bound",
)
_FLAG_MARKS = {ABOVE_MEMORY_ROOF: " (cache)", ABOVE_PEAK: " (error)"}


def roofline_title(result: Roofline) -> str:
    peak = result.peak
    return (
        f"{result.model} on the roofline: peak {peak.gflops:.0f} GFLOP/s, "
        f"{peak.bandwidth_gb_s:.1f} GB/s, ridge {peak.ridge_point:.1f} FLOP/B "
        f"({peak.device}, {peak.threads} thread{'s' if peak.threads != 1 else ''})"
    )


def roofline_table(result: Roofline) -> Table:
    """Every timed layer: intensity, speed, its roof, the share of the roof reached (capped
    at 100%, marked when the layer measured above it) and which roof bounds it."""
    rows = [
        [
            str(p.index),
            p.module,
            p.kind,
            f"{p.flops / 1e6:.1f}",
            f"{p.intensity:.1f}",
            f"{p.latency_ms:.3f}",
            f"{p.achieved_gflops:.1f}",
            f"{p.attainable_gflops:.1f}",
            f"{100 * p.fraction:.0f}%{_FLAG_MARKS.get(p.flag, '')}",
            p.bound,
        ]
        for p in result.points
    ]
    memory = sum(p.latency_ms for p in result.points if p.bound == "memory")
    total = result.total_ms
    text = ("module", "kind", "bound")
    return rich_table(
        [Column(name, "left" if name in text else "right") for name in _ROOFLINE_COLUMNS],
        rows,
        title=roofline_title(result),
        caption=(
            f"{len(result.points)} layers, {total:.2f} ms timed one by one; memory-bound layers "
            f"take {memory:.2f} ms ({100 * memory / total if total else 0:.0f}%); "
            f"{format_count(result.profile.flops)} FLOPs in all. (cache): above the sloped "
            "DRAM roof, its working set in cache; (error): measured above the compute peak, "
            "impossible"
        ),
        header_style="bold",
    )
