"""Run the sections in order, skipping finished ones, and write the page after each.

A section is recomputed only when its stored result is missing, unreadable, made with other
settings (plan, weights, lightnets version) or ``force`` asks for it; the page and
``results.json`` are rewritten after every section, so an interrupted run leaves a report of
what it finished.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from lightnets import fileio, jsonio
from lightnets.errors import InvalidArgumentError
from lightnets.lab.reproduce import (
    machine,
    mobilenet_v1,
    mobilenet_v2,
    shufflenet_v1,
    shufflenet_v2,
    squeezenet,
)
from lightnets.lab.reproduce.common import Context
from lightnets.lab.reproduce.page import render_page
from lightnets.lab.reproduce.plan import QUICK, Plan
from lightnets.lab.reproduce.report import VERDICTS
from lightnets.lab.reproduce.store import Workspace

__all__ = ["SECTIONS", "ReproduceResult", "parse_sections", "run_reproduce"]

#: Every section, in the page's order: one per paper, then this machine.
SECTIONS: dict[str, ModuleType] = {
    module.ID: module
    for module in (mobilenet_v1, mobilenet_v2, shufflenet_v1, shufflenet_v2, squeezenet, machine)
}
TITLE = "lightnets reproduce: five lightweight-CNN papers, re-measured on this machine"


def parse_sections(names: Sequence[str]) -> list[str]:
    """Section ids from ``--sections`` values (each may hold several, comma-separated), in
    the page's order; an unknown name is an error naming the allowed ones."""
    wanted = [part.strip() for name in names for part in name.split(",") if part.strip()]
    unknown = [name for name in wanted if name not in SECTIONS]
    if unknown:
        raise InvalidArgumentError(
            f"unknown section {unknown[0]!r}; allowed: {', '.join(SECTIONS)}"
        )
    if not wanted:
        raise InvalidArgumentError(f"--sections needs a name; allowed: {', '.join(SECTIONS)}")
    return [name for name in SECTIONS if name in wanted]


def duration_text(seconds: float) -> str:
    """42.3 s, 5 min 12 s, 1 h 3 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


@dataclass
class ReproduceResult:
    """Where the report is, what it holds, and what this run did."""

    index: Path
    results: Path
    document: dict[str, Any]
    computed: list[str] = field(default_factory=list)
    read_back: list[str] = field(default_factory=list)


def _inputs(ctx: Context) -> dict[str, dict[str, Any]]:
    """What each section's result depends on: a stored result made from other inputs is stale."""
    from lightnets.version import __version__

    return {
        section_id: {"lightnets": __version__, **module.inputs(ctx)}
        for section_id, module in SECTIONS.items()
    }


