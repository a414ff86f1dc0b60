"""What a section of the report holds: tables of the paper's figure beside ours, with verdicts.

Everything here is plain data that goes into ``results.json`` as it is; the page
(:mod:`~lightnets.lab.reproduce.page`) is drawn from that data alone, so every number on the
page is in the JSON. A table cell is one of:

* a string (a label, or text such as ``"144/288/576"``);
* a number cell, ``{"value": 568740352, "text": "568.7M"}`` (``value`` ``None`` where nothing
  was measured, ``text`` then says why);
* a verdict cell, ``{"verdict": "agrees", "text": "agrees"}`` (:data:`VERDICTS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLOSE",
    "VERDICTS",
    "SectionResult",
    "Table",
    "compare_count",
    "compare_points",
    "count_text",
    "integer_text",
    "millions_text",
    "number",
    "percent_text",
    "printed_step",
    "signed",
    "verdict",
]

#: Every verdict a row can carry, and what it means (shown as the page's legend).
VERDICTS: dict[str, str] = {
    "agrees": "ours equals the paper's figure at the precision the paper prints",
    "close": "within 2% of the paper's figure",
    "differs": "more than 2% away, or the other way round; the note says why",
    "holds": "the paper's claim is true here",
    "fails": "the paper's claim is not true here",
    "stable": "the timing can be trusted (quiet machine, tight confidence interval)",
    "unstable": "the timing cannot be trusted: the note says why (busy machine, wide spread)",
    "reference": "the row every other row of its table is normalised to",
    "n/a": "nothing to compare: the paper prints no figure, or nothing was measured",
}
#: Relative difference up to which a figure is "close".
CLOSE = 0.02

Cell = str | dict[str, Any]


def number(value: float | int | None, text: str) -> dict[str, Any]:
    """A number cell: the value as measured and the text the page shows."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    return {"value": value, "text": text}


def verdict(kind: str, text: str | None = None) -> dict[str, str]:
    """A verdict cell (``kind`` one of :data:`VERDICTS`)."""
    if kind not in VERDICTS:
        raise ValueError(f"unknown verdict {kind!r}")
    return {"verdict": kind, "text": text or kind}


# -- formatting ----------------------------------------------------------------------------------
def count_text(value: float, digits: int = 1) -> str:
    """569e6 -> '569.0M' (``digits`` decimals), 4231976 -> '4.2M', 13000 -> '13.0K'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}f}{unit}"
    return f"{value:g}"


def millions_text(value: float, digits: int = 2) -> str:
    """470072 -> '0.47M': parameters and MACs beside the papers' "0.5M"."""
    return f"{value / 1e6:.{digits}f}M"


def integer_text(value: int) -> str:
    """1248424 -> '1,248,424'."""
    return f"{value:,}"


def percent_text(value: float, digits: int = 2) -> str:
    """94.8612 -> '94.86%' (``value`` already in percent)."""
    return f"{value:.{digits}f}%"


def signed(value: float, digits: int = 1, unit: str = "") -> str:
    """+0.7, -2.3 points: a difference always shows its sign (never "-0.00")."""
    return f"{round(value, digits) + 0.0:+.{digits}f}{unit}"


# -- comparing a figure with the paper's ---------------------------------------------------------
def _judge(paper: float, ours: float, step: float) -> str:
    """agrees (equal when rounded as the paper prints: within half its last digit), close
    (within :data:`CLOSE`), else differs."""
    if abs(ours - paper) <= step / 2 * (1 + 1e-9):
        return "agrees"
    if paper and abs(ours - paper) / abs(paper) <= CLOSE:
        return "close"
    return "differs"


def compare_count(
    paper: float | None,
    ours: float,
    *,
    step: float,
    text: Callable[[float], str],
    paper_text: str | None = None,
) -> list[Cell]:
    """Cells ``[paper, ours, difference, verdict]`` for a count (MACs, parameters, bytes).

    ``step`` is the precision the paper prints the figure with (1e6 for "569M", 1e5 for
    "4.2M", 1 for an exact count); the difference is relative, in percent.
    """
    ours_cell = number(ours, text(ours))
    if paper is None:
        return [number(None, "-"), ours_cell, number(None, "-"), verdict("n/a")]
    relative = 100.0 * (ours - paper) / paper if paper else math.inf
    return [
        number(paper, paper_text or text(paper)),
        ours_cell,
        number(relative, signed(relative, 1, "%")),
        verdict(_judge(paper, ours, step)),
    ]


def compare_points(paper: float | None, ours: float, *, step: float = 0.01) -> list[Cell]:
    """Cells ``[paper, ours, difference, verdict]`` for a share in percent (difference in
    percentage points; ``step`` the paper's printed precision, 0.01 for "94.86%")."""
    digits = max(0, round(-math.log10(step)))
    ours_cell = number(ours, percent_text(ours, digits))
    if paper is None:
        return [number(None, "-"), ours_cell, number(None, "-"), verdict("n/a")]
    return [
        number(paper, percent_text(paper, digits)),
        ours_cell,
        number(ours - paper, signed(ours - paper, digits, " points")),
        verdict(_judge(paper, ours, step)),
    ]


def printed_step(value: float) -> float:
    """The precision of a paper figure stored as a whole number (:mod:`analysis.reference`):
    exact counts (3,504,872) to the unit, "4.2M" to 0.1M, MACs ("569M") to 1M."""
    if value % 1e5:
        return 1.0
    return 1e6 if value % 1e6 == 0 and value >= 1e7 else 1e5


# -- tables and sections -------------------------------------------------------------------------
@dataclass
class Table:
    """One table of a section: a title, how it was measured (one line), columns and rows.

    Each row is ``{"key": ..., "cells": [...]}``: ``key`` names the row for programs reading
    ``results.json`` (e.g. ``"conv1x1 macs"``), ``cells`` line up with ``columns``.
    """

    id: str
    title: str
    measured: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(
                f"{self.id}: row {key!r} has {len(cells)} cells, not {len(self.columns)}"
            )
        self.rows.append({"key": key, "cells": list(cells)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "measured": self.measured,
            "columns": list(self.columns),
            "rows": self.rows,
            "notes": list(self.notes),
        }


@dataclass
class SectionResult:
    """Everything one section found: its tables, figures (files under the report's folder) and
    notes, and the conditions it was measured under (``name -> text or number``)."""

    id: str
    title: str
    paper: str
    summary: str
    tables: list[Table] = field(default_factory=list)
    figures: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    conditions: dict[str, Any] = field(default_factory=dict)

    def verdict_counts(self) -> dict[str, int]:
        return count_verdicts(t.to_dict() for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "paper": self.paper,
            "summary": self.summary,
            "tables": [t.to_dict() for t in self.tables],
            "figures": list(self.figures),
            "notes": list(self.notes),
            "conditions": dict(self.conditions),
            "verdicts": self.verdict_counts(),
        }


def count_verdicts(tables: Any) -> dict[str, int]:
    """How many rows of ``tables`` (dicts) carry each verdict, in :data:`VERDICTS` order."""
    counts = dict.fromkeys(VERDICTS, 0)
    for table in tables:
        for row in table["rows"]:
            for cell in row["cells"]:
                if isinstance(cell, dict) and "verdict" in cell:
                    counts[cell["verdict"]] += 1
    return {kind: n for kind, n in counts.items() if n}
