"""The fast CUDA path's settings: on with CUDA, off on the CPU, each switchable; clear errors."""

from __future__ import annotations

import shlex

import pytest
import torch

from lightnets.cli import main
from lightnets.errors import InvalidArgumentError
from lightnets.train import TrainConfig, Trainer
from lightnets.train.resume import resume_config

TINY = shlex.split(
    "train --model mobilenet_v1 --width-mult 0.25 --dataset synthetic --input-size 16 "
    "--train-subset 32 --val-size 32 --batch-size 32 --epochs 1"
)
FAST = ("amp", "channels_last", "device_data", "static_shapes", "cuda_graphs")


def _resolved(kind: str, **settings) -> tuple:
    """What a trainer on ``kind`` makes of ``settings`` (no device is touched)."""
    trainer = Trainer.__new__(Trainer)
    trainer.config = TrainConfig(model="mobilenet_v1", output="unused", **settings)
    config = trainer._resolve_fast_path(kind)
    speed = (trainer.device_data, trainer.static_shapes, trainer.cuda_graphs)
    return (config.amp, config.channels_last, *speed)


def test_defaults_are_the_fast_path_on_cuda_and_plain_on_the_cpu():
    assert _resolved("cuda") == ("bf16", True, True, True, True)
    assert _resolved("cpu") == ("none", False, False, False, False)


@pytest.mark.parametrize("name", FAST)
def test_each_part_switches_off_alone(name):
    off = "none" if name == "amp" else False
    expected = ["bf16", True, True, True, True]
    expected[FAST.index(name)] = off
    assert _resolved("cuda", **{name: off}) == tuple(expected)


def test_cpu_parts_can_be_asked_for_but_cuda_graphs_cannot():
    assert _resolved("cpu", amp="bf16", channels_last=True, static_shapes=True)[:4] == (
        "bf16",
        True,
        False,
        True,
    )
    with pytest.raises(InvalidArgumentError, match="--cuda-graphs needs CUDA"):
        _resolved("cpu", cuda_graphs=True)


def test_flags_reach_the_config():
    from lightnets.cli import build_parser
    from lightnets.cli.train import config_from_args

    args = build_parser().parse_args(
        [*TINY, "-o", "r", "--no-cuda-graphs", "--no-device-data", "--static-shapes"]
    )
    config, resume = config_from_args(args)
    assert not resume
    assert (config.cuda_graphs, config.device_data, config.static_shapes) == (False, False, True)
    assert (config.amp, config.channels_last) == (None, None)  # the device decides


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on CPU-only machines")
@pytest.mark.parametrize("extra", [["--device", "cuda"], ["--cuda-graphs", "--device", "cpu"]])
def test_cuda_asked_without_a_gpu_is_one_line_and_writes_nothing(tmp_path, capsys, extra):
    out_dir = tmp_path / "run"
    assert main([*TINY, *extra, "--output", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("needs CUDA" in err or "no CUDA device" in err), err
    assert not out_dir.exists()


def test_speed_settings_may_change_on_resume_but_precision_may_not(tmp_path):
    run_dir = tmp_path / "run"
    assert main([*TINY, "--device", "cpu", "--static-shapes", "--output", str(run_dir)]) == 0
    config = resume_config(run_dir, {"static_shapes": False, "device_data": True})
    assert (config.static_shapes, config.device_data, config.amp) == (False, True, "none")
    with pytest.raises(InvalidArgumentError, match="--amp 'bf16' differs"):
        resume_config(run_dir, {"amp": "bf16"})


def _augment(**settings) -> bool:
    trainer = Trainer.__new__(Trainer)
    trainer.config = TrainConfig(model="mobilenet_v1", output="unused", **settings)
    return trainer._resolve_fast_path("cpu").augment


def test_crop_and_flip_default_to_long_runs_only():
    from lightnets.train import get_recipe

    assert _augment(recipe=get_recipe("onecycle", epochs=3)) is False
    assert _augment(recipe=get_recipe("cifar", epochs=29)) is False
    assert _augment(recipe=get_recipe("cifar", epochs=30)) is True
    assert _augment(recipe=get_recipe("onecycle", epochs=3), augment=True) is True
    assert _augment(recipe=get_recipe("cifar"), augment=False) is False
    # A configuration stored before the setting existed always augmented.
    stored = TrainConfig(model="mobilenet_v1", output="unused").to_dict()
    del stored["augment"]
    assert TrainConfig.from_dict(stored).augment is True


def test_without_augment_a_training_batch_is_the_plain_normalised_image():
    from lightnets.data import Augmentation, load_splits, make_loader

    splits = load_splits("synthetic", image_size=16, val_size=0, train_subset=8)

    def first_batch(augment: bool) -> torch.Tensor:
        options = Augmentation(crop_and_flip=augment)
        loader = make_loader(splits.train, splits, batch_size=8, train=True, augmentation=options)
        loader.set_epoch(0)
        return next(iter(loader))

    images, _ = first_batch(False)
    eval_images, _ = next(iter(make_loader(splits.train, splits, batch_size=8, train=False)))
    # Same images in another order: every training image equals one evaluation image exactly.
    for image in images:
        assert any(torch.equal(image, other) for other in eval_images)
    augmented, _ = first_batch(True)
    assert not all(any(torch.equal(a, b) for b in eval_images) for a in augmented)
