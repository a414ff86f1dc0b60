"""Timing that knows when it is wrong: statistics on synthetic samples, busy-machine detection
through a patched /proc, interleaved rounds, and "of peak" capping. No timed assertions."""

from __future__ import annotations

import math

import pytest

from lightnets.analysis import machine
from lightnets.analysis.machine import CpuTimes, MachineLoad, machine_load, read_cpu_times
from lightnets.analysis.report import LayerRecord
from lightnets.analysis.roofline import (
    ABOVE_MEMORY_ROOF,
    ABOVE_PEAK,
    MachinePeak,
    _point,
    of_peak,
)
from lightnets.analysis.timing import (
    LatencyStats,
    assess,
    measure_interleaved,
    median_ci,
    summarize,
)
from lightnets.errors import InvalidArgumentError

QUIET = MachineLoad(cores=2, threads=1, others_cores=0.1, steal=0.0, load_average=0.5)


# -- statistics ---------------------------------------------------------------------------------
def test_summary_of_1_to_100_is_numpys_percentiles_and_the_order_statistic_ci():
    summary = summarize([float(v) for v in range(100, 0, -1)])  # order does not matter
    assert summary["median_ms"] == 50.5
    assert summary["p10_ms"] == pytest.approx(10.9)  # numpy.percentile(1..100, 10)
    assert summary["p25_ms"] == pytest.approx(25.75)
    assert summary["p75_ms"] == pytest.approx(75.25)
    assert summary["p90_ms"] == pytest.approx(90.1)
    assert summary["min_ms"] == 1.0 and summary["mean_ms"] == 50.5
    # n = 100: ranks 50 -+ 1.96 * 10 / 2 -> the 41st and 60th values.
    assert summary["ci_rel"] == pytest.approx((60 - 41) / 2 / 50.5)


def test_median_ci_needs_six_samples_and_narrows_with_more():
    assert median_ci([1.0] * 5) == (-math.inf, math.inf)
    wide = summarize([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])["ci_rel"]
    narrow = summarize([1.0] * 50 + [5.0] * 500 + [9.0] * 50)["ci_rel"]
    assert wide > 0.5 and narrow == 0.0  # most calls took exactly 5: the median is pinned
    with pytest.raises(InvalidArgumentError):
        summarize([])


def test_iqr_is_reported_beside_the_median():
    stats = LatencyStats(
        **summarize([10.0, 11.0, 12.0, 13.0, 14.0]), iters=5, stable=True, note="x"
    )
    assert stats.iqr_ms == pytest.approx(13.0 - 11.0)
    data = stats.to_dict()
    assert {"median_ms", "p10_ms", "p90_ms", "iqr_ms", "ci_rel", "stable", "note"} <= set(data)


def test_assess_names_every_reason_in_one_line():
    tight = summarize([10.0 + 0.01 * (i % 7) for i in range(200)])
    stable, note = assess(tight, QUIET, target_ci=0.03)
    assert stable and note.startswith("stable") and "\n" not in note

    skewed = summarize([10.0] * 50 + [30.0] * 50)
    stable, note = assess(skewed, QUIET, target_ci=0.03)
    assert not stable and "wide spread: p90 is 3.0x p10" in note

    few = summarize([10.0, 10.5, 11.0])
    stable, note = assess(few, QUIET, target_ci=0.03)
    assert not stable and "too few calls" in note

    busy = MachineLoad(cores=2, threads=2, others_cores=1.6, steal=0.2, processes=("make",))
    stable, note = assess(tight, busy, target_ci=0.03)
    assert not stable and "\n" not in note
    assert "other processes (make) used 1.6 of 2 cores" in note and "stole 20%" in note


# -- the machine --------------------------------------------------------------------------------
def fake_proc(monkeypatch, stat_lines: list[str], own_ticks: list[int], loadavg: str = "0.3"):
    """Successive readings of /proc/stat and /proc/self/stat, one per call."""
    stats, owns = iter(stat_lines), iter(own_ticks)

    def read(path: str) -> str | None:
        if path == "/proc/stat":
            return f"{next(stats)}\ncpu0 0 0 0 0\n"
        if path == "/proc/self/stat":
            utime = next(owns)
            return f"42 (python (x)) R 1 1 1 0 -1 0 0 0 0 0 {utime} 0 0 0 20 0 1"
        if path == "/proc/loadavg":
            return f"{loadavg} 0.2 0.1 1/100 42"
        return None

    monkeypatch.setattr(machine, "read_proc", read)
    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    monkeypatch.setattr(machine, "running_processes", lambda limit=3: ["make x2"])


