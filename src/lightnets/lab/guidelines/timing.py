"""Timing runs: every configuration of a table timed in the same interleaved rounds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lightnets.errors import check_int

__all__ = ["Timing", "time_calls"]


@dataclass(frozen=True)
class Timing:
    """Median per-batch latency over interleaved rounds, its spread (IQR / median) and the
    timing helper's verdict on it (``stable``, and a one-line ``note`` when not)."""

    ms: float
    spread: float
    rounds: int
    stable: bool
    note: str = ""


def time_calls(
    calls: Sequence[Callable[[], Any]],
    device: torch.device | str,
    *,
    rounds: int = 5,
    min_seconds: float = 1.0,
) -> list[Timing]:
    """Time every call in interleaved rounds (every configuration once per round, so that load
    from other processes hits them all alike): the lab's one caller of the project's timing
    helper, :func:`lightnets.analysis.timing.measure_interleaved` (the sweep times its cells
    with it too)."""
    from lightnets.analysis.timing import measure_interleaved

    check_int("rounds", rounds, minimum=1)
    fns = {str(i): call for i, call in enumerate(calls)}
    measured = measure_interleaved(
        fns,
        warmup=1,
        min_iters=2 * rounds,
        min_seconds=min_seconds,
        rounds=rounds,
        max_seconds=2 * min_seconds + 1,
        device=device,
    )
    stats = [measured.stats[name] for name in fns]
    return [
        Timing(
            ms=s.median_ms,
            spread=s.iqr_ms / s.median_ms if s.median_ms > 0 else 0.0,
            rounds=s.rounds,
            stable=s.stable,
            note=s.note,
        )
        for s in stats
    ]
