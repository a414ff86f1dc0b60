"""Owning the run directory: foreign or existing contents refused, one process at a time."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from lightnets.cli import main
from lightnets.train import TrainConfig, Trainer
from lightnets.train.checkpoint import save_checkpoint
from lightnets.train.rundir import (
    LOCK,
    MARKER,
    RunDirError,
    RunLock,
    check_new_run_dir,
    remove_stray_temps,
    write_marker,
)

TINY = shlex.split(
    "train --model mobilenet_v1 --width-mult 0.25 --dataset synthetic --input-size 16 "
    "--train-subset 32 --val-size 32 --batch-size 32 --epochs 1 --device cpu"
)


def _dead_pid() -> int:
    """The PID of a process that has ended."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


@pytest.mark.parametrize(
    "files",
    [
        {"config.json": '{"lr": 0.1}', "metrics.jsonl": "mine\n", "summary.json": "{}"},
        {"notes.txt": "my notes"},
    ],
    ids=["user-json-files", "other-file"],
)
def test_non_empty_foreign_directory_is_refused_and_untouched(tmp_path, capsys, files):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert main([*TINY, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not empty and is not a lightnets run" in err, err
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == files


def test_a_run_is_recognised_by_its_marker_or_a_checkpoint_of_ours(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")  # a file of that name is not a run of ours
    with pytest.raises(RunDirError, match=r"not a lightnets run \(it holds best.pt\)"):
        check_new_run_dir(run)
    # A run made before the marker existed: its checkpoints load as ours.
    state = {"hparams": {"name": "mobilenet_v1"}, "model": {}}
    save_checkpoint(run / "best.pt", state)
    with pytest.raises(RunDirError, match=r"run's best.pt \(its last.pt is gone.*another --output"):
        check_new_run_dir(run)
    save_checkpoint(run / "last.pt", state)
    with pytest.raises(
        RunDirError, match=r"already holds a lightnets run \(last.pt, best.pt\).*train --resume"
    ):
        check_new_run_dir(run)
    with pytest.raises(RunDirError, match="not a directory"):
        check_new_run_dir(run / "best.pt")
    # A run stopped before its first checkpoint may be started over: its marker says its
    # files are ours.
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    write_marker(stopped / MARKER, "run")
    (stopped / "config.json").write_text(json.dumps({"model": "mobilenet_v1", "recipe": {}}))
    (stopped / "metrics.jsonl").write_text("")
    check_new_run_dir(stopped)
    (stopped / "summary.json").write_text("{}")  # no run writes one without a checkpoint
    with pytest.raises(RunDirError, match=r"not a lightnets run \(it holds summary.json\)"):
        check_new_run_dir(stopped)


def test_leftovers_of_our_own_are_not_foreign_and_are_removed(tmp_path):
    ours = [".last.pt.x1y2.tmp", ".best.pt.abc.tmp", ".metrics.jsonl.q.tmp", LOCK]
    for name in ours:
        (tmp_path / name).write_bytes(b"x")
    check_new_run_dir(tmp_path)  # no error: nothing of the user's is there
    (tmp_path / ".mydata.tmp").write_bytes(b"x")  # not one of our names
    assert remove_stray_temps(tmp_path) == sorted(ours[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".mydata.tmp", LOCK])


def test_lock_excludes_a_second_holder_and_records_the_pid(tmp_path):
    first = RunLock(tmp_path).acquire()
    try:
        assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(
            RunDirError, match=f"in use by another lightnets process \\(PID {os.getpid()}\\)"
        ):
            RunLock(tmp_path).acquire()
    finally:
        first.release()
    assert not (tmp_path / LOCK).exists()
    again = RunLock(tmp_path).acquire()  # released: free again
    again.release()


def test_lock_held_by_another_process_refuses_train_and_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from lightnets.train.rundir import RunLock;"
            f"RunLock(Path({str(run_dir)!r})).acquire(); print('locked', flush=True);"
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        # The check under the lock, after the directory passed the first check, refuses.
        assert main([*TINY, "--output", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert (
            err.count("\n") == 1
            and f"in use by another lightnets process (PID {holder.pid})" in err
        )
        # Resuming takes the lock before it reads anything.
        config = TrainConfig(model="mobilenet_v1", output=str(run_dir), device="cpu")
        with pytest.raises(RunDirError, match=f"PID {holder.pid}"):
            Trainer(config, resume=True)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK]
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_and_stray_temps_are_taken_over_then_released(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pid = _dead_pid()
    (run_dir / LOCK).write_text(f"{pid}\n")
    (run_dir / ".last.pt.k3j.tmp").write_bytes(b"partial")
    assert main([*TINY, "--output", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"took over the lock of process {pid}" in out
    assert "removed 1 temporary file" in out
    names = {p.name for p in run_dir.iterdir()}
    assert LOCK not in names and not [n for n in names if n.endswith(".tmp")]
    assert {"config.json", "last.pt", "best.pt", "summary.json"} <= names
    # The lock is released after a failure too.
    assert main(["train", "--resume", str(run_dir), "--lr", "5"]) == 2
    assert not (run_dir / LOCK).exists()
