"""The machine while we measure: its cores, who else uses them, and whether it is busy.

Read from Linux's ``/proc`` (``/proc/stat`` for CPU time counters of all cores, the
``/proc/self/stat`` of this process for its own, ``/proc/loadavg``, ``/proc/<pid>/stat`` for
who is running); elsewhere the readings are ``None`` and the verdicts fall back to the load
average. :func:`free_cores` says how many cores other processes leave free right now;
:mod:`lightnets.analysis.timing` uses :func:`machine_load` to set aside the rounds of a
measurement during which other processes competed for our cores.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, astuple, dataclass
from typing import Any

from lightnets.errors import check_float

__all__ = [
    "BUSY_SLACK_CORES",
    "BUSY_STEAL",
    "CpuTimes",
    "MachineLoad",
    "cpu_flags",
    "cpu_name",
    "free_cores",
    "has_int8_dot_product",
    "int8_pairs_saturate",
    "load_average",
    "machine_load",
    "physical_cores",
    "read_cpu_times",
    "read_proc",
    "running_processes",
    "usable_cores",
]

#: Other processes may use this many cores beyond those our threads leave free.
BUSY_SLACK_CORES = 0.25
#: Fraction of CPU time stolen by the hypervisor above which the machine counts as busy.
BUSY_STEAL = 0.05


def read_proc(path: str) -> str | None:
    """The text of a /proc file, or ``None`` where there is none (not Linux). Tests patch it."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


