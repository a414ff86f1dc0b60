"""The trainer's parts on their own: the divergence guard's verdicts and messages, the run's
position (best epoch, restored from a checkpoint) and the run directory's claim and lock."""

from __future__ import annotations

import math

import pytest
import torch

from lightnets.train.distributed import DistContext
from lightnets.train.guard import DivergenceGuard, TrainingDiverged
from lightnets.train.run_state import RunDirectory, RunProgress
from lightnets.train.rundir import MARKER, RunDirError, read_marker


def _guard(tmp_path) -> DivergenceGuard:
    return DivergenceGuard(DistContext(), torch.device("cpu"), tmp_path / "last.pt")


def _record(epoch=1, train_loss=0.5, val_loss=0.6, lr=0.1):
    return {"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": val_loss}


def test_guard_passes_finite_runs_and_names_the_first_bad_quantity(tmp_path):
    guard = _guard(tmp_path)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    guard.check_running_loss(torch.tensor(3.0, dtype=torch.float64), 0, 0.1, done=0)
    guard.check_epoch(_record(), [net], done=0)
    guard.check_epoch(_record(val_loss=None), [net], done=0)  # no validation split
    with pytest.raises(TrainingDiverged) as raised:
        guard.check_running_loss(torch.tensor(math.nan, dtype=torch.float64), 0, 0.25, done=0)
    assert str(raised.value) == (
        "the training loss became NaN or infinite in epoch 1 (lr 0.25): training stopped; "
        "no checkpoint was written; lower --lr or add --clip-grad"
    )
    with pytest.raises(TrainingDiverged, match=r"the validation loss became NaN .* epoch 3 "):
        guard.check_epoch(_record(epoch=3, val_loss=math.inf), [net], done=2)
    net[1].running_var[0] = math.inf
    assert not DivergenceGuard.weights_finite([net])
    with pytest.raises(TrainingDiverged, match="weights or BatchNorm statistics"):
        guard.check_epoch(_record(train_loss=math.nan), [net], done=0)  # weights named first


def test_guard_names_the_checkpoint_it_keeps(tmp_path):
    guard = _guard(tmp_path)
    bad = torch.tensor(math.inf, dtype=torch.float64)
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        guard.check_running_loss(bad, 2, 0.1, done=2)  # epochs done, but no last.pt on disk
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(TrainingDiverged) as raised:
        guard.check_running_loss(bad, 2, 0.1, done=2)
    assert f"the last good checkpoint {tmp_path / 'last.pt'} (epoch 2) is kept" in str(raised.value)


def test_progress_keeps_the_best_epoch_and_a_copy_of_its_weights():
    net = torch.nn.Linear(2, 2)
    progress = RunProgress()
    assert progress.end_epoch({"epoch": 1, "val_top1": 0.5}, validated=True, model=net)
    best = progress.best_weights["weight"].clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    assert not progress.end_epoch({"epoch": 2, "val_top1": 0.4}, validated=True, model=net)
    assert torch.equal(progress.best_weights["weight"], best)  # a copy, not the live tensor
    assert progress.end_epoch({"epoch": 3, "val_top1": 0.6}, validated=True, model=net)
    assert (progress.epoch, progress.best_epoch, progress.best_top1) == (3, 3, 0.6)
    assert [r["epoch"] for r in progress.history] == [1, 2, 3]
    # Without a validation split every epoch is the latest best.
    plain = RunProgress()
    assert plain.end_epoch({"epoch": 1, "val_top1": None}, validated=False, model=net)
    assert plain.end_epoch({"epoch": 2, "val_top1": None}, validated=False, model=net)
    assert plain.best_epoch == 2


def test_progress_restores_what_a_checkpoint_stored():
    state = {
        "epoch": 4,
        "step": 7,
        "partial": {"loss_sum": 1.5, "count": 8.0},
        "history": [{"epoch": e} for e in range(1, 5)],
        "best_top1": 0.7,
        "best_epoch": 3,
        "wall_time": 12.5,
    }
    progress = RunProgress.from_checkpoint(state)
    assert (progress.epoch, progress.step_in_epoch, progress.partial) == (4, 7, state["partial"])
    assert progress.history == state["history"] and progress.history is not state["history"]
    assert (progress.best_top1, progress.best_epoch, progress.wall_time) == (0.7, 3, 12.5)
    assert progress.best_weights is None  # read again from best.pt at the end
    assert RunProgress.from_checkpoint({"epoch": 1}).step_in_epoch == 0


def test_run_directory_claims_marks_and_locks_a_new_folder(tmp_path):
    notes: list[str] = []
    run = RunDirectory(tmp_path / "run", is_main=True, notes=notes)
    assert run.open(resume=False) is None and not run.path.exists()  # nothing written yet
    run.claim()
    try:
        assert read_marker(run.path / MARKER, "run") is not None
        other = RunDirectory(run.path, is_main=True, notes=[])
        with pytest.raises(RunDirError):
            other.claim()  # locked by the first
    finally:
        run.unlock()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError):
        RunDirectory(tmp_path / "foreign", is_main=True, notes=notes).open(resume=False)
    assert notes == []
