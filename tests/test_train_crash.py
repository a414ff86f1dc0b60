"""kill -9 at chosen points of the checkpoint writes, then --resume: a consistent run directory.

The trainer process is killed with ``os._exit(137)`` (what ``kill -9`` leaves behind: no
``finally``, no cleanup) at a named point of ``save_checkpoint`` via ``LIGHTNETS_FAULT_AT``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from lightnets.cli import main
from lightnets.train.checkpoint import FAULT_ENV, load_checkpoint
from lightnets.train.rundir import LOCK

pytestmark = pytest.mark.slow  # three short trainings, each killed and resumed

RUN = shlex.split(
    "train --model mobilenet_v1 --width-mult 0.25 --dataset synthetic --input-size 16 "
    "--train-subset 64 --val-size 32 --batch-size 32 --epochs 2 --device cpu --seed 1"
)


def _killed_at(run_dir, point: str) -> None:
    env = {**os.environ, FAULT_ENV: point}
    command = [sys.executable, "-m", "lightnets", *RUN, "--output", str(run_dir)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 137, proc.stderr


def _temps(run_dir) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".tmp"))


def _assert_consistent_finished_run(run_dir) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    last, best = load_checkpoint(run_dir / "last.pt"), load_checkpoint(run_dir / "best.pt")
    assert last["epoch"] == summary["epochs"] == 2
    assert best["epoch"] == summary["best_epoch"] == last["best_epoch"]
    assert summary["test_weights"] == "best"
    assert [r["epoch"] for r in last["history"]] == [1, 2]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert not _temps(run_dir) and not (run_dir / LOCK).exists()


@pytest.mark.parametrize(
    ("point", "left"),
    [
        # Between the two writes of epoch 1: last.pt names epoch 1 as best, best.pt is missing.
        ("saved:last.pt@1", {"last": 1, "best": None, "temps": 0}),
        # Killed while writing best.pt: its temporary file stays behind.
        ("write:best.pt@1", {"last": 1, "best": None, "temps": 1}),
        # Killed while writing epoch 2's last.pt: epoch 1's pair is intact.
        ("write:last.pt@2", {"last": 1, "best": 1, "temps": 1}),
    ],
)
def test_kill_during_checkpoint_writes_then_resume(tmp_path, capsys, point, left):
    run_dir = tmp_path / "run"
    _killed_at(run_dir, point)
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == left["last"]
    best = run_dir / "best.pt"
    assert (load_checkpoint(best)["epoch"] if best.exists() else None) == left["best"]
    assert len(_temps(run_dir)) == left["temps"]
    assert (run_dir / LOCK).exists()  # the dead process's lock file: stale

    assert main(["train", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "took over the lock of process" in out
    assert ("repaired" in out) == (left["best"] is None)
    assert ("removed 1 temporary file" in out) == (left["temps"] == 1)
    _assert_consistent_finished_run(run_dir)