@dataclass(frozen=True)
class CpuTimes:
    """CPU time counters (clock ticks, all cores): busy, stolen, ours, and the total elapsed."""

    busy: float = 0.0
    steal: float = 0.0
    own: float = 0.0
    total: float = 0.0

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def read_cpu_times() -> CpuTimes | None:
    """This instant's counters from /proc/stat (the ``cpu`` line) and /proc/self/stat."""
    stat, own = read_proc("/proc/stat"), read_proc("/proc/self/stat")
    if not stat or not own:
        return None
    try:
        # user nice system idle iowait irq softirq steal (guest time is already in user).
        ticks = [float(v) for v in stat.splitlines()[0].split()[1:9]]
        ticks += [0.0] * (8 - len(ticks))
        # After the ")" that ends the command name: state is field 3; utime, stime 14 and 15.
        fields = own.rsplit(")", 1)[1].split()
        mine = float(fields[11]) + float(fields[12])
    except (IndexError, ValueError):
        return None
    total = sum(ticks)
    return CpuTimes(busy=total - ticks[3] - ticks[4], steal=ticks[7], own=mine, total=total)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores this process may run on: :func:`usable_cores` divided by the SMT
    siblings of a core (``/sys/devices/system/cpu/cpu0/topology/thread_siblings_list``, e.g.
    ``0,4`` or ``0-1``: two logical CPUs per core); where that cannot be read, every usable
    CPU counts as a core. Threads beyond the physical cores share a core's arithmetic units
    and mostly wait for one another."""
    text = (read_proc("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list") or "").strip()
    siblings = 0
    try:
        for part in filter(None, text.split(",")):
            low, _, high = part.partition("-")
            siblings += int(high) - int(low) + 1 if high else 1
    except ValueError:
        siblings = 0
    return max(1, usable_cores() // max(siblings, 1))


def load_average() -> float | None:
    """The one-minute load average (runnable and waiting tasks, ours included)."""
    text = read_proc("/proc/loadavg")
    try:
        return float(text.split()[0]) if text else os.getloadavg()[0]
    except (OSError, AttributeError, ValueError, IndexError):
        return None


def running_processes(limit: int = 3) -> list[str]:
    """Names of other processes running right now (state R), most frequent first."""
    counts: dict[str, int] = {}
    mine = os.getpid()
    for pid in filter(str.isdigit, _listdir("/proc")):
        text = read_proc(f"/proc/{pid}/stat")
        if not text or int(pid) == mine or ")" not in text:
            continue
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        if rest.split()[:1] == ["R"]:
            counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    return [f"{name} x{n}" if n > 1 else name for name, n in ranked]


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


@dataclass(frozen=True)
class MachineLoad:
    """How busy the machine was while we measured.

    ``others_cores``: cores' worth of CPU time used by other processes (``None`` when unknown);
    ``steal``: fraction of CPU time the hypervisor gave to other machines.
    """

    cores: int
    threads: int
    others_cores: float | None = None
    steal: float | None = None
    load_average: float | None = None
    processes: tuple[str, ...] = ()

    @property
    def busy(self) -> bool:
        return bool(self.reasons())

    @property
    def crowded(self) -> bool:
        """Other processes used more than the cores our threads leave free (plus a margin)."""
        free = max(0.0, self.cores - self.threads)
        return self.others_cores is not None and self.others_cores > free + BUSY_SLACK_CORES

    @property
    def stolen(self) -> bool:
        return self.steal is not None and self.steal > BUSY_STEAL

    def others_busy(self) -> bool:
        """Busy by the CPU counters alone (other processes on our cores, or steal)."""
        return self.crowded or self.stolen

    def reasons(self) -> list[str]:
        """Why the machine counts as busy (empty when it does not). The load average, which
        lags by a minute, decides only where the CPU counters are unknown."""
        reasons = []
        average = f", load average {self.load_average:.1f}" if self.load_average else ""
        who = f" ({', '.join(self.processes)})" if self.processes else ""
        if self.crowded:
            reasons.append(
                f"other processes{who} used {self.others_cores:.1f} of {self.cores} cores "
                f"while we ran {self.threads} thread{'s' if self.threads != 1 else ''}{average}"
            )
        elif self.others_cores is None and (self.load_average or 0) > self.cores + 0.5:
            reasons.append(f"load average {self.load_average:.1f} on {self.cores} cores{who}")
        if self.stolen:
            reasons.append(f"the hypervisor stole {100 * (self.steal or 0):.0f}% of CPU time")
        return reasons

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "processes": list(self.processes), "busy": self.busy}


def machine_load(
    delta: CpuTimes | None, threads: int, *, load_avg: float | None = None
) -> MachineLoad:
    """The load over an interval whose counters changed by ``delta`` (``None``: unknown)."""
    cores = usable_cores()
    if delta is None or delta.total <= 0:
        return MachineLoad(cores, threads, load_average=load_avg)
    others = max(0.0, delta.busy - delta.steal - delta.own) / delta.total * cores
    return MachineLoad(
        cores, threads, others_cores=others, steal=delta.steal / delta.total, load_average=load_avg
    )


def free_cores(seconds: float = 0.25) -> int:
    """Whole cores that other processes leave free right now: the cores this process may run
    on, less the CPU time others (and the hypervisor's steal) used over the next ``seconds``,
    rounded with the same :data:`BUSY_SLACK_CORES` margin the busy verdict allows.

    This process's own use does not count against it (a caller asking while it computes gets
    the cores it could have). Where ``/proc`` cannot be read, the one-minute load average
    (which counts this process too) stands in; with neither, every usable core counts as free.
    Between 0 and :func:`usable_cores`.
    """
    check_float("seconds", seconds, minimum=0.0)
    cores = usable_cores()
    before = read_cpu_times()
    time.sleep(seconds)
    after = read_cpu_times()
    if before is not None and after is not None and (after - before).total > 0:
        delta = after - before
        others = max(0.0, delta.busy - delta.own) / delta.total * cores
    else:
        average = load_average()
        if average is None:
            return cores
        others = average
    return max(0, min(cores, math.floor(cores - others + BUSY_SLACK_CORES)))


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), for labelling measurements."""
    import platform

    text = read_proc("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{platform.processor() or platform.machine() or 'cpu'}, {os.cpu_count()} cores"


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of the first processor in /proc/cpuinfo (empty elsewhere)."""
    for line in (read_proc("/proc/cpuinfo") or "").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


#: Flags of the int8 dot-product instructions (VNNI, AMX) that make int8 inference faster
#: than float32 on x86; without them int8 kernels widen to 16 bits and often lose.
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def has_int8_dot_product(flags: frozenset[str] | None = None) -> bool | None:
    """Whether the CPU has VNNI or AMX int8 instructions; ``None`` when the flags are unknown
    (not Linux, or not x86). Used to explain a speed measurement, never to replace one, and by
    :func:`int8_pairs_saturate`."""
    flags = cpu_flags() if flags is None else flags
    if not flags or not ({"avx", "avx2", "sse4_2"} & flags):
        return None
    return any(flag in flags for flag in INT8_DOT_PRODUCT_FLAGS)


def int8_pairs_saturate(flags: frozenset[str] | None = None) -> bool:
    """Whether uint8-activation x int8-weight kernels lose accuracy to 16-bit saturation here.

    On x86 without VNNI or AMX, ONNX Runtime's u8s8 kernels (and oneDNN's, under OpenVINO)
    multiply with ``VPMADDUBSW``, which adds two u8 x s8 products into a saturating int16:
    255 x 127 x 2 = 64,770 does not fit in 32,767. ONNX Runtime's quantization guide names the
    symptom and the cure, 7-bit weights (``reduce_range``): 255 x 64 x 2 = 32,640 fits. VNNI's
    ``VPDPBUSD`` and AMX accumulate in int32, and Arm's dot products widen, so neither
    saturates. Measured on a Zen 3 (AVX2, no VNNI): ShuffleNet V1 g=3 lost 0.44 top-1 point in
    ONNX Runtime with 8-bit per-channel weights and none with 7-bit ones (docs/deploy.md).
    False where the flags are unknown (not x86, or not Linux).
    """
    return has_int8_dot_product(flags) is False
