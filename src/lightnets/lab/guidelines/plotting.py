"""The guidelines' figure: this machine's speeds beside the paper's, normalised per table."""

from __future__ import annotations

from pathlib import Path

from lightnets.lab.guidelines.paper import GUIDELINE_TABLES
from lightnets.lab.guidelines.verdicts import GuidelineRecord, GuidelineReport, group_records

__all__ = ["plot_guidelines"]


def plot_guidelines(report: GuidelineReport, path: str | Path) -> Path:
    """One panel per guideline: measured speed against the paper's GPU and ARM speeds, each
    normalised to the table's first row, at the smallest scale measured
    (:func:`lightnets.figures.bars.normalised_speed_figure`)."""
    from lightnets.figures import check_writable, save_figure
    from lightnets.figures.bars import SpeedPanel, normalised_speed_figure

    check_writable(path)
    tables: dict[str, list[GuidelineRecord]] = {}
    for (guideline, scale), rows in group_records(report.records).items():
        if guideline not in tables or scale < tables[guideline][0].scale:
            tables[guideline] = rows
    panels = [
        SpeedPanel(
            title=f"{guideline} x{rows[0].scale}: {GUIDELINE_TABLES[guideline].claim}",
            configs=[r.config for r in rows],
            measured=[r.measured_norm for r in rows],
            paper_gpu=[r.paper_gpu_norm for r in rows],
            paper_arm=[r.paper_arm_norm for r in rows],
        )
        for guideline, rows in tables.items()
    ]
    return save_figure(normalised_speed_figure(panels), path)