def test_cpu_counters_are_read_from_proc(monkeypatch):
    #              user nice system idle iowait irq softirq steal guest
    fake_proc(monkeypatch, ["cpu  100 0 50 800 20 0 0 30 7"], [60])
    times = read_cpu_times()
    assert times == CpuTimes(busy=180.0, steal=30.0, own=60.0, total=1000.0)


def test_other_processes_on_our_cores_make_the_machine_busy(monkeypatch):
    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    # 200 ticks elapsed on 2 cores; we used 20, others 150: 1.5 cores' worth.
    delta = CpuTimes(busy=170.0, steal=0.0, own=20.0, total=200.0)
    one = machine_load(delta, threads=1)
    assert one.others_cores == pytest.approx(1.5)
    assert one.busy  # one core is free for them, not 1.5
    assert not machine_load(CpuTimes(busy=110.0, own=20.0, total=200.0), threads=1).busy
    assert machine_load(CpuTimes(busy=60.0, own=20.0, total=200.0), threads=2).busy
    stolen = machine_load(CpuTimes(busy=40.0, steal=20.0, own=20.0, total=200.0), threads=1)
    assert stolen.busy and stolen.reasons() == ["the hypervisor stole 10% of CPU time"]
    # Without counters, the load average decides.
    assert machine_load(None, threads=1, load_avg=3.0).busy
    assert not machine_load(None, threads=1, load_avg=1.0).busy


@pytest.mark.parametrize(
    ("others_ticks", "steal_ticks", "free"),
    [
        (130, 0, 0),  # others used 1.3 of 2 cores: floor(2 - 1.3 + 0.25) = 0 whole cores free
        (50, 0, 1),  # 0.5 cores: floor(1.75) = 1
        (10, 0, 2),  # 0.1 cores: floor(2.15) = 2
        (10, 40, 1),  # 0.1 cores and 0.4 stolen by the hypervisor: floor(1.75) = 1
    ],
)
def test_free_cores_counts_what_others_leave_over_the_interval(
    monkeypatch, others_ticks, steal_ticks, free
):
    # 200 ticks elapse on 2 cores; this process uses 20 of them, which do not count against it.
    busy = others_ticks + steal_ticks + 20
    fake_proc(
        monkeypatch,
        [
            "cpu  1000 0 0 5000 0 0 0 0",
            f"cpu  {1000 + busy - steal_ticks} 0 0 {5000 + 200 - busy} 0 0 0 {steal_ticks}",
        ],
        [100, 120],
    )
    assert machine.free_cores(seconds=0) == free


def test_free_cores_without_proc_falls_back_to_the_load_average(monkeypatch):
    monkeypatch.setattr(machine, "read_proc", lambda path: None)
    monkeypatch.setattr(machine, "usable_cores", lambda: 4)
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (2.5, 0.0, 0.0), raising=False)
    assert machine.free_cores(seconds=0) == 1  # floor(4 - 2.5 + 0.25)
    monkeypatch.setattr(machine, "load_average", lambda: None)
    assert machine.free_cores(seconds=0) == 4  # nothing known: every usable core
    with pytest.raises(InvalidArgumentError, match="seconds"):
        machine.free_cores(seconds=-1)


def test_busy_rounds_are_set_aside_and_measured_again(monkeypatch):
    # Round k reads /proc twice; the first two rounds are busy (others use 1.8 cores).
    lines, owns, busy_ticks, idle_ticks = [], [], 0, 0
    for busy in (True, True, False, False, False, False, False, False):
        others = 90 if busy else 5  # of 100 ticks on 2 cores: 1.8 or 0.1 cores
        lines.append(f"cpu  {busy_ticks} 0 0 {idle_ticks} 0 0 0 0")
        busy_ticks, idle_ticks = busy_ticks + others, idle_ticks + 100 - others
        lines.append(f"cpu  {busy_ticks} 0 0 {idle_ticks} 0 0 0 0")
        owns += [0, 0]
    fake_proc(monkeypatch, lines, owns)
    calls = []
    result = measure_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        warmup=1,
        min_iters=3,
        min_seconds=0.0,
        rounds=3,
        target_ci=None,
        max_seconds=60.0,
    )
    assert result.busy_rounds_set_aside == 2
    assert not result.load.busy and result.load.others_cores < 0.25
    # (Whether the calls' own spread is stable depends on real timings: not asserted.)
    assert all("machine busy" not in s.note for s in result.stats.values())
    assert all(s.iters == 3 and s.rounds == 3 for s in result.stats.values())
    # Warm-up, then per round one untimed call and one timed call each, order rotating.
    assert calls[:2] == ["a", "b"]
    rounds = [calls[2 + 4 * k : 6 + 4 * k] for k in range(5)]
    assert rounds == [["a", "a", "b", "b"], ["b", "b", "a", "a"]] * 2 + [["a", "a", "b", "b"]]


