"""Build, count and time every configuration of the guidelines asked for: the report."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lightnets.errors import check_int
from lightnets.lab.guidelines.networks import GUIDELINES, Experiment, _counts, build_experiments
from lightnets.lab.guidelines.paper import SCALES
from lightnets.lab.guidelines.timing import Timing, time_calls
from lightnets.lab.guidelines.verdicts import (
    GuidelineRecord,
    GuidelineReport,
    group_records,
    normalise,
    verdict,
)

__all__ = ["run_guidelines"]


def check_guideline_options(
    guidelines: Sequence[str], *, batch_size: int = 1, rounds: int | None = None
) -> None:
    """The options a user gives, checked before anything is printed or built: the guideline
    names (one line naming the allowed ones), the batch size and the number of rounds."""
    build_experiments(guidelines)
    check_int("batch_size", batch_size, minimum=1)
    if rounds is not None:
        check_int("rounds", rounds, minimum=1)


def run_guidelines(
    guidelines: Sequence[str] = GUIDELINES,
    *,
    device: str | None = "cpu",
    batch_size: int = 1,
    quick: bool = False,
    widths: str | None = None,
    rounds: int | None = None,
    min_seconds: float | None = None,
    threads: int | None = 1,
) -> GuidelineReport:
    """Build, count and time every configuration of ``guidelines``.

    Args:
        device: "cpu" or "cuda" (a one-line error when CUDA is absent).
        batch_size: images per timed forward pass.
        quick: the smallest scale (x1) only, fewer and shorter rounds.
        widths: which of the paper's channel sets to build, "arm" or "gpu"; default: "gpu" on
            CUDA, "arm" otherwise (the ARM set is the one sized for a CPU).
        threads: torch CPU threads while timing (default 1, as the paper's ARM runs; on a
            machine shared with other jobs more threads mostly measure waiting); None: as set.
    """
    from lightnets.analysis.timing import torch_threads

    with torch_threads(threads):
        return _run(guidelines, device, batch_size, quick, widths, rounds, min_seconds)


def _run(
    guidelines: Sequence[str],
    device: str | None,
    batch_size: int,
    quick: bool,
    widths: str | None,
    rounds: int | None,
    min_seconds: float | None,
) -> GuidelineReport:
    from lightnets.train.distributed import resolve_device

    check_guideline_options(guidelines, batch_size=batch_size, rounds=rounds)
    device_t = torch.device(resolve_device(device))
    widths = widths or ("gpu" if device_t.type == "cuda" else "arm")
    rounds = rounds if rounds is not None else (5 if quick else 7)
    min_seconds = min_seconds if min_seconds is not None else (0.5 if quick else 2.0)
    experiments = build_experiments(guidelines, (1,) if quick else SCALES, widths)
    records: list[GuidelineRecord] = []
    for group in _grouped_experiments(experiments).values():
        models = [e.build() for e in group]
        counts = [_counts(e, m) for e, m in zip(group, models, strict=True)]
        calls = [_forward(m, e, device_t, batch_size) for e, m in zip(group, models, strict=True)]
        timings = time_calls(calls, device_t, rounds=rounds, min_seconds=min_seconds)
        records += [
            _record(e, c, t, batch_size) for e, c, t in zip(group, counts, timings, strict=True)
        ]
    normalise(records)
    verdicts = {f"{g} x{s}": verdict(g, rows) for (g, s), rows in group_records(records).items()}
    return GuidelineReport(records, verdicts, _conditions(device_t, batch_size, rounds))


def _record(
    experiment: Experiment, counts: dict[str, Any], timing: Timing, batch: int
) -> GuidelineRecord:
    row, col = experiment.row, experiment.column
    return GuidelineRecord(
        guideline=experiment.guideline,
        config=row.config,
        channels=list(experiment.channels),
        groups=row.groups,
        scale=experiment.scale,
        widths=experiment.widths,
        feature_map=experiment.feature_map,
        batch_size=batch,
        ms=timing.ms,
        batches_per_sec=1e3 / timing.ms,
        images_per_sec=batch * 1e3 / timing.ms,
        spread=timing.spread,
        stable=timing.stable,
        timing_note=timing.note,
        paper_gpu=row.gpu[col],
        paper_arm=row.arm[col],
        **counts,
    )


def _conditions(device: torch.device, batch_size: int, rounds: int) -> dict[str, Any]:
    from lightnets.analysis.machine import cpu_name

    conditions = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "rounds": rounds,
        "dtype": "float32",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        conditions["load_average_1min"] = round(os.getloadavg()[0], 2)
    return conditions


def _grouped_experiments(
    experiments: Sequence[Experiment],
) -> dict[tuple[str, int], list[Experiment]]:
    groups: dict[tuple[str, int], list[Experiment]] = {}
    for e in experiments:
        groups.setdefault((e.guideline, e.scale), []).append(e)
    return groups


def _forward(
    model: nn.Module, e: Experiment, device: torch.device, batch: int
) -> Callable[[], torch.Tensor]:
    model = model.to(device)
    x = torch.randn((batch, *e.input_shape), generator=torch.Generator().manual_seed(0))
    x = x.to(device)

    def call() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return call
