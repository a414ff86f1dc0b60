"""`lightnets sweep`: the grid, the Pareto front, resume (a finished cell is not retrained, an
interrupted one continues), and one tiny sweep end to end on synthetic data."""

from __future__ import annotations

import json
import shlex

import pytest

from lightnets.cli import main
from lightnets.errors import InvalidArgumentError
from lightnets.lab.sweep import SweepResult, pareto, plan_cells, plot_sweep
from lightnets.train.metrics import at_chance

# Two cells of a tiny run: 64 synthetic 16-px images, 2 steps per epoch, 1 epoch.
SWEEP = (
    "sweep --model mobilenet_v1 --width-mult 0.25 0.5 --input-size 16 --dataset synthetic "
    "--train-subset 64 --val-size 0 --batch-size 32 --epochs 1 --device cpu --seed 1"
)


def test_plan_is_the_product_of_the_axes_in_order():
    cells = plan_cells({"width_mult": [1.0, 0.5], "input_size": [32, 24, 16]})
    assert [c.name for c in cells][:4] == [
        "width_mult-1_input_size-32",
        "width_mult-1_input_size-24",
        "width_mult-1_input_size-16",
        "width_mult-0.5_input_size-32",
    ]
    assert len(cells) == 6


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"depth": [1]}, "cannot sweep 'depth'"),
        ({"groups": [1, 1]}, "lists a value twice"),
        ({}, "at least one axis"),
    ],
)
def test_bad_grid_is_an_error(axes, message):
    with pytest.raises(InvalidArgumentError, match=message):
        plan_cells(axes)


def test_pareto_front_keeps_only_undominated_cells():
    records = [
        {"macs": 10, "test_top1": 0.90},
        {"macs": 5, "test_top1": 0.85},
        {"macs": 6, "test_top1": 0.80},  # dominated by the 5-MAC cell
        {"macs": 1, "test_top1": 0.50},
        {"macs": 10, "test_top1": 0.89},  # dominated: same cost, lower top-1
    ]
    assert pareto(records, "macs") == {0, 1, 3}


def test_cells_at_chance_are_left_off_the_front_and_said_so(tmp_path):
    # 10 classes, 2,000 test images: chance is 10% +- 2.01 points (3 standard errors).
    records = [
        {"cell": [["width_mult", 1.0]], "macs": 10, "params": 4, "latency_ms": 2.0},
        {"cell": [["width_mult", 0.5]], "macs": 5, "params": 2, "latency_ms": 1.5},
        {"cell": [["width_mult", 0.25]], "macs": 1, "params": 1, "latency_ms": 1.0},
    ]
    for record, top1 in zip(records, [0.90, 0.1205, 0.12], strict=True):
        record.update(test_top1=top1, at_chance=at_chance(top1, 10, 2000))
    assert [r["at_chance"] for r in records] == [False, False, True]
    # The cheapest cell, at chance, would otherwise be on every front.
    assert pareto(records, "macs") == {0, 1}
    assert pareto([{**r, "at_chance": False} for r in records], "macs") == {0, 1, 2}
    for r in records:
        r["pareto"] = [] if r["at_chance"] else ["macs", "params", "latency_ms"]
    result = SweepResult("mobilenet_v1", "synthetic", records, [], {"latency": "test"})
    table = result.to_markdown()
    assert "| 0.25 | 12.00% | 0.00M | 0.000M | 1.00 | left off: at chance |" in table
    assert "1 cell(s) at chance level" in table and "left off the Pareto front" in table
    assert plot_sweep(result, tmp_path / "s.png").stat().st_size > 10_000


def _summary_mtime(path):
    return (path / "summary.json").stat().st_mtime_ns


