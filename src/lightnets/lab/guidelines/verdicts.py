"""The guidelines' records and report, and the verdicts: does this machine rank a table's
configurations the way the paper does?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lightnets import jsonio
from lightnets.lab.guidelines.paper import GUIDELINE_TABLES, PAPER

__all__ = [
    "FLAT",
    "TOLERANCE",
    "GuidelineRecord",
    "GuidelineReport",
    "group_records",
    "normalise",
    "timing_summary",
    "verdict",
]

#: A configuration "agrees" while its normalised speed is on the paper's side of 1 +- this.
TOLERANCE = 0.03
#: A table whose speeds all lie within 1 +- this is called flat on this machine.
FLAT = 0.10


@dataclass
class GuidelineRecord:
    """One configuration's counts, measured speed and the paper's figures (``--json`` record)."""

    guideline: str
    config: str
    channels: list[int]
    groups: int
    scale: int
    widths: str
    feature_map: int
    batch_size: int
    macs: int
    memory_access: int
    memory_access_bound: int | None
    params: int
    ms: float
    batches_per_sec: float
    images_per_sec: float
    spread: float
    stable: bool
    timing_note: str = ""
    measured_norm: float | None = None
    paper_gpu: float | None = None
    paper_arm: float | None = None
    paper_gpu_norm: float | None = None
    paper_arm_norm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GuidelineReport:
    records: list[GuidelineRecord]
    verdicts: dict[str, str]
    conditions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": PAPER,
            "conditions": self.conditions,
            "verdicts": self.verdicts,
            "records": [r.to_dict() for r in self.records],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return jsonio.dumps(self.to_dict(), indent=indent)

    def to_markdown(self) -> str:
        """One table per guideline and scale, then the verdicts."""
        lines: list[str] = []
        for (guideline, scale), rows in group_records(self.records).items():
            table = GUIDELINE_TABLES[guideline]
            lines += [
                f"**{guideline} x{scale}**: {table.claim} "
                f"({table.source.removeprefix(PAPER + ', ')})",
                "",
                "| config | channels | MACs | memory access | bound (Eq. 1) | ms/batch | "
                "images/s | spread | speed (norm.) | paper GPU (norm.) | paper ARM (norm.) |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            lines += [_markdown_row(r) for r in rows]
            lines.append("")
        lines += [f"- {g}: {text}" for g, text in self.verdicts.items()]
        lines.append(f"- timing: {timing_summary(self.records)}")
        return "\n".join(lines)


def timing_summary(records: Sequence[GuidelineRecord]) -> str:
    """One line for every configuration's timing: how many are unstable (marked in the
    tables) and the first one's reason, instead of one near-identical line per configuration."""
    unstable = [r for r in records if not r.stable]
    if not unstable:
        worst = max(records, key=lambda r: r.spread, default=None)
        spread = f"; widest spread {100 * worst.spread:.0f}% ({worst.config})" if worst else ""
        return f"all {len(records)} configurations stable{spread}"
    first = unstable[0]
    return (
        f"{len(unstable)} of {len(records)} configurations unstable, marked (unstable) in the "
        f"tables; first, {first.guideline} {first.config}: {first.timing_note or 'unstable'}"
    )


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f} MB"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _markdown_row(r: GuidelineRecord) -> str:
    channels = ",".join(map(str, r.channels)) + (f" g={r.groups}" if r.groups > 1 else "")
    paper_gpu = f"{r.paper_gpu:g} ({_ratio(r.paper_gpu_norm)})"
    paper_arm = f"{r.paper_arm:g} ({_ratio(r.paper_arm_norm)})"
    mark = "" if r.stable else " (unstable)"
    return (
        f"| {r.config} | {channels} | {r.macs / 1e6:.1f}M | {_mb(r.memory_access)} | "
        f"{_mb(r.memory_access_bound)} | {r.ms:.2f} | {r.images_per_sec:.1f} | "
        f"{100 * r.spread:.0f}%{mark} | {_ratio(r.measured_norm)} | {paper_gpu} | {paper_arm} |"
    )


def group_records(
    records: Sequence[GuidelineRecord],
) -> dict[tuple[str, int], list[GuidelineRecord]]:
    """The records of each (guideline, scale), in order: one table each."""
    groups: dict[tuple[str, int], list[GuidelineRecord]] = {}
    for record in records:
        groups.setdefault((record.guideline, record.scale), []).append(record)
    return groups


def normalise(records: list[GuidelineRecord]) -> None:
    """Speed relative to the first row of the same table and scale, ours and the paper's."""
    for rows in group_records(records).values():
        first = rows[0]
        for r in rows:
            r.measured_norm = r.images_per_sec / first.images_per_sec
            r.paper_gpu_norm = _relative(r.paper_gpu, first.paper_gpu)
            r.paper_arm_norm = _relative(r.paper_arm, first.paper_arm)


def _relative(value: float | None, base: float | None) -> float | None:
    """``value / base``, or None where the paper gives no figure."""
    return None if value is None or base is None else value / base


def _measured(record: GuidelineRecord) -> float:
    """The record's speed relative to its table's first row (:func:`normalise` sets it)."""
    if record.measured_norm is None:
        raise ValueError(f"{record.config}: normalise() the records before a verdict")
    return record.measured_norm


def verdict(guideline: str, rows: Sequence[GuidelineRecord]) -> str:
    """One line: does this machine rank the configurations the way the paper does?

    G1-G3 predict the first row (1:1, g=1, 1-fragment) fastest; G4 predicts it slowest.
    """
    first, others = rows[0], rows[1:]
    slower_expected = guideline != "G4"
    sign = 1 if slower_expected else -1
    against = [r for r in others if sign * (_measured(r) - 1) > TOLERANCE]
    extreme = min(others, key=lambda r: sign * _measured(r))
    claim = GUIDELINE_TABLES[guideline].claim

    def cite(r: GuidelineRecord) -> str:
        fewer = 1 - r.macs / first.macs
        macs = f", with {fewer:.0%} fewer MACs" if fewer >= 0.01 else ""
        return (
            f"{r.config} runs at {r.measured_norm:.2f}x the speed of {first.config}{macs} "
            f"(paper: GPU {r.paper_gpu_norm:.2f}x, ARM {r.paper_arm_norm:.2f}x)"
        )

    unstable = "" if all(r.stable for r in rows) else "; some timings unstable (busy machine)"
    if not against:
        what = "fastest" if slower_expected else "slowest"
        return f"{claim}: agrees: {first.config} is the {what}; {cite(extreme)}{unstable}"
    worst = max(against, key=lambda r: sign * _measured(r))
    flat = all(abs(_measured(r) - 1) <= FLAT for r in others)
    shape = f" (flat within {FLAT:.0%} here)" if flat else ""
    return f"{claim}: does not agree: {cite(worst)}{shape}{unstable}"
