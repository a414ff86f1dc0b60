"""The thread policy's decisions on patched /proc readings (no timings), the busy-training
warning, and what a command prints and records."""

from __future__ import annotations

import pytest

from lightnets.analysis import machine, threads
from lightnets.analysis.machine import MachineLoad
from lightnets.analysis.threads import (
    ThreadChoice,
    apply_thread_policy,
    choose_threads,
    default_threads,
    slowdown_warning,
)
from lightnets.errors import InvalidArgumentError


def fake_machine(monkeypatch, *, cores: int, others: float, siblings: str = "0"):
    """A machine with ``cores`` usable CPUs (SMT siblings of cpu0: ``siblings``) on which other
    processes use ``others`` cores' worth of time over the sampled interval (100 ticks)."""
    total = 100 * cores
    busy = round(100 * others) + 10  # this process's own 10 ticks do not count against it
    readings = iter(
        [
            "cpu  1000 0 0 9000 0 0 0 0",
            f"cpu  {1000 + busy} 0 0 {9000 + total - busy} 0 0 0 0",
        ]
    )
    owns = iter([50, 60])

    def read(path: str) -> str | None:
        if path == "/proc/stat":
            return next(readings) + "\n"
        if path == "/proc/self/stat":
            return f"42 (python) R 1 1 1 0 -1 0 0 0 0 0 {next(owns)} 0 0 0 20 0 1"
        if path.endswith("thread_siblings_list"):
            return siblings + "\n"
        return None

    monkeypatch.setattr(machine, "read_proc", read)
    monkeypatch.setattr(machine, "usable_cores", lambda: cores)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize(
    ("cores", "others", "siblings", "expected", "line"),
    [
        (2, 0.0, "0", 2, "threads: 2 of 2 (all 2 cores free at start; --threads to override)"),
        (2, 1.0, "0", 1, "threads: 1 of 2 (1 core busy at start; --threads to override)"),
        (
            2,
            1.9,
            "0",
            1,
            "threads: 1 of 2 (every core busy at start: 1 thread at least; --threads to override)",
        ),
        # 8 logical CPUs, 2 per core: never more threads than the 4 physical cores.
        (
            8,
            0.0,
            "0,4",
            4,
            "threads: 4 of 8 (all 8 cores free at start, 4 physical; --threads to override)",
        ),
        (8, 5.0, "0-1", 3, "threads: 3 of 8 (5 cores busy at start; --threads to override)"),
        (1, 0.0, "0", 1, "threads: 1 of 1 (1 core, free at start; --threads to override)"),
    ],
)
def test_default_is_the_cores_free_at_start_at_most_the_physical_ones(
    monkeypatch, cores, others, siblings, expected, line
):
    fake_machine(monkeypatch, cores=cores, others=others, siblings=siblings)
    choice = choose_threads(sample_seconds=0)
    assert choice.threads == expected
    assert choice.line() == line
    assert choice.requested is None and choice.free == cores - round(others + 0.24)


def test_threads_option_overrides_and_is_bounded(monkeypatch):
    fake_machine(monkeypatch, cores=2, others=1.9)
    choice = choose_threads(2, sample_seconds=0)
    assert (choice.threads, choice.free) == (2, None)  # the machine is not even sampled
    assert choice.line() == "threads: 2 of 2 (--threads 2)"
    with pytest.raises(InvalidArgumentError, match=r"--threads=0 is not allowed"):
        choose_threads(0)
    with pytest.raises(InvalidArgumentError, match=r"logical CPUs"):
        choose_threads(10**6)


