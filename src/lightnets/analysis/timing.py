"""Wall-clock latency that knows when it is wrong: rounds, medians, confidence intervals, verdicts.

Measured the way pyperf, pytest-benchmark and timm's benchmark script measure:

1. **Warm-up** calls first (allocator, oneDNN/cuDNN kernel selection), untimed.
2. **Interleaved rounds**: when several things are compared, each round times every one of them
   in turn (the order rotating from round to round), so a slow minute of the machine hits all of
   them alike instead of whichever happened to run then.
3. **Enough calls**: rounds continue until every candidate has ``min_iters`` calls over
   ``min_seconds`` *and* the 95% confidence interval of its median is within ``target_ci``
   (relative), or until the time budget (``max_seconds`` per candidate) is spent.
4. **The machine is watched** (:mod:`lightnets.analysis.machine`): before and after every round,
   ``/proc/stat`` tells how much CPU time other processes used, and how much the hypervisor
   stole. A round during which other processes competed for the cores we use is set aside and
   measured again, within the budget.
5. **The spread is reported** beside the median (p10/p90 and the interquartile range), and the
   result says in one line whether it can be trusted: :attr:`LatencyStats.stable` and
   :attr:`LatencyStats.note`.

On CUDA (and other asynchronous devices) the device is synchronised before reading the clock,
so the time covers the work and not only its launch.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from lightnets.analysis import machine
from lightnets.analysis.machine import CpuTimes, MachineLoad
from lightnets.errors import InvalidArgumentError, check_float, check_int, check_threads

__all__ = [
    "LatencyStats",
    "Measurement",
    "assess",
    "measure_interleaved",
    "measure_latency",
    "median_ci",
    "summarize",
    "torch_threads",
    "validate_threads",
]

#: Default relative half-width of the 95% confidence interval of the median to reach.
TARGET_CI = 0.03
#: p90 / p10 above this is a spread too wide to trust the median alone.
WIDE_SPREAD = 1.5


# -- statistics on a list of samples --------------------------------------------------------------
def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def median_ci(sorted_values: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95% confidence interval of the median: the order statistics at ranks
    ``n/2 -+ z sqrt(n)/2`` (the normal approximation of the binomial). Needs no assumption about
    the shape of the latency distribution, which is skewed. ``(-inf, inf)`` below 6 samples."""
    n = len(sorted_values)
    if n < 6:
        return -math.inf, math.inf
    half = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half))
    high = min(n - 1, math.ceil(n / 2 + half) - 1)
    return sorted_values[low], sorted_values[high]


def summarize(samples_ms: list[float]) -> dict[str, float]:
    """Median, spread and the relative confidence interval of the median of ``samples_ms``."""
    if not samples_ms:
        raise InvalidArgumentError("no samples to summarize")
    ordered = sorted(samples_ms)
    median = statistics.median(ordered)
    low, high = median_ci(ordered)
    return {
        "median_ms": median,
        "p10_ms": _percentile(ordered, 0.1),
        "p25_ms": _percentile(ordered, 0.25),
        "p75_ms": _percentile(ordered, 0.75),
        "p90_ms": _percentile(ordered, 0.9),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "ci_rel": (high - low) / 2 / median if median > 0 else math.inf,
    }


# -- the result ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyStats:
    """Latency of one call, in milliseconds, over ``iters`` timed calls in ``rounds`` rounds.

    ``ci_rel`` is the relative half-width of the 95% confidence interval of the median;
    ``stable`` says whether the median can be trusted, and ``note`` says why in one line.
    """

    median_ms: float
    p90_ms: float
    mean_ms: float
    iters: int
    min_ms: float = 0.0
    p10_ms: float = 0.0
    p25_ms: float = 0.0
    p75_ms: float = 0.0
    ci_rel: float = math.inf
    rounds: int = 1
    stable: bool = True
    note: str = ""

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "iqr_ms": self.iqr_ms}


def assess(
    summary: Mapping[str, float], load: MachineLoad, target_ci: float | None
) -> tuple[bool, str]:
    """``(stable, note)`` for a summary (:func:`summarize`) measured under ``load``."""
    problems = [f"machine busy: {reason}" for reason in load.reasons()]
    ci = summary["ci_rel"]
    if target_ci is not None and not ci <= target_ci:
        shown = f"±{100 * ci:.1f}%" if math.isfinite(ci) else "unknown (too few calls)"
        problems.append(f"median known only to {shown} (target ±{100 * target_ci:.1f}%)")
    spread = summary["p90_ms"] / summary["p10_ms"] if summary["p10_ms"] > 0 else math.inf
    if spread > WIDE_SPREAD:
        problems.append(f"wide spread: p90 is {spread:.1f}x p10")
    if problems:
        return False, "; ".join(problems)
    shown = f"±{100 * ci:.1f}%" if math.isfinite(ci) else "n/a"
    return True, f"stable: median ±{shown.lstrip('±')} (95% CI), p90/p10 {spread:.2f}"