def test_a_machine_busy_to_the_end_gives_an_unstable_result_that_says_why(monkeypatch):
    lines, owns, total = [], [], 0
    for _ in range(50):
        lines.append(f"cpu  {total} 0 0 0 0 0 0 0")
        total += 100
        lines.append(f"cpu  {total} 0 0 0 0 0 0 0")
        owns += [0, 0]
    fake_proc(monkeypatch, lines, owns, loadavg="7.5")
    result = measure_interleaved(
        {"only": lambda: None}, warmup=0, min_iters=4, min_seconds=0.0, rounds=4, max_seconds=0.0
    )
    stats = result.stats["only"]
    assert not result.stable and not stats.stable and stats.iters == 4
    assert "other processes (make x2) used 2.0 of 2 cores" in stats.note
    assert "load average 7.5" in stats.note
    assert result.note == stats.note


@pytest.mark.parametrize(
    "kwargs",
    [{"target_ci": 0}, {"rounds": 0}, {"max_seconds": -1.0}, {"max_iters": 1, "min_iters": 2}],
)
def test_measure_interleaved_refuses_bad_arguments(kwargs):
    with pytest.raises(InvalidArgumentError):
        measure_interleaved({"x": lambda: None}, **kwargs)
    with pytest.raises(InvalidArgumentError, match="nothing to time"):
        measure_interleaved({})


# -- of peak, of roof ---------------------------------------------------------------------------
def test_of_peak_is_capped_and_flagged():
    assert of_peak(50.0, 100.0) == (0.5, "")
    fraction, flag = of_peak(165.7, 100.0)
    assert fraction == 1.0 and "166% of peak" in flag and "measurement error" in flag
    assert of_peak(None, 100.0) == (None, "") and of_peak(10.0, None) == (None, "")


PEAK = MachinePeak("cpu", gflops=100.0, bandwidth_gb_s=10.0, threads=1, method="fixed")


@pytest.mark.parametrize(
    ("intensity", "gflops", "bound", "fraction", "flag"),
    [
        (2.0, 10.0, "memory", 0.5, ""),  # roof 20 GFLOP/s
        (2.0, 40.0, "memory", 1.0, ABOVE_MEMORY_ROOF),  # cache: above the sloped roof
        (50.0, 80.0, "compute", 0.8, ""),
        (50.0, 120.0, "compute", 1.0, ABOVE_PEAK),  # above the flat roof: an error
        (9.99, 50.0, "memory", 50.0 / 99.9, ""),
        (10.0, 50.0, "compute", 0.5, ""),  # the ridge point itself is compute-bound
    ],
)
def test_points_are_bound_by_the_ridge_and_never_above_their_roof(
    intensity, gflops, bound, fraction, flag
):
    memory = 1_000_000
    row = LayerRecord(0, "m", "Conv2d", "aten.convolution.default", "pointwise_conv", (), ())
    row.macs = int(intensity * memory / 2)
    row.memory_access = memory
    median = row.flops / gflops / 1e6
    stats = LatencyStats(median_ms=median, p90_ms=median, mean_ms=median, iters=5)
    point = _point(row, stats, PEAK)
    assert point.bound == bound == PEAK.bound(row.intensity)
    assert point.fraction == pytest.approx(fraction) and point.fraction <= 1.0
    assert point.flag == flag


def test_bench_share_of_peak_is_capped_and_empty_for_reduced_precision():
    from lightnets.deploy.bench import BenchRecord, _fill_timing

    stats = LatencyStats(median_ms=10.0, p90_ms=11.0, mean_ms=10.2, iters=20, p10_ms=9.8)
    fast = BenchRecord("m", "onnxruntime", 1, "fp32", "ok")
    _fill_timing(fast, stats, flops=2e9, peak=100.0)  # 200 GFLOP/s "achieved" on a 100 peak
    assert fast.peak_fraction == 1.0 and "measurement error" in fast.note
    assert fast.as_dict()["stable"] is True and fast.as_dict()["latency_ms_p10"] == 9.8
    for precision in ("bf16", "int8"):
        low = BenchRecord("m", "x", 1, precision, "ok")
        _fill_timing(low, stats, flops=2e9, peak=100.0)
        assert low.gflops_per_sec == pytest.approx(200.0) and low.peak_fraction is None
    shaky = BenchRecord("m", "eager", 1, "fp32", "ok")
    unstable = LatencyStats(10.0, 30.0, 15.0, 20, stable=False, note="machine busy: x")
    _fill_timing(shaky, unstable, flops=1e8, peak=100.0)
    assert shaky.peak_fraction == pytest.approx(0.1) and "NOT STABLE: machine busy" in shaky.note
