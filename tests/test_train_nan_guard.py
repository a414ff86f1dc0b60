"""The NaN guard: a checkpoint is kept only if its weights, BN statistics and losses are finite."""

from __future__ import annotations

import json
import math
import shlex

import torch

from lightnets.cli import main
from lightnets.train.checkpoint import load_checkpoint
from lightnets.train.metrics import write_json_atomic, write_metrics_jsonl
from lightnets.train.trainer import Trainer

# One step per epoch: the guard must not depend on the epoch's length.
ONE_STEP = shlex.split(
    "train --model mobilenet_v1 --width-mult 0.25 --dataset synthetic --input-size 16 "
    "--train-subset 32 --val-size 32 --batch-size 32 --device cpu --recipe cosine "
    "--warmup-epochs 0"
)


def _strict_json(text: str):
    def refuse(constant: str):
        raise AssertionError(f"{constant} in JSON")

    return json.loads(text, parse_constant=refuse)


def _assert_all_finite(state: dict) -> None:
    for key in ("model", "ema"):
        for name, tensor in (state.get(key) or {}).items():
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), f"{key}.{name}"


def test_huge_lr_with_one_step_per_epoch_stops_and_keeps_only_good_checkpoints(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([*ONE_STEP, "--epochs", "4", "--lr", "1e6", "--output", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "became NaN or infinite in epoch" in err, err
    assert not (run_dir / "summary.json").exists()
    history = [_strict_json(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for name in ("last.pt", "best.pt"):
        if (run_dir / name).exists():
            state = load_checkpoint(run_dir / name)
            _assert_all_finite(state)
            assert state["epoch"] <= len(history)
            assert math.isfinite(state["history"][-1]["val_loss"])
    if history:
        assert f"{run_dir / 'last.pt'} (epoch {len(history)}) is kept" in err
    else:
        assert "no checkpoint was written" in err


def test_non_finite_batchnorm_statistics_stop_the_run_at_the_epoch_end(
    tmp_path, capsys, monkeypatch
):
    real_step = Trainer._step

    def step(self, images, targets, sums):
        real_step(self, images, targets, sums)
        if self.epoch == 1:  # the second epoch: a BN running variance overflows
            bn = next(m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var[0] = math.inf

    monkeypatch.setattr(Trainer, "_step", step)
    run_dir = tmp_path / "run"
    assert main([*ONE_STEP, "--epochs", "3", "--lr", "0.1", "--output", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the weights or BatchNorm statistics became NaN or infinite in epoch 2" in err, err
    assert f"{run_dir / 'last.pt'} (epoch 1) is kept" in err
    state = load_checkpoint(run_dir / "last.pt")
    assert state["epoch"] == 1
    _assert_all_finite(state)


def test_run_files_are_strict_json(tmp_path):
    write_metrics_jsonl(tmp_path / "m.jsonl", [{"epoch": 1, "val_loss": math.nan}])
    line = _strict_json((tmp_path / "m.jsonl").read_text())
    assert line["val_loss"] is None and line["epoch"] == 1
    write_json_atomic(tmp_path / "s.json", {"test_loss": math.inf, "x": [1.5, -math.inf]})
    assert _strict_json((tmp_path / "s.json").read_text()) == {"test_loss": None, "x": [1.5, None]}