@dataclass
class Measurement:
    """The result of :func:`measure_interleaved`: one :class:`LatencyStats` per candidate."""

    stats: dict[str, LatencyStats]
    load: MachineLoad
    busy_rounds_set_aside: int = 0
    seconds: float = 0.0

    @property
    def stable(self) -> bool:
        return all(s.stable for s in self.stats.values())

    @property
    def note(self) -> str:
        """One line for the whole measurement: the first problem, or that all is stable."""
        if self.stable:
            worst = max((s.ci_rel for s in self.stats.values()), default=0.0)
            return (
                f"stable: every median within ±{100 * worst:.1f}% (95% CI), "
                f"{self.busy_rounds_set_aside} busy round(s) set aside and re-measured"
            )
        unstable = [s for s in self.stats.values() if not s.stable]
        if len(self.stats) == 1:
            return unstable[0].note
        return f"{unstable[0].note} ({len(unstable)} of {len(self.stats)} unstable)"


# -- the measurement ----------------------------------------------------------------------------
def _synchronizer(device: torch.device | str | None) -> Callable[[], None]:
    if device is None:
        return lambda: None
    device = torch.device(device)
    if device.type == "cpu":
        return lambda: None
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    backend = getattr(torch, device.type, None)
    sync = getattr(backend, "synchronize", None)
    return sync if callable(sync) else (lambda: None)


@dataclass(frozen=True)
class _Plan:
    warmup: int
    min_iters: int
    min_seconds: float
    max_iters: int
    rounds: int
    target_ci: float | None
    max_seconds: float

    @property
    def round_seconds(self) -> float:
        return self.min_seconds / self.rounds


def _plan(**kwargs: Any) -> _Plan:
    check_int("warmup", kwargs["warmup"], minimum=0)
    check_int("min_iters", kwargs["min_iters"], minimum=1)
    check_int("max_iters", kwargs["max_iters"], minimum=kwargs["min_iters"])
    check_int("rounds", kwargs["rounds"], minimum=1)
    check_float("min_seconds", kwargs["min_seconds"], minimum=0.0)
    if kwargs["target_ci"] is not None:
        check_float("target_ci", kwargs["target_ci"], minimum=0.0, exclusive_minimum=True)
    if kwargs["max_seconds"] is None:
        kwargs["max_seconds"] = 3 * kwargs["min_seconds"] + 1.0
    check_float("max_seconds", kwargs["max_seconds"], minimum=0.0)
    return _Plan(**kwargs)


def _time_round(fn: Callable[[], Any], sync: Callable[[], None], seconds: float, cap: int) -> list:
    """Per-call latencies (ms) of ``fn`` for at least one call and ``seconds`` (at most ``cap``)."""
    times: list[float] = []
    started = time.perf_counter()
    while not times or (time.perf_counter() - started < seconds and len(times) < cap):
        begin = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - begin) * 1e3)
    return times


class _Rounds:
    """Samples per candidate, kept apart by whether the machine was quiet during the round."""

    def __init__(self, names: list[str]) -> None:
        self.quiet: dict[str, list[float]] = {name: [] for name in names}
        self.every: dict[str, list[float]] = {name: [] for name in names}
        self.quiet_rounds = self.all_rounds = 0
        self.quiet_delta = self.every_delta = CpuTimes()
        self.unknown_load = False

    def add(self, times: dict[str, list[float]], delta: CpuTimes | None, threads: int) -> None:
        self.all_rounds += 1
        if delta is None:
            self.unknown_load = True
            delta = CpuTimes()
        self.every_delta = self.every_delta + delta
        for name, values in times.items():
            self.every[name] += values
        if delta.total > 0 and machine.machine_load(delta, threads).others_busy():
            return
        self.quiet_rounds += 1
        self.quiet_delta = self.quiet_delta + delta
        for name, values in times.items():
            self.quiet[name] += values

    def enough(self, plan: _Plan, samples: dict[str, list[float]], rounds: int) -> bool:
        """At least ``plan.rounds`` rounds (so ``min_seconds`` per candidate) and ``min_iters``."""
        return rounds >= plan.rounds and all(len(v) >= plan.min_iters for v in samples.values())

    def precise(self, plan: _Plan) -> bool:
        if plan.target_ci is None:
            return True
        return all(summarize(v)["ci_rel"] <= plan.target_ci for v in self.quiet.values())

    def finished(self, plan: _Plan, elapsed: float) -> bool:
        if any(len(v) >= plan.max_iters for v in self.every.values()):
            return True
        if self.enough(plan, self.quiet, self.quiet_rounds) and self.precise(plan):
            return True
        budget = plan.max_seconds * len(self.every)
        return elapsed >= budget and self.enough(plan, self.every, self.all_rounds)

    def result(self, plan: _Plan, threads: int, elapsed: float) -> Measurement:
        """Statistics of the quiet rounds when there are enough of them, else of every round."""
        use_quiet = self.enough(plan, self.quiet, self.quiet_rounds)
        samples = self.quiet if use_quiet else self.every
        delta = None if self.unknown_load else (self.quiet_delta if use_quiet else self.every_delta)
        rounds = self.quiet_rounds if use_quiet else self.all_rounds
        load = machine.machine_load(delta, threads, load_avg=machine.load_average())
        if load.busy:
            load = replace(load, processes=tuple(machine.running_processes()))
        stats = {}
        for name, values in samples.items():
            summary = summarize(values)
            stable, note = assess(summary, load, plan.target_ci)
            stats[name] = LatencyStats(
                **summary, iters=len(values), rounds=rounds, stable=stable, note=note
            )
        return Measurement(
            stats=stats,
            load=load,
            busy_rounds_set_aside=self.all_rounds - self.quiet_rounds if use_quiet else 0,
            seconds=elapsed,
        )