def run_reproduce(
    out_dir: str | Path,
    *,
    plan: Plan = QUICK,
    sections: Sequence[str] | None = None,
    weights_dir: str | Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ReproduceResult:
    """Run the ``sections`` (default: all) not finished yet in ``out_dir`` and write the report.

    Args:
        plan: what the timed and trained parts measure (:data:`~.plan.QUICK`, :data:`~.plan.FULL`).
        weights_dir: a folder with torchvision's ``squeezenet1_0-*.pth`` / ``squeezenet1_1-*.pth``
            for the SqueezeNet compression table (random weights otherwise, marked as such).
        force: recompute the selected sections even when they are finished.
        progress: receives one line per section and per step within it (default: printed to
            the standard output this call starts with, which sections may redirect for the
            noisier tools they run).
    """
    if progress is None:
        stream = sys.stdout

        def progress(line: str) -> None:
            print(line, file=stream, flush=True)

    plan.validate()
    selected = parse_sections(sections) if sections is not None else list(SECTIONS)
    weights = Path(weights_dir) if weights_dir is not None else None
    if weights is not None and not weights.is_dir():
        raise InvalidArgumentError(f"--weights-dir {str(weights)!r} is not a folder")
    workspace = Workspace.open(out_dir)
    ctx = Context(plan, workspace, weights, log=lambda line: progress(f"      {line}"))
    if weights is not None and not squeezenet.weight_files(weights):
        progress(
            f"note: {weights} holds no squeezenet1_0-*.pth or squeezenet1_1-*.pth: SqueezeNet "
            "is compressed with random weights (size only)"
        )
    inputs = _inputs(ctx)
    started = time.perf_counter()
    outcome = ReproduceResult(workspace.root / "index.html", workspace.root / "results.json", {})
    for number, section_id in enumerate(selected, 1):
        module = SECTIONS[section_id]
        prefix = f"[{number}/{len(selected)}] {module.TITLE}"
        stored, why = workspace.load(section_id, inputs[section_id])
        if stored is not None and not force:
            progress(f"{prefix}: finished earlier ({stored['result']['finished']}), skipped")
            outcome.read_back.append(section_id)
            continue
        progress(f"{prefix}: {'running' if why == 'not run yet' or force else why + ', rerunning'}")
        begin = time.perf_counter()
        result = module.run(ctx)
        seconds = time.perf_counter() - begin
        record = {
            **result.to_dict(),
            "plan": plan.name,
            "seconds": seconds,
            "finished": _utc(),
            "time_text": f"measured in {duration_text(seconds)} with the {plan.name} plan, "
            f"finished {_utc()}",
        }
        workspace.save(section_id, inputs[section_id], record)
        outcome.computed.append(section_id)
        counts = ", ".join(f"{n} {kind}" for kind, n in record["verdicts"].items())
        progress(f"{prefix}: done in {duration_text(seconds)} ({counts})")
        outcome.document = write_report(workspace, inputs, plan, outcome, started)
    outcome.document = write_report(workspace, inputs, plan, outcome, started)
    figures = sum(len(s["figures"]) for s in outcome.document["sections"])
    progress(
        f"wrote {outcome.index}, {outcome.results.name} and {figures} figure(s) in "
        f"{workspace.figures}; {outcome.document['run']['summary']}"
    )
    return outcome


def write_report(
    workspace: Workspace,
    inputs: dict[str, dict[str, Any]],
    plan: Plan,
    outcome: ReproduceResult,
    started: float,
) -> dict[str, Any]:
    """Write ``results.json`` and ``index.html`` from every finished section."""
    import torch

    from lightnets.analysis.machine import cpu_name
    from lightnets.version import __version__

    records, missing = [], []
    for section_id, module in SECTIONS.items():
        stored, why = workspace.load(section_id, inputs[section_id])
        if stored is None:
            missing.append(
                {
                    "id": section_id,
                    "title": module.TITLE,
                    "why": f"{why}: lightnets reproduce --sections {section_id} -o "
                    f"{workspace.root}",
                }
            )
        else:
            records.append(stored["result"])
    measured = sum(r["seconds"] for r in records)
    this_run = time.perf_counter() - started
    summary = (
        f"{len(records)} of {len(SECTIONS)} sections, measured in {duration_text(measured)} in "
        f"all ({', '.join(sorted({r['plan'] for r in records})) or 'no'} plan); this run: "
        f"{len(outcome.computed)} computed, {len(outcome.read_back)} read back, "
        f"{duration_text(this_run)}; generated {_utc()}"
    )
    document = {
        "title": TITLE,
        "lightnets": __version__,
        "torch": torch.__version__,
        "generated": _utc(),
        "plan": plan.to_dict(),
        "run": {
            "sections": len(records),
            "sections_possible": len(SECTIONS),
            "seconds_measured": measured,
            "seconds_this_run": this_run,
            "computed": list(outcome.computed),
            "read_back": list(outcome.read_back),
            "summary": summary,
        },
        "machine": f"{cpu_name()}; torch {torch.__version__}; lightnets {__version__}",
        "verdicts": dict(VERDICTS),
        "sections": records,
        "missing": missing,
        "footer": "Every number on this page is in results.json beside it, and every figure in "
        "figures/ (PNG). Made by lightnets reproduce; how each number is measured: "
        "docs/reproduce.md of lightnets.",
    }
    fileio.write_text_atomic(
        workspace.root / "results.json", jsonio.dumps(document, indent=1) + "\n"
    )
    fileio.write_text_atomic(workspace.root / "index.html", render_page(document, workspace.root))
    return document
