"""``lightnets train`` and ``lightnets eval``: outputs, bad input, divergence, evaluation."""

from __future__ import annotations

import json
import math
import shlex

import pytest
import torch

import lightnets.data
from lightnets.cli import main
from lightnets.train.checkpoint import load_checkpoint

TINY = shlex.split(
    "--model mobilenet_v1 --width-mult 0.25 --dataset synthetic --input-size 16 "
    "--train-subset 96 --val-size 40 --batch-size 32"
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "run"
    args = shlex.split("--epochs 3 --lr 0.2 --recipe onecycle --label-smoothing 0.1 --clip-grad 5")
    code = main(["train", *TINY, *args, "--output", str(path)])
    assert code == 0
    return path


def test_run_directory_contents(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    expected = {"config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "curves.png"}
    assert expected <= names
    assert not [n for n in names if n.endswith(".tmp")]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert list(lines[0]) == (
        shlex.split(
            "epoch lr train_loss train_top1 val_loss val_top1 val_top5 images_per_sec seconds "
            "warmup_seconds threads"
        )
    )
    for r in lines:
        assert 0 <= r["train_top1"] <= 1 and 0 <= r["val_top1"] <= r["val_top5"] <= 1
        assert r["images_per_sec"] > 0 and r["seconds"] > 0
        # 40 validation images: accuracies are multiples of 1/40.
        assert r["val_top1"] * 40 == pytest.approx(round(r["val_top1"] * 40))
    # The lr logged is that of each epoch's last step (steps 2, 5, 8 of 9). onecycle: steps
    # 0-2 rise from lr/25 towards lr (cosine), steps 3-8 fall from lr to lr/(25 * 1e4).
    start, end = 1 / 25, 1 / 25 / 1e4
    expected = [
        start + (1 - start) * 0.5 * (1 - math.cos(math.pi * 2 / 3)),
        end + (1 - end) * 0.5 * (1 + math.cos(math.pi * 2 / 5)),
        end,
    ]
    assert [r["lr"] for r in lines] == pytest.approx([0.2 * f for f in expected])
    summary = json.loads((run_dir / "summary.json").read_text())
    tops = [r["val_top1"] for r in lines]
    assert summary["best_epoch"] == tops.index(max(tops)) + 1
    assert summary["best_val_top1"] == max(tops)
    assert summary["test_images"] == 2000
    assert summary["params"] == sum(
        v.numel()
        for k, v in load_checkpoint(run_dir / "best.pt")["model"].items()
        if "running" not in k and "num_batches" not in k
    )
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["recipe"]["label_smoothing"] == 0.1 and config["recipe"]["clip_grad"] == 5


def test_progress_is_one_line_per_epoch_when_not_a_terminal(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "2", "--output", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/2", "2/2"]
    assert "img/s" in epoch_lines[0] and "\r" not in out


def test_eval_json_reproduces_the_summary(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run_dir / "best.pt"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == ["top1", "top5", "loss", "images", "thread_policy"]
    assert data["thread_policy"]["threads"] >= 1
    assert data["images"] == 2000
    assert data["top1"] == pytest.approx(summary["test_top1"], abs=1e-12)
    assert data["top5"] == pytest.approx(summary["test_top5"], abs=1e-12)
    assert data["loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
    # The validation split is re-carved exactly as in training.
    assert main(["eval", "--checkpoint", str(run_dir / "best.pt"), "--split", "val", "--json"]) == 0
    val = json.loads(capsys.readouterr().out)
    assert val["images"] == 40 and val["top1"] == summary["best_val_top1"]


def test_eval_per_class_averages_to_top1_on_balanced_test_set(run_dir, capsys):
    assert main(["eval", "--checkpoint", str(run_dir / "best.pt"), "--json", "--per-class"]) == 0
    data = json.loads(capsys.readouterr().out)
    per_class = data["per_class"]
    assert list(per_class) == [f"class_{i}" for i in range(10)]
    # The synthetic test set has 200 images per class, so the mean of the classes is top-1.
    assert sum(per_class.values()) / 10 == pytest.approx(data["top1"], abs=1e-12)
    assert main(["eval", "--checkpoint", str(run_dir / "best.pt"), "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "class_9" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr", "0"], "lr must be > 0"),
        (["--lr", "-1"], "lr must be > 0"),
        (["--batch-size", "0"], "batch size must be an integer >= 1"),
        (["--epochs", "0"], "epochs must be an integer >= 1"),
        (["--weight-decay", "-1"], "weight decay must be >= 0"),
        (["--ema", "1.5"], "EMA decay must be in (0, 1)"),
        (["--amp", "fp16", "--device", "cpu"], "--amp fp16 needs CUDA"),
        (["--val-size", "100000"], "val_size"),
        (["--model", "mobilenet_v9"], "unknown model"),
        (["--groups", "3"], "groups"),
        (["--num-classes", "5"], "--num-classes does not apply"),
    ],
)
def test_bad_configuration_is_one_line_exit_2_nothing_written(tmp_path, capsys, extra, message):
    out_dir = tmp_path / "run"
    assert main(["train", *TINY, *extra, "--output", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out_dir.exists()


def test_missing_data_path_is_one_line_exit_2(tmp_path, capsys):
    out_dir = tmp_path / "run"
    args = ["train", "--model", "mobilenet_v1", "--dataset", "fashion-mnist"]
    code = main([*args, "--data-dir", str(tmp_path / "nowhere"), "--output", str(out_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err
    assert not out_dir.exists()


@pytest.mark.parametrize("flag", [["--dataset", "imagenet"], ["--recipe", "fast"]])
def test_unknown_dataset_or_recipe_is_a_usage_error(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", *TINY, *flag, "--output", "x"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_tensorboard_is_optional(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = main(["train", *TINY, "--epochs", "1", "--tensorboard", "--output", str(out_dir)])
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "lightnets[tensorboard]" in err
        assert not out_dir.exists()
    else:
        assert code == 0
        assert any((out_dir / "tensorboard").iterdir())


def test_divergence_stops_with_one_line_and_writes_no_checkpoint(tmp_path, capsys):
    out_dir = tmp_path / "run"
    args = shlex.split("--epochs 2 --lr 1e8 --warmup-epochs 0")
    code = main(["train", *TINY, *args, "--output", str(out_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN or infinite in epoch 1" in err
    assert "no checkpoint was written" in err
    assert not (out_dir / "last.pt").exists() and not (out_dir / "summary.json").exists()


class _NanFromEpoch:
    """A training loader whose images turn to NaN from a given epoch on."""

    def __init__(self, loader, epoch: int) -> None:
        self.loader, self.from_epoch, self.epoch = loader, epoch, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            if self.epoch >= self.from_epoch:
                images = torch.full_like(images, math.nan)
            yield images, labels


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real = lightnets.data.make_loader

    def make_loader(dataset, splits, **kwargs):
        loader = real(dataset, splits, **kwargs)
        return _NanFromEpoch(loader, 1) if kwargs.get("train") else loader

    monkeypatch.setattr(lightnets.data, "make_loader", make_loader)
    out_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "3", "--output", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN or infinite in epoch 2" in err
    assert f"{out_dir / 'last.pt'} (epoch 1) is kept" in err
    state = load_checkpoint(out_dir / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert len((out_dir / "metrics.jsonl").read_text().splitlines()) == 1


def test_bf16_autocast_and_channels_last_train_on_cpu(tmp_path, capsys):
    out_dir = tmp_path / "run"
    args = shlex.split("--epochs 1 --amp bf16 --channels-last")
    assert main(["train", *TINY, *args, "--output", str(out_dir)]) == 0
    summary = json.loads((out_dir / "summary.json").read_text())
    assert math.isfinite(summary["test_loss"])
    weights = load_checkpoint(out_dir / "last.pt")["model"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights.values())


def test_eval_refuses_a_corrupted_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["eval", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read checkpoint" in err


def test_every_config_and_recipe_field_is_a_flag():
    import dataclasses

    from lightnets.cli import build_parser
    from lightnets.cli.train import NOT_FLAGS, RECIPE_PREFIX
    from lightnets.train import Recipe, TrainConfig

    parser = build_parser()
    args = parser.parse_args(["train", "--model", "mobilenet_v1", "-o", "r"])
    for f in dataclasses.fields(TrainConfig):
        assert f.name in NOT_FLAGS or hasattr(args, f.name), f.name
    assert all(hasattr(args, RECIPE_PREFIX + f.name) for f in dataclasses.fields(Recipe))
    # Types, names and negations come from the fields.
    args = parser.parse_args(
        shlex.split(
            "train --model m -o r --workers 3 --no-channels-last --ema 0.99 --milestones 0.5 0.75 "
            "--clip-grad 2 --recipe cosine --pct-start 0.2"
        )
    )
    assert (args.num_workers, args.channels_last, args.recipe_ema_decay) == (3, False, 0.99)
    assert args.recipe_milestones == [0.5, 0.75] and args.recipe_clip_grad == 2.0
    assert (args.recipe_name, args.recipe_pct_start, args.output) == ("cosine", 0.2, "r")
