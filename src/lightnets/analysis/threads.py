"""One thread policy for every command that computes: how many threads, and why.

The default is the cores other processes leave free when the command starts
(:func:`lightnets.analysis.machine.free_cores`: the CPU time counters of ``/proc/stat``, less
this process's own, over a quarter of a second), never more than the physical cores and never
fewer than one; ``OMP_NUM_THREADS`` set to a count is taken as the user's explicit choice, and
``--threads N`` overrides both. A thread pool larger than the cores it actually
gets is not a little slower but many times slower: each parallel region waits for its slowest
thread, and a thread that lost its core to another process makes every region wait a whole
scheduler slice (measured in issue 22: batch-1 latencies 5-10x those of one thread, training
10x slower).

:func:`choose_threads` decides (pure, given the readings); :func:`apply_thread_policy` decides
(once per process, or again a minute later in a long-lived one: :data:`CHOICE_SECONDS`), prints
the one line that says what it chose and why, sets torch's thread count, and remembers the
choice (:func:`default_threads`) for the runtimes that take a thread count of their own (ONNX
Runtime, OpenVINO, LiteRT). :func:`thread_record` is what JSON
outputs and training metrics record.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from lightnets.analysis import machine
from lightnets.errors import InvalidArgumentError, check_threads

__all__ = [
    "CHOICE_SECONDS",
    "SAMPLE_SECONDS",
    "SLOWDOWN_WARNING",
    "ThreadChoice",
    "apply_thread_policy",
    "choose_threads",
    "default_threads",
    "local_processes",
    "reset_thread_policy",
    "slowdown_warning",
    "thread_record",
]

#: How long the policy watches the machine before choosing (the CPU counters tick every 10 ms:
#: 25 ticks per core, enough to tell a busy core from an idle one, short enough to go unseen).
SAMPLE_SECONDS = 0.25


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a command runs with, and why.

    ``cores``: logical CPUs this process may use; ``physical``: physical cores among them;
    ``free``: cores free at start (``None`` when not measured: an explicit ``--threads``);
    ``requested``: the ``--threads`` value (``None``: the default policy); ``reason``: the
    words of the printed line.
    """

    threads: int
    cores: int
    physical: int
    free: int | None
    requested: int | None
    reason: str

    def line(self, option: str = "--threads") -> str:
        """The one line a command prints, e.g. ``threads: 1 of 2 (1 core busy at start;
        --threads to override)``."""
        override = "" if self.requested is not None else f"; {option} to override"
        return f"threads: {self.threads} of {self.cores} ({self.reason}{override})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cores(n: int) -> str:
    return f"{n} core{'s' if n != 1 else ''}"


