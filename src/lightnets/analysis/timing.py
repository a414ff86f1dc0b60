"""Wall-clock latency of a callable, measured the way benchmarks should be.

Warm-up calls first (allocator, oneDNN/cuDNN kernel selection), then timed calls until both a
minimum count and a minimum duration are reached; the median is the figure to report, the
90th percentile shows the jitter. On CUDA (and other asynchronous devices) the device is
synchronised before reading the clock, so the time covers the work and not only its launch.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lightnets.errors import InvalidArgumentError

__all__ = ["LatencyStats", "cpu_name", "measure_latency", "torch_threads"]


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one call, in milliseconds, over ``iters`` timed calls."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    iters: int
    min_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    min_iters: int = 10,
    min_seconds: float = 1.0,
    max_iters: int = 100_000,
    device: torch.device | str | None = None,
) -> LatencyStats:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``min_iters`` timed calls lasting
    ``min_seconds`` in total (capped at ``max_iters``).

    Args:
        fn: the work to time, called with no arguments.
        device: where ``fn`` runs; on CUDA the device is synchronised around every call.

    Returns:
        :class:`LatencyStats` with the median, 90th percentile, mean and minimum in ms.
    """
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise InvalidArgumentError(f"warmup must be an integer >= 0, got {warmup!r}")
    if isinstance(min_iters, bool) or not isinstance(min_iters, int) or min_iters < 1:
        raise InvalidArgumentError(f"min_iters must be an integer >= 1, got {min_iters!r}")
    if not isinstance(max_iters, int) or max_iters < min_iters:
        raise InvalidArgumentError(f"max_iters must be an integer >= min_iters, got {max_iters!r}")
    if not min_seconds >= 0:
        raise InvalidArgumentError(f"min_seconds must be >= 0, got {min_seconds!r}")
    sync = _synchronizer(device)
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_iters and (
        len(times) < min_iters or time.perf_counter() - started < min_seconds
    ):
        begin = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - begin) * 1e3)
    ordered = sorted(times)
    return LatencyStats(
        median_ms=statistics.median(ordered),
        p90_ms=_percentile(ordered, 0.9),
        mean_ms=statistics.fmean(ordered),
        iters=len(ordered),
        min_ms=ordered[0],
    )


def validate_threads(threads: int | None) -> None:
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise InvalidArgumentError(f"threads must be an integer >= 1, got {threads!r}")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)`` (``None``: leave it), then restore.

    On a machine shared with other jobs, one thread per measurement avoids the long stalls of
    OpenMP worker threads waiting for a core, which multiply batch-1 latencies.
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


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), for labelling measurements."""
    import os
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine() or 'cpu'}, {os.cpu_count()} cores"
