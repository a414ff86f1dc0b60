"""Exact resume: an interrupted and resumed run ends bitwise equal to a straight run."""

from __future__ import annotations

import json
import os
import shlex
import signal

import pytest
import torch

import lightnets.data
from lightnets.cli import main
from lightnets.train.checkpoint import load_checkpoint

# A tiny run: 96 synthetic 16-px images, 3 steps per epoch, 2 epochs. Dropout (RNG state),
# BatchNorm (buffers), EMA, Nesterov momentum and a warm-up + cosine schedule all take part.
RUN = shlex.split(
    "train --model mobilenet_v1 --width-mult 0.25 --drop-rate 0.3 --dataset synthetic "
    "--input-size 16 --train-subset 96 --val-size 32 --batch-size 32 --epochs 2 "
    "--recipe cosine --warmup-epochs 0.5 --lr 0.2 --ema 0.9 --deterministic --seed 1"
)
#: Measured, or chosen from the machine's load (the thread policy): may differ between runs.
TIMING = ("images_per_sec", "seconds", "warmup_seconds", "threads")


class _SigintAt:
    """Wraps a training loader; sends this process a real SIGINT (Ctrl-C) at (epoch, batch).

    ``batch=None`` sends it after the epoch's last batch.
    """

    def __init__(self, loader, epoch: int, batch: int | None) -> None:
        self.loader, self.at_epoch, self.at_batch = loader, epoch, batch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if self.epoch == self.at_epoch and index == self.at_batch:
                os.kill(os.getpid(), signal.SIGINT)
            yield batch
        if self.epoch == self.at_epoch and self.at_batch is None:
            os.kill(os.getpid(), signal.SIGINT)


def _interrupt_at(monkeypatch, epoch: int, batch: int | None) -> None:
    real = lightnets.data.make_loader

    def make_loader(dataset, splits, **kwargs):
        loader = real(dataset, splits, **kwargs)
        return _SigintAt(loader, epoch, batch) if kwargs.get("train") else loader

    monkeypatch.setattr(lightnets.data, "make_loader", make_loader)