def measure_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 3,
    min_iters: int = 10,
    min_seconds: float = 1.0,
    max_iters: int = 100_000,
    rounds: int = 5,
    target_ci: float | None = TARGET_CI,
    max_seconds: float | None = None,
    device: torch.device | str | None = None,
) -> Measurement:
    """Time several callables in interleaved rounds until their medians are known (see the
    module's docstring).

    Args:
        fns: name -> the work to time, called with no arguments.
        warmup: untimed calls of each before the first round.
        min_iters, min_seconds: at least this many calls and this long for each candidate,
            spread over at least ``rounds`` rounds.
        target_ci: relative half-width of the 95% confidence interval of every median to reach
            (``None``: stop as soon as the minimums are met on a quiet machine).
        max_seconds: the budget per candidate: rounds that found the machine busy, or medians
            still too imprecise, are measured again until it is spent (default
            ``3 x min_seconds + 1``).
        device: where the work runs; on CUDA the device is synchronised around every call.
    """
    plan = _plan(
        warmup=warmup,
        min_iters=min_iters,
        min_seconds=min_seconds,
        max_iters=max_iters,
        rounds=rounds,
        target_ci=target_ci,
        max_seconds=max_seconds,
    )
    names = list(fns)
    if not names:
        raise InvalidArgumentError("nothing to time")
    sync = _synchronizer(device)
    threads = torch.get_num_threads()
    for name in names:
        for _ in range(plan.warmup):
            fns[name]()
    sync()
    record = _Rounds(names)
    started = time.perf_counter()
    while not record.finished(plan, time.perf_counter() - started):
        shift = record.all_rounds % len(names)
        before, times = machine.read_cpu_times(), {}
        for name in names[shift:] + names[:shift]:
            if len(names) > 1:  # the others ran since: refill the caches, untimed
                fns[name]()
                sync()
            times[name] = _time_round(fns[name], sync, plan.round_seconds, plan.max_iters)
        after = machine.read_cpu_times()
        record.add(times, after - before if before and after else None, threads)
    return record.result(plan, threads, time.perf_counter() - started)


def measure_latency(fn: Callable[[], Any], **options: Any) -> LatencyStats:
    """Time ``fn()`` alone: :func:`measure_interleaved` with one candidate and the same keyword
    options (``warmup``, ``min_iters``, ``min_seconds``, ``max_iters``, ``rounds``,
    ``target_ci``, ``max_seconds``, ``device``).

    Returns:
        :class:`LatencyStats`: the median, its confidence interval, p10/p25/p75/p90, mean and
        minimum in ms, and whether the measurement is ``stable`` (with a one-line ``note``).
    """
    return measure_interleaved({"fn": fn}, **options).stats["fn"]


def validate_threads(threads: int | None, name: str = "threads") -> None:
    """``None`` (leave torch's count) or a count in 1..logical CPUs (:func:`check_threads`)."""
    if threads is not None:
        check_threads(name, threads)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)`` (``None``: leave it), then restore.

    The one place lightnets sets PyTorch's intra-op thread count for a measurement. On a machine
    shared with other jobs, one thread per measurement avoids the long stalls of OpenMP worker
    threads waiting for a core, which multiply batch-1 latencies.
    """
    before = torch.get_num_threads()
    if threads is None:
        yield before
        return
    validate_threads(threads)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
