"""Results that cannot mislead: chance-level top-1 is warned about, top-5 is left out where it
is meaningless (5 classes or fewer), and a folder's ``val/`` used as the test split is said in
the run's first line."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch

from lightnets.cli import main
from lightnets.train.evaluate import evaluate
from lightnets.train.metrics import (
    at_chance,
    chance_margin,
    chance_warning,
    unlearned_classes,
    unlearned_warning,
)
from lightnets.train.progress import format_epoch
from test_data_folder import write_images

# 64 synthetic 16-px images, 2 steps of one epoch: the network learns nothing and predicts one
# class for every image of the balanced 2,000-image test set, i.e. exactly 10.00%.
UNTRAINED = shlex.split(
    "train --model mobilenet_v1 --width-mult 0.25 --dataset synthetic --input-size 16 "
    "--train-subset 64 --val-size 0 --batch-size 32 --epochs 1 --seed 1"
)


def test_chance_margin_is_three_binomial_standard_errors():
    # p = 1/10, n = 10,000: sqrt(0.1 * 0.9 / 10,000) = 0.003; three of them: 0.009.
    assert chance_margin(10, 10_000) == pytest.approx(0.009, abs=1e-12)
    assert chance_margin(4, 12) == pytest.approx(3 * math.sqrt(0.25 * 0.75 / 12))
    assert at_chance(0.1089, 10, 10_000) and not at_chance(0.1091, 10, 10_000)
    assert at_chance(0.0, 10, 10_000)  # worse than guessing is no better
    assert not at_chance(0.5, 4, 1_000) and at_chance(0.5, 4, 12)  # 12 images prove little
    assert not at_chance(float("nan"), 10, 100) and not at_chance(None, 10, 100)
    assert chance_warning(0.95, 10, 10_000) is None
    warning = chance_warning(0.1, 10, 10_000)
    assert warning is not None and "\n" not in warning
    assert "10.00% is at chance level" in warning and "10.00% +- 0.90 points" in warning


def test_train_and_eval_warn_at_chance(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([*UNTRAINED, "--output", str(run_dir)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_top1"] == 0.1 and summary["test_images"] == 2000
    assert summary["at_chance"] is True
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "test top-1 10.00% is at chance level" in warnings[0]
    # One class predicted for every image: the other nine were never classified correctly.
    assert len(summary["unlearned_classes"]) == 9

    # eval: the same warning on stderr, the JSON on stdout untouched.
    assert main(["eval", "--checkpoint", str(run_dir / "best.pt"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["top1"] == 0.1
    assert err.count("\n") == 1 and err.startswith("warning: test top-1 10.00% is at chance")


def test_classes_never_classified_correctly_are_named():
    # Scores are the one-hot inputs, except that class 2's can never win.
    linear = torch.nn.Linear(4, 4)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(4))
        linear.bias.copy_(torch.tensor([0.0, 0.0, -1e6, 0.0]))
    y = torch.arange(400) % 4
    x = torch.nn.functional.one_hot(y, 4).float()
    result = evaluate(linear, [(x, y)], num_classes=4, device=torch.device("cpu"), per_class=True)
    assert result.per_class == [1.0, 1.0, 0.0, 1.0] and result.top1 == 0.75
    names = ["cat", "dog", "owl", "fox"]
    assert unlearned_classes(result.per_class, names) == ["owl"]
    assert unlearned_classes([0.5, float("nan"), 0.0], ["a", "b", "c"]) == ["c"]  # b: no images
    warning = unlearned_warning(0.62, [0.9, 0.8, 0.0, 0.78], names, 10_000)
    assert warning is not None and "\n" not in warning
    assert warning.startswith("warning: 1 of 4 classes had no image of 10,000 classified")
    assert "(owl)" in warning and "--lr" in warning
    assert unlearned_warning(0.62, [0.9, 0.8, 0.1, 0.78], names, 10_000) is None
    assert unlearned_warning(0.25, [1.0, 0.0, 0.0, 0.0], names, 10_000) is None  # at chance


def test_top5_only_with_more_than_five_classes():
    torch.manual_seed(0)
    for classes, top5 in ((5, None), (6, 1.0)):
        linear = torch.nn.Linear(3, classes)
        x = torch.randn(12, 3)
        y = linear(x).topk(min(5, classes), 1).indices[:, -1]  # each target is 5th or last
        result = evaluate(linear, [(x, y)], num_classes=classes, device=torch.device("cpu"))
        assert result.top5 == top5 and result.top1 < 1
    record = {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_top1": 0.5, "val_loss": 1.0}
    record.update(val_top1=0.5, val_top5=None, images_per_sec=10.0, seconds=1.0)
    assert "top-5" not in format_epoch(record, 1)
    assert "top-5 90.00%" in format_epoch({**record, "val_top5": 0.9}, 1)


def test_four_class_folder_run_says_where_its_test_split_comes_from(tmp_path, capsys):
    colours = {"ant": (200, 30, 10), "bee": (10, 220, 40), "cod": (5, 6, 250), "yak": (9, 9, 9)}
    write_images(tmp_path / "photos" / "train", per_class=6, classes=colours)
    write_images(tmp_path / "photos" / "val", per_class=2, classes=colours)
    run_dir = tmp_path / "run"
    argv = shlex.split(
        "train --model mobilenet_v1 --width-mult 0.25 --dataset folder --input-size 16 "
        "--batch-size 8 --epochs 1"
    )
    argv += ["--data-dir", str(tmp_path / "photos"), "--output", str(run_dir)]
    assert main(argv) == 0
    first, *rest = capsys.readouterr().out.splitlines()
    assert first.startswith("training mobilenet_v1") and "8 test images" in first
    assert f"(test split = {tmp_path / 'photos' / 'val'} (there is no test/ folder)" in first
    assert not [line for line in rest if "top-5" in line]  # 4 classes: top-5 is always 100%
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_top5"] is None and summary["test_images"] == 8
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["val_top5"] is None and metrics["val_top1"] is not None

    assert main(["eval", "--checkpoint", str(run_dir / "best.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top5"] is None
    assert main(["eval", "--checkpoint", str(run_dir / "best.pt")]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "top-5" not in out
