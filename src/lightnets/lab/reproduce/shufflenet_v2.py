"""ShuffleNet V2 (Ma et al. 2018): the complexity of its widths, the four guideline experiments
of Section 2 (Tables 1-4) timed here beside the paper's GPU and ARM columns
(:func:`lightnets.lab.guidelines.run_guidelines`), and Section 1's argument that MACs are
an indirect measure of speed (:func:`lightnets.analysis.compare.compare`)."""

from __future__ import annotations

from typing import Any

from lightnets.lab.reproduce.common import COST_COLUMNS, Context, add_cost_rows, count, timed
from lightnets.lab.reproduce.plan import SAME_MACS
from lightnets.lab.reproduce.report import (
    SectionResult,
    Table,
    count_text,
    number,
    signed,
    verdict,
)

ID = "shufflenet_v2"
TITLE = "ShuffleNet V2"
PAPER = "ShuffleNet V2 (Ma et al. 2018, arXiv:1807.11164)"

#: A latency ratio from this up, between networks of about the same MACs, is "different speed".
DIFFERENT_SPEED = 1.25


def inputs(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    return {
        "guidelines": list(plan.guidelines),
        "guidelines_quick": plan.guidelines_quick,
        "latency_seconds": plan.latency_seconds,
        "threads": plan.threads,
    }


def run(ctx: Context) -> SectionResult:
    result = SectionResult(
        ID,
        TITLE,
        PAPER,
        "The complexity of its four widths, its four design guidelines re-run on this CPU "
        "(Section 2, Tables 1-4), and networks of equal MACs timed side by side (Section 1).",
    )
    complexity = Table(
        "shufflenet_v2.widths",
        "Table 5 / Table 8: complexity of ShuffleNet V2 0.5x-2x (224 px)",
        "lightnets.profile of shufflenet_v2 (1000 classes, batch 1): MACs of convolutions and "
        "the FC layer, all parameters (the paper's parameter counts are the reference code's)",
        COST_COLUMNS,
    )
    for width in (0.5, 1.0, 1.5, 2.0):
        add_cost_rows(complexity, f"{width:g}x", "shufflenet_v2", {"width_mult": width})
    result.tables.append(complexity)
    ctx.log("timing the guideline networks (Tables 1-4)")
    tables, figure, conditions = guidelines(ctx)
    result.tables += tables
    result.figures.append(figure)
    result.conditions.update(conditions)
    ctx.log("timing networks of equal MACs (Section 1)")
    result.tables.append(same_macs(ctx))
    return result


def _direction(norm: float, tolerance: float) -> int:
    return 0 if abs(norm - 1) <= tolerance else (1 if norm > 1 else -1)


def guidelines(ctx: Context) -> tuple[list[Table], dict[str, str], dict[str, Any]]:
    """One table per guideline: every configuration's memory access (counted) and speed
    (timed), normalised to the table's first row, beside the paper's."""
    from lightnets.lab.guidelines import TOLERANCE, plot_guidelines, run_guidelines
    from lightnets.lab.guidelines.paper import GUIDELINE_TABLES
    from lightnets.lab.guidelines.paper import PAPER as GUIDELINES_PAPER

    plan = ctx.plan
    report = run_guidelines(plan.guidelines, quick=plan.guidelines_quick, threads=plan.threads)
    c = report.conditions
    measured = (
        f"lightnets guidelines: the paper's benchmark networks (ARM channel set, 56x56, 10 "
        f"repeats), memory access counted by lightnets.profile; speed = images/s, median of "
        f"{c['rounds']} interleaved rounds, batch {c['batch_size']}, {c['threads']} thread(s), "
        f"float32, normalised to the table's first row. The difference is against the paper's "
        f"ARM column (one core, as here); agreement is the same direction within "
        f"{100 * TOLERANCE:.0f}%"
    )
    tables = []
    for guideline in dict.fromkeys(r.guideline for r in report.records):
        source = GUIDELINE_TABLES[guideline]
        table = Table(
            f"shufflenet_v2.{guideline.lower()}",
            f"{guideline}: {source.claim} ({source.source.removeprefix(GUIDELINES_PAPER + ', ')})",
            measured,
            [
                "scale",
                "configuration",
                "memory access",
                "paper GPU",
                "paper ARM",
                "ours",
                "difference",
                "verdict",
                "timing",
            ],
        )
        for record in (r for r in report.records if r.guideline == guideline):
            ours, paper = record.measured_norm, record.paper_arm_norm
            if ours is None or paper is None:  # normalise() sets both for the paper's tables
                raise ValueError(f"{record.config}: no relative speed to compare")
            if record.config == source.rows[0].config:
                judged = verdict("reference")
            else:
                same = _direction(ours, TOLERANCE) == _direction(paper, TOLERANCE)
                judged = verdict("agrees" if same else "differs")
            table.add(
                f"x{record.scale} {record.config}",
                f"x{record.scale}",
                record.config,
                number(record.memory_access, f"{record.memory_access / 1e6:.1f} MB"),
                number(record.paper_gpu_norm, f"{record.paper_gpu_norm:.2f}"),
                number(record.paper_arm_norm, f"{record.paper_arm_norm:.2f}"),
                number(ours, f"{ours:.2f}"),
                number(ours - paper, signed(ours - paper, 2)),
                judged,
                verdict("stable" if record.stable else "unstable"),
            )
        table.notes += [
            f"{key}: {line}" for key, line in report.verdicts.items() if key.startswith(guideline)
        ]
        unstable = [r for r in report.records if r.guideline == guideline and not r.stable]
        if unstable:
            table.notes.append(
                f"timing: {len(unstable)} of {len(table.rows)} configurations unstable; the "
                f"first: {unstable[0].timing_note}"
            )
        tables.append(table)
    scratch = ctx.workspace.work / "guidelines.full.png"
    plot_guidelines(report, scratch)
    figure = ctx.workspace.adopt_png(
        scratch,
        "shufflenet_v2_guidelines",
        "ShuffleNet V2's guidelines: speed on this CPU against the paper's GPU and ARM, each "
        "normalised to the first configuration of its table",
    )
    conditions = {f"guidelines: {key.replace('_', ' ')}": value for key, value in c.items()}
    return tables, figure, conditions


def same_macs(ctx: Context) -> Table:
    """Section 1: networks of about the same MACs, timed together in interleaved rounds."""
    from lightnets.analysis.compare import compare, parse_spec

    plan = ctx.plan
    comparison = compare(
        list(SAME_MACS), latency_seconds=plan.latency_seconds, threads=plan.threads
    )
    table = Table(
        "shufflenet_v2.same_macs",
        "Section 1: equal MACs, unequal speed",
        f"lightnets compare: batch 1, 224x224, float32, {comparison.threads} thread(s), "
        f"torch.inference_mode, the networks timed together in interleaved rounds (at least "
        f"{plan.latency_seconds:g} s each); operations = the counter's operations that read or "
        "write memory. The paper (Fig. 1 c-d) shows networks of similar FLOPs at different "
        f"speeds; a ratio of {DIFFERENT_SPEED:g}x or more counts as different here",
        [
            "network",
            "MACs",
            "memory access",
            "operations",
            "latency (ms)",
            "p10-p90 (ms)",
            "verdict",
            "note",
        ],
    )
    for text, row in zip(SAME_MACS, comparison.rows, strict=True):
        spec = parse_spec(text)
        operations = sum(1 for r in count(spec.name, **spec.kwargs).rows if not r.free)
        latency = timed(row)
        table.add(
            row.label,
            row.label,
            number(row.macs, count_text(row.macs, 1)),
            number(row.memory_access, f"{row.memory_access / 1e6:.1f} MB"),
            number(operations, str(operations)),
            number(latency.median_ms, f"{latency.median_ms:.2f}"),
            number(None, f"{latency.p10_ms:.2f}-{latency.p90_ms:.2f}"),
            verdict("stable" if latency.stable else "unstable"),
            latency.note,
        )
    medians = [timed(row).median_ms for row in comparison.rows]
    macs = [row.macs for row in comparison.rows]
    ratio = max(medians) / min(medians)
    holds = ratio >= DIFFERENT_SPEED
    table.add(
        "claim",
        "claim: same MACs, different speed",
        number(None, f"{count_text(min(macs), 1)}-{count_text(max(macs), 1)}"),
        number(None, "-"),
        number(None, "-"),
        number(ratio, f"{ratio:.2f}x slowest / fastest"),
        number(None, "-"),
        verdict("holds" if holds else "fails"),
        "timings unstable: read the ratio with care" if comparison.stable is False else "",
    )
    return table
