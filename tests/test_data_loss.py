"""Nothing of the user's is lost (issue 17, "Data lost"): the run lock is never written through a
link, no command writes over its own input or replaces a file without asking, and lightnets
recognises its own run and sweep folders by a marker only it writes."""

from __future__ import annotations

import io
import json
import os
import shlex

import pytest

import lightnets
from conftest import one_line
from lightnets.cli import main
from lightnets.models.weights import save_weights
from lightnets.train.checkpoint import load_checkpoint, save_checkpoint
from lightnets.train.rundir import LOCK, MARKER, RunDirError, RunLock

TINY = shlex.split(
    "train --model mobilenet_v1 --width-mult 0.25 --dataset synthetic --input-size 16 "
    "--train-subset 32 --val-size 32 --batch-size 32 --epochs 1 --device cpu"
)
SWEEP = shlex.split(
    "sweep --model mobilenet_v1 --width-mult 0.25 0.5 --input-size 16 --dataset synthetic "
    "--train-subset 32 --val-size 0 --batch-size 32 --epochs 1 --device cpu"
)
NOTES = "my notes: 25 bytes here.\n"


def snapshot(folder) -> dict:
    """Every file under ``folder`` (links as links) -> its bytes or link target."""
    return {
        p.relative_to(folder): (os.readlink(p) if p.is_symlink() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


# -- the run lock ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "notes"])
def test_the_lock_is_never_written_through_a_users_file(tmp_path, capsys, kind):
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = run_dir / LOCK
    if kind == "symlink":
        lock.symlink_to(notes)
    elif kind == "hardlink":
        os.link(notes, lock)
    else:
        lock.write_text(NOTES)  # someone's file of that name: not a PID
    before = snapshot(tmp_path)
    one_line(capsys, main([*TINY, "--output", str(run_dir)]), "not a lightnets lock file")
    assert snapshot(tmp_path) == before
    with pytest.raises(RunDirError):
        RunLock(run_dir).acquire()
    assert notes.read_text() == NOTES


def test_a_stale_lock_is_still_taken_over(tmp_path):
    (tmp_path / LOCK).write_text("999999999\n")  # no such process holds it
    lock = RunLock(tmp_path).acquire()
    try:
        assert lock.stale_pid == 999999999
        assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()
    assert not (tmp_path / LOCK).exists()


# -- outputs: never an input, never replaced without asking ---------------------------------


@pytest.fixture
def run_checkpoint(tmp_path):
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25, variant="cifar", num_classes=3)
    path = tmp_path / "run" / "best.pt"
    path.parent.mkdir()
    save_checkpoint(path, {"hparams": model.hparams, "model": model.state_dict(), "epoch": 3})
    return path


@pytest.mark.parametrize("command", ["convert", "compress"])
def test_convert_and_compress_never_write_over_their_input(
    run_checkpoint, tmp_path, capsys, command
):
    link = tmp_path / "link.pt"
    link.symlink_to(run_checkpoint)
    hard = tmp_path / "hard.pt"
    os.link(run_checkpoint, hard)
    before = snapshot(tmp_path)
    for source, target in [
        (run_checkpoint, run_checkpoint),
        (link, run_checkpoint),
        (run_checkpoint, hard),
        (hard, link),
    ]:
        argv = [command, str(source), "-o", str(target), "--force"]
        one_line(capsys, main(argv), "it is the input")
    assert snapshot(tmp_path) == before
    assert load_checkpoint(run_checkpoint)["epoch"] == 3


def test_an_existing_output_needs_force_or_a_yes(run_checkpoint, tmp_path, capsys, monkeypatch):
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"keep me")
    argv = ["convert", str(run_checkpoint), "-o", str(target)]
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # a script: no terminal to ask on
    one_line(capsys, main(argv), "already exists", "--force")
    one_line(capsys, main(["compress", str(run_checkpoint), "-o", str(target)]), "--force")
    plot = tmp_path / "compare.png"
    plot.write_bytes(b"my figure")
    one_line(capsys, main(["compare", "squeezenet1_1", "--plot", str(plot)]), "--force")
    assert target.read_bytes() == b"keep me" and plot.read_bytes() == b"my figure"
    assert main([*argv, "--force"]) == 0
    assert target.read_bytes() != b"keep me"


# -- our folders, by our marker ---------------------------------------------------------------


def test_a_folder_with_the_users_config_and_metrics_is_not_a_run(tmp_path, capsys):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    # The very keys a lightnets config.json has: still the user's, not a run of ours.
    config = {"model": "my_net", "recipe": "mine", "output": str(run_dir)}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.3}\n')
    before = snapshot(run_dir)
    one_line(capsys, main([*TINY, "--output", str(run_dir)]), "not a lightnets run")
    assert snapshot(run_dir) == before


def test_a_run_made_before_the_marker_still_resumes(tmp_path, capsys):
    run_dir = tmp_path / "old"
    assert main([*TINY, "--output", str(run_dir)]) == 0
    (run_dir / MARKER).unlink()  # as an earlier lightnets left it
    assert main(["train", "--resume", str(run_dir), "--epochs", "2"]) == 0
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2
    assert json.loads((run_dir / MARKER).read_text())["format"] == "lightnets-run"
    capsys.readouterr()
    # Its folder holding only best.pt: resuming is refused with advice that fits.
    (run_dir / "last.pt").unlink()
    err = one_line(capsys, main(["train", "--resume", str(run_dir)]), "best.pt but no last.pt")
    assert "remove the directory" not in err


def test_sweep_output_is_checked_for_ownership(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "sweep.md").write_text("# my own table\n")
    before = snapshot(mine)
    one_line(capsys, main([*SWEEP, "--output", str(mine)]), "not a lightnets sweep")
    assert snapshot(mine) == before


def test_sweep_values_that_print_alike_are_refused_before_training(tmp_path, capsys):
    argv = [a for a in SWEEP if a not in ("0.25", "0.5")]
    at = argv.index("--width-mult") + 1
    argv[at:at] = ["0.5", "0.5000001"]
    err = one_line(capsys, main([*argv, "--output", str(tmp_path / "s")]), "width_mult-0.5")
    assert "0.5000001" in err
    assert not (tmp_path / "s").exists()


def test_sweep_cell_holding_only_best_pt_gets_no_resume_advice(tmp_path, capsys):
    cell = tmp_path / "s" / "width_mult-0.25_input_size-16"
    cell.mkdir(parents=True)
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25, variant="cifar", num_classes=10)
    save_checkpoint(cell / "best.pt", {"hparams": model.hparams, "model": model.state_dict()})
    before = snapshot(tmp_path)
    err = one_line(capsys, main([*SWEEP, "--output", str(tmp_path / "s")]), "best.pt")
    assert "--resume" not in err
    assert snapshot(tmp_path) == before


def test_lightnets_safetensors_round_trip_is_unchanged(tmp_path):
    # save_weights now serialises in memory: the file reads back as before.
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25, variant="cifar", num_classes=3)
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    again = lightnets.create_model("mobilenet_v1", weights=path)
    for key, value in model.state_dict().items():
        assert again.state_dict()[key].equal(value), key