def test_omp_num_threads_is_an_explicit_setting_the_default_respects(monkeypatch):
    fake_machine(monkeypatch, cores=2, others=0.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    choice = choose_threads(sample_seconds=0)
    assert (choice.threads, choice.free) == (1, None)
    assert choice.line() == "threads: 1 of 2 (OMP_NUM_THREADS=1; --threads to override)"
    assert choose_threads(2, sample_seconds=0).threads == 2  # --threads still wins
    for ignored in ("0", "4,2", "many", "100000"):  # not one count in 1..logical CPUs
        fake_machine(monkeypatch, cores=2, others=0.0)
        monkeypatch.setenv("OMP_NUM_THREADS", ignored)
        assert choose_threads(sample_seconds=0).free == 2, ignored


def test_a_command_ceiling_and_processes_sharing_the_machine(monkeypatch):
    fake_machine(monkeypatch, cores=8, others=0.0)
    guideline = choose_threads(
        limit=1, limit_reason="the paper's ARM timings are single-thread", sample_seconds=0
    )
    assert guideline.line() == (
        "threads: 1 of 8 (the paper's ARM timings are single-thread; --threads to override)"
    )
    fake_machine(monkeypatch, cores=8, others=2.0)
    shared = choose_threads(processes=2, sample_seconds=0)  # torchrun, 2 local processes
    assert shared.threads == 3 and "split among 2 local ranks" in shared.reason


def test_apply_prints_once_sets_torch_and_becomes_the_runtimes_default(monkeypatch):
    import torch

    fake_machine(monkeypatch, cores=2, others=1.0)
    monkeypatch.setattr(threads, "_chosen", {})
    monkeypatch.setattr(machine.time, "sleep", lambda seconds: None)
    before = torch.get_num_threads()
    lines: list[str] = []
    try:
        first = apply_thread_policy(announce=lines.append)
        again = apply_thread_policy(announce=lines.append)  # a sweep's next cell
        assert first == again and torch.get_num_threads() == 1
        assert lines == ["threads: 1 of 2 (1 core busy at start; --threads to override)"]
        assert default_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_long_lived_process_measures_again_after_a_minute(monkeypatch):
    """A notebook or test session runs many commands in one process: a choice made when the
    machine was quiet must not outlive the quiet (a pool of 2 threads on 1 free core runs many
    times slower), nor a busy moment's choice the load."""
    import torch

    clock = [1000.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(threads, "_chosen", {})
    monkeypatch.setattr(machine.time, "sleep", lambda seconds: None)
    before = torch.get_num_threads()
    lines: list[str] = []
    try:
        fake_machine(monkeypatch, cores=2, others=0.0)
        assert apply_thread_policy(announce=lines.append).threads == 2
        clock[0] += threads.CHOICE_SECONDS - 1  # within the minute: kept, no /proc read
        monkeypatch.setattr(machine, "read_proc", lambda path: pytest.fail("measured again"))
        assert apply_thread_policy(announce=lines.append).threads == 2
        clock[0] += 2  # past it, another process took a core
        fake_machine(monkeypatch, cores=2, others=1.0)
        assert apply_thread_policy(announce=lines.append).threads == 1
        assert torch.get_num_threads() == 1 and default_threads() == 1
        clock[0] += threads.CHOICE_SECONDS + 1  # measured again, the same: said once only
        fake_machine(monkeypatch, cores=2, others=1.0)
        assert apply_thread_policy(announce=lines.append).threads == 1
        assert lines == [
            "threads: 2 of 2 (all 2 cores free at start; --threads to override)",
            "threads: 1 of 2 (1 core busy at start; --threads to override)",
        ]
        # An explicit count is the user's: never measured again.
        assert apply_thread_policy(1, announce=lines.append).threads == 1
        clock[0] += 10 * threads.CHOICE_SECONDS
        monkeypatch.setattr(machine, "read_proc", lambda path: pytest.fail("measured again"))
        assert apply_thread_policy(1, announce=lines.append).threads == 1
        assert lines[-1] == "threads: 1 of 2 (--threads 1)" and len(lines) == 3
    finally:
        torch.set_num_threads(before)


def load(others: float, *, cores: int = 2, threads: int = 2, steal: float = 0.0) -> MachineLoad:
    return MachineLoad(cores=cores, threads=threads, others_cores=others, steal=steal)


def test_training_warns_when_the_machine_became_busy_and_the_epoch_slowed():
    busy = load(0.9)  # others took most of a core our 2 threads needed
    line = slowdown_warning(3, 60.0, (1, 150.0), busy)
    assert line is not None and line.startswith("warning: the machine became busy during epoch 3")
    assert "60 img/s, 0.40x epoch 1's 150" in line
    assert line.endswith("--threads 1 would fit the cores left (resume with it)")
    assert "\n" not in line
    # No warning: a quiet machine (a slow epoch has another cause), a small slowdown, no
    # earlier epoch to compare with.
    assert slowdown_warning(3, 60.0, (1, 150.0), load(0.1)) is None
    assert slowdown_warning(3, 140.0, (1, 150.0), busy) is None
    assert slowdown_warning(1, 60.0, None, busy) is None
    # The hypervisor's steal counts as others too.
    assert slowdown_warning(2, 60.0, (1, 150.0), load(0.0, steal=0.3)) is not None


def test_record_is_plain_data():
    choice = ThreadChoice(1, 2, 2, 1, None, "1 core busy at start")
    assert threads.thread_record(choice) == {
        "threads": 1,
        "cores": 2,
        "reason": "threads: 1 of 2 (1 core busy at start; --threads to override)",
    }


def test_train_says_and_records_its_threads(tmp_path, capsys, monkeypatch):
    import json
    import shlex

    import torch

    from lightnets.cli import main

    monkeypatch.setattr(threads, "_chosen", {})
    before = torch.get_num_threads()
    argv = shlex.split(
        "train --model mobilenet_v1 --width-mult 0.25 --dataset synthetic --input-size 16 "
        "--train-subset 64 --val-size 0 --batch-size 32 --epochs 2 --threads 1"
    )
    try:
        assert main([*argv, "--output", str(tmp_path / "r")]) == 0
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert out.count("threads: 1 of ") == 1 and "(--threads 1)" in out
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").open()]
    assert [r["threads"] for r in records] == [1, 1]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["threads"]["threads"] == 1 and summary["threads"]["reason"].endswith(
        "(--threads 1)"
    )
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["threads"] == 1