def test_sweep_end_to_end_resumes_only_what_is_left(tmp_path, capsys):
    out = tmp_path / "sweep"
    first, second = out / "width_mult-0.25_input_size-16", out / "width_mult-0.5_input_size-16"

    # "Killed" after one cell: only that cell is trained, no table yet.
    assert main([*shlex.split(SWEEP), "--output", str(out), "--max-cells", "1"]) == 0
    assert (first / "summary.json").exists() and not second.exists()
    assert not (out / "sweep.json").exists()
    done = _summary_mtime(first)
    capsys.readouterr()

    # Rerun: the finished cell is read back, not retrained; only the other one trains.
    assert main([*shlex.split(SWEEP), "--output", str(out)]) == 0
    log = capsys.readouterr().out
    assert "cell width_mult-0.25_input_size-16: done" in log
    assert "cell width_mult-0.5_input_size-16: trained" in log
    # Two steps teach nothing: both cells end at 10.00% (chance, 10 classes) and are said to.
    assert log.count("is at chance level (test top-1 10.00% for 10 classes)") == 2
    assert _summary_mtime(first) == done

    data = json.loads((out / "sweep.json").read_text())
    assert data["model"] == "mobilenet_v1" and data["dataset"] == "synthetic"
    records = data["records"]
    assert [r["cell"] for r in records] == [
        [["width_mult", 0.25], ["input_size", 16]],
        [["width_mult", 0.5], ["input_size", 16]],
    ]
    for r in records:
        assert {"test_top1", "macs", "params", "latency_ms", "pareto", "run_dir"} <= set(r)
        assert r["input_size"] == [3, 16, 16] and r["latency_ms"] > 0
    # Width 0.25 is the cheaper network by every measure the counter gives.
    assert records[0]["macs"] < records[1]["macs"] and records[0]["params"] < records[1]["params"]
    # At chance, neither cell is on a front (the fronts are tested above, on given records).
    assert [(r["test_top1"], r["at_chance"], r["pareto"]) for r in records] == [(0.1, True, [])] * 2
    assert {p["source"].split(", ")[-1] for p in data["paper"]} == {"Table 6", "Table 7"}
    assert (out / "sweep.png").stat().st_size > 10_000
    assert "| width_mult | input_size | test top-1 |" in (out / "sweep.md").read_text()

    # Other settings over an existing sweep (--epochs among them: the cells share one
    # schedule, so that their accuracies compare): refused in one line naming what differs,
    # before anything is trained or rewritten.
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for flag, value, stored in [("--epochs", "2", "1"), ("--lr", "0.5", "0.1")]:
        argv = shlex.split(SWEEP.replace("--epochs 1", "--epochs 1" if flag == "--lr" else ""))
        argv += [flag, value] if flag == "--lr" else ["--epochs", value]
        assert main([*argv, "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{flag} {float(value) if flag == '--lr' else int(value)!r} differs" in err, err
        assert f"this sweep's {stored}" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    # A hand-broken summary of a finished cell: one line naming it and the way out.
    (first / "summary.json").write_text('{"test_top1": "high"}')
    assert main([*shlex.split(SWEEP), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{first / 'summary.json'} is damaged" in err and err.count("\n") == 1
    assert "remove it and rerun" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--width-mult", "1", "-1"], "width_mult=-1.0 is not allowed"),
        (["--groups", "2"], "unknown hyperparameter groups"),
    ],
)
def test_a_bad_cell_is_refused_before_any_training(tmp_path, capsys, extra, message):
    argv = [*shlex.split(SWEEP.replace("--width-mult 0.25 0.5 ", "")), *extra]
    assert main([*argv, "--output", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_sweep_refuses_resume_flag(tmp_path, capsys):
    assert main([*shlex.split(SWEEP), "--output", str(tmp_path), "--resume", str(tmp_path)]) == 2
    assert "rerun the same command" in capsys.readouterr().err


@pytest.mark.slow
def test_two_cells_under_torchrun(tmp_path):
    """Two processes, two cells: the second cell must not hang (one process group serves the
    whole sweep) and only rank 0 prints and writes the table."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--master-addr", "127.0.0.1", "--master-port", port, "-m", "lightnets"]
    command += [*shlex.split(SWEEP), "--output", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("cell width_mult-0.5_input_size-16: trained") == 1
    assert proc.stdout.count("2 processes") == 2
    records = json.loads((out / "sweep.json").read_text())["records"]
    assert len(records) == 2