def _history(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert main([*RUN, "--output", str(run_dir)]) == 0
    return run_dir


def _assert_same_run(a, b) -> None:
    sa, sb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    for key in ("model", "ema"):
        assert sa[key].keys() == sb[key].keys()
        for name in sa[key]:
            assert torch.equal(sa[key][name], sb[key][name]), f"{key}.{name} differs"
    for pa, pb in zip(
        sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert sa["scheduler"]["last_epoch"] == sb["scheduler"]["last_epoch"] == 6
    assert _history(a) == _history(b)
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    for key in ("test_top1", "test_top5", "test_loss", "best_epoch", "best_val_top1"):
        assert summary_a[key] == summary_b[key]


@pytest.mark.parametrize("batch", [1, None], ids=["mid-epoch", "epoch-end"])
def test_ctrl_c_then_resume_is_bitwise_equal_to_straight_run(
    straight, tmp_path, monkeypatch, capsys, batch, ctrl_c
):
    run_dir = tmp_path / "run"
    _interrupt_at(monkeypatch, epoch=0, batch=batch)
    assert main([*RUN, "--output", str(run_dir)]) == 130
    assert "interrupted: saved" in capsys.readouterr().out
    state = load_checkpoint(run_dir / "last.pt")
    if batch is None:
        assert (state["epoch"], state["step"]) == (1, 0)
    else:
        assert (state["epoch"], state["step"]) == (0, 2)  # the step in flight completes
        assert state["partial"]["count"] == 64
    assert not (run_dir / "summary.json").exists()
    monkeypatch.undo()

    assert main(["train", "--resume", str(run_dir)]) == 0
    expected = "resuming at epoch 1" if batch is not None else "resuming at epoch 2"
    assert expected in capsys.readouterr().out
    _assert_same_run(straight, run_dir)


def test_checkpoint_is_plain_data_with_full_training_state(straight):
    # weights_only=True refuses anything but tensors and plain Python containers.
    state = torch.load(straight / "last.pt", weights_only=True)
    keys = shlex.split("model ema optimizer scheduler rng recipe config dataset hparams history")
    assert set(keys) <= set(state)
    assert state["epoch"] == 2 and state["step"] == 0
    assert state["recipe"]["ema_decay"] == 0.9 and state["recipe"]["schedule"] == "cosine"
    assert state["config"]["model"] == "mobilenet_v1"
    # The fast-path settings that change the arithmetic are stored resolved (CPU: off).
    assert (state["config"]["amp"], state["config"]["channels_last"]) == ("none", False)
    assert state["dataset"]["name"] == "synthetic"
    assert state["dataset"]["input_size"] == [3, 16, 16]
    assert state["hparams"]["variant"] == "cifar" and state["hparams"]["drop_rate"] == 0.3
    assert isinstance(state["rng"][0]["torch"], torch.Tensor)
    # best.pt holds the epoch with the best validation top-1 (ties keep the first).
    best = torch.load(straight / "best.pt", weights_only=True)
    tops = [r["val_top1"] for r in state["history"]]
    assert best["epoch"] == tops.index(max(tops)) + 1


def test_new_run_refuses_a_directory_with_a_checkpoint(straight, capsys):
    before = (straight / "last.pt").read_bytes()
    assert main([*RUN, "--output", str(straight)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err
    assert (straight / "last.pt").read_bytes() == before


def test_resume_refuses_another_model_and_changed_settings(straight, capsys):
    before = (straight / "last.pt").read_bytes()
    assert main(["train", "--resume", str(straight), "--model", "shufflenet_v2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint of mobilenet_v1, not shufflenet_v2" in err
    assert main(["train", "--resume", str(straight), "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr" in err
    assert main(["train", "--resume", str(straight), "--width-mult", "0.5"]) == 2
    assert "width_mult" in capsys.readouterr().err
    # The message lists what may change by the flags' real names.
    assert main(["train", "--resume", str(straight), "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "--seed 5 differs" in err and "--workers" in err and "--num-workers" not in err
    assert (straight / "last.pt").read_bytes() == before


def test_resume_of_a_finished_run_with_more_epochs_continues(straight, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "more"
    shutil.copytree(straight, run_dir)
    assert main(["train", "--resume", str(run_dir), "--epochs", "3"]) == 0
    history = _history(run_dir)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[:2] == _history(straight)
    assert load_checkpoint(run_dir / "last.pt")["scheduler"]["last_epoch"] == 9


def test_resume_of_a_finished_run_says_so_and_changes_nothing(straight, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "finished"
    shutil.copytree(straight, run_dir)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()}
    assert main(["train", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert out.count("\n") == 1 and "is finished: 2 epochs" in out and "nothing changed" in out
    assert f"test top-1 {100 * summary['test_top1']:.2f}%" in out
    assert "resuming" not in out and "epoch 3" not in out
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()}
    assert after == before  # summary.json, last.pt, metrics.jsonl: untouched


def test_resume_without_checkpoint_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no last.pt" in err


def test_a_deterministic_resume_keeps_the_runs_thread_count(tmp_path, monkeypatch, capsys, ctrl_c):
    # The machine was busier when the run started (1 core free) than when it resumes (2): the
    # resumed epochs keep the run's 1 thread, which an exact resume needs.
    from lightnets.analysis import machine, threads

    if machine.physical_cores() < 2 or os.environ.get("OMP_NUM_THREADS"):
        pytest.skip("needs 2 physical cores and no OMP_NUM_THREADS")
    run_dir = tmp_path / "run"
    try:
        for free, argv in ((1, [*RUN, "--output", str(run_dir)]), (2, ["train", "--resume"])):
            threads.reset_thread_policy()
            monkeypatch.setattr(machine, "free_cores", lambda seconds=0.25, free=free: free)
            if free == 1:
                _interrupt_at(monkeypatch, epoch=0, batch=None)
                assert main(argv) == 130
            else:
                assert main([*argv, str(run_dir)]) == 0
            out = capsys.readouterr().out
            monkeypatch.undo()
        assert "threads: 1 of" in out and "kept for an exact --deterministic resume" in out
        recorded = [json.loads(line)["threads"] for line in (run_dir / "metrics.jsonl").open()]
        assert recorded == [1, 1]
    finally:
        threads.reset_thread_policy()  # no choice made from the faked readings outlives the test