def choose_threads(
    requested: int | None = None,
    *,
    limit: int | None = None,
    limit_reason: str = "",
    processes: int = 1,
    sample_seconds: float = SAMPLE_SECONDS,
    option: str = "--threads",
) -> ThreadChoice:
    """The policy's decision (reads /proc, prints nothing, changes nothing).

    Args:
        requested: ``--threads`` (checked by :func:`lightnets.errors.check_threads`); ``None``
            for the default: ``OMP_NUM_THREADS`` when set to a count, else the cores free at
            start, at most the physical cores, at least 1.
        limit: a command's own ceiling on the default (guidelines: 1, the paper's single-thread
            ARM timings), said in the line as ``limit_reason``.
        processes: processes of this run sharing the machine (torchrun's local world size):
            the free cores are divided among them.
        sample_seconds: how long to watch the machine (:func:`machine.free_cores`).
    """
    cores, physical = machine.usable_cores(), machine.physical_cores()
    if requested is not None:
        check_threads(option, requested)
        return ThreadChoice(requested, cores, physical, None, requested, f"{option} {requested}")
    from_environment = _omp_num_threads()
    if from_environment is not None:
        return ThreadChoice(
            from_environment, cores, physical, None, None, f"OMP_NUM_THREADS={from_environment}"
        )
    free = machine.free_cores(sample_seconds)
    busy = cores - free
    threads = max(1, min(free, physical) // max(processes, 1))
    if busy == 0:
        reason = f"all {_cores(cores)} free at start" if cores > 1 else "1 core, free at start"
    elif free == 0:
        reason = f"every core busy at start: {threads} thread at least"
    else:
        reason = f"{_cores(busy)} busy at start"
    if physical < min(free, cores):
        reason += f", {physical} physical"
    if processes > 1:
        reason += f", split among {processes} local ranks"
    if limit is not None and threads > limit:
        threads, reason = limit, limit_reason or f"at most {limit}"
    return ThreadChoice(threads, cores, physical, free, None, reason)


def _omp_num_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is one whole number in 1..logical CPUs: a user's (or a
    test suite's) explicit setting, which the default respects; anything else is ignored."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not text.isdigit():
        return None
    try:
        return check_threads("OMP_NUM_THREADS", int(text))
    except InvalidArgumentError:
        return None


#: How long a measured choice stands for later calls of one process (a sweep's next cell, the
#: next command of a notebook or of a test session); after that the machine is watched again,
#: since other work may have started or ended meanwhile. Explicit choices never expire.
CHOICE_SECONDS = 60.0

#: The choice in force: its arguments -> (the choice, when it was measured: time.monotonic()).
_chosen: dict[tuple[Any, ...], tuple[ThreadChoice, float]] = {}


def apply_thread_policy(
    requested: int | None = None,
    *,
    limit: int | None = None,
    limit_reason: str = "",
    processes: int = 1,
    announce: Callable[[str], None] | None = None,
    option: str = "--threads",
) -> ThreadChoice:
    """Choose, print the line, set torch's count.

    The line goes to ``announce`` (default: stderr, so that ``--json`` on stdout stays clean).
    A later call with the same arguments within :data:`CHOICE_SECONDS` of the measurement (a
    sweep's next cell) reuses the choice silently; later, a default choice is measured again,
    and its line printed again if it changed.
    """
    key = (requested, limit, processes)
    now = time.monotonic()
    previous = _chosen.get(key)
    if previous is not None and (previous[0].free is None or now - previous[1] < CHOICE_SECONDS):
        choice = previous[0]
    else:
        choice = choose_threads(
            requested, limit=limit, limit_reason=limit_reason, processes=processes, option=option
        )
        _chosen.clear()
        _chosen[key] = (choice, now)
        if previous is None or choice.threads != previous[0].threads:
            (announce or _to_stderr)(choice.line(option))
    import torch

    torch.set_num_threads(choice.threads)
    return choice


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def default_threads() -> int:
    """The thread count chosen in this process (:func:`apply_thread_policy`), else the
    physical cores: the default of every runtime that takes its own count."""
    for choice, _ in _chosen.values():
        return choice.threads
    return machine.physical_cores()


def reset_thread_policy() -> None:
    """Forget the choice (a caller that starts a new, separate measurement; tests)."""
    _chosen.clear()


def thread_record(choice: ThreadChoice) -> dict[str, Any]:
    """What JSON outputs and metrics record: the count, the cores, and the reason."""
    return {"threads": choice.threads, "cores": choice.cores, "reason": choice.line()}


def local_processes() -> int:
    """Processes of this run on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 alone)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


#: An epoch this much slower than the fastest one before it, on a machine that became busy,
#: is worth a warning (epoch to epoch, training speed on a quiet machine varies by a few %).
SLOWDOWN_WARNING = 0.8


def slowdown_warning(
    epoch: int, rate: float, best: tuple[int, float] | None, load: machine.MachineLoad
) -> str | None:
    """The one-line warning of a training run whose machine became busy, or ``None``.

    ``rate``: images/s of epoch ``epoch``; ``best``: (epoch, images/s) of the fastest earlier
    epoch of this process; ``load``: the machine over epoch ``epoch``
    (:func:`machine.machine_load` with this run's threads). Warns only when both hold: other
    processes took cores our threads needed (or the hypervisor stole time), and the epoch ran
    below :data:`SLOWDOWN_WARNING` of the best one.
    """
    if best is None or best[1] <= 0 or not load.others_busy():
        return None
    ratio = rate / best[1]
    if ratio >= SLOWDOWN_WARNING:
        return None
    advice = ""
    if load.others_cores is not None:
        left = math.floor(load.cores - load.others_cores + machine.BUSY_SLACK_CORES)
        if 1 <= left < load.threads:
            advice = f"; --threads {left} would fit the cores left (resume with it)"
    return (
        f"warning: the machine became busy during epoch {epoch} ({'; '.join(load.reasons())}): "
        f"{rate:.0f} img/s, {ratio:.2f}x epoch {best[0]}'s {best[1]:.0f}{advice}"
    )
