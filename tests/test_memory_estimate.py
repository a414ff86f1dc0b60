"""Absurd sizes are refused before anything is allocated, with the estimate and the machine's
memory: width 1e9, 10^12 classes, a 100,000-pixel input, a batch of 10^8, such a checkpoint."""

from __future__ import annotations

import pytest
import torch

import lightnets
import lightnets.cli.common
from lightnets.cli import main
from lightnets.errors import InvalidArgumentError
from lightnets.models.memory import (
    available_memory,
    check_memory,
    estimate_memory,
    format_bytes,
)
from lightnets.train.checkpoint import save_checkpoint

SMALL = {"name": "squeezenet1_1", "num_classes": 10, "variant": "cifar"}


@pytest.mark.parametrize("name", lightnets.list_models())
def test_parameter_bytes_equal_the_real_model(name):
    # Oracle: the model built for real on the CPU, its parameters and buffers counted.
    model = lightnets.create_model(name, num_classes=10, variant="cifar")
    real = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    estimate = estimate_memory(model.hparams)
    assert estimate.parameter_bytes == real
    assert estimate.input_size == (3, 32, 32) and estimate.batch_size == 1


def test_activations_scale_with_batch_and_pixels_and_training_keeps_more():
    one = estimate_memory(SMALL, (3, 32, 32), 1)
    eight = estimate_memory(SMALL, (3, 32, 32), 8)
    big = estimate_memory(SMALL, (3, 64, 64), 1)
    assert eight.activation_bytes == 8 * one.activation_bytes
    assert 3.5 < big.activation_bytes / one.activation_bytes <= 4.5  # ~4x the pixels
    assert eight.parameter_bytes == one.parameter_bytes
    train = estimate_memory(SMALL, (3, 32, 32), 8, training=True)
    assert train.activation_bytes > eight.activation_bytes
    assert train.total_bytes == 3 * train.parameter_bytes + train.activation_bytes


def test_the_random_state_and_allocation_are_untouched():
    state = torch.get_rng_state()
    estimate = check_memory({**SMALL, "num_classes": 10})
    assert torch.equal(torch.get_rng_state(), state)
    assert estimate.total_bytes < available_memory()[0]


@pytest.mark.parametrize(
    ("hparams", "size", "batch"),
    [
        ({"name": "mobilenet_v1", "num_classes": 1000, "variant": "imagenet",
          "width_mult": 1e9}, None, 1),
        ({"name": "mobilenet_v2", "num_classes": 10**12, "variant": "imagenet"}, None, 1),
        ({"name": "shufflenet_v2", "num_classes": 1000, "variant": "imagenet"},
         (3, 100_000, 100_000), 1),
        ({"name": "squeezenet1_1", "num_classes": 1000, "variant": "imagenet"}, None, 10**8),
    ],
)  # fmt: skip
def test_absurd_sizes_are_refused_with_the_estimate(hparams, size, batch):
    with pytest.raises(InvalidArgumentError) as info:
        check_memory(hparams, size, batch)
    message = str(info.value)
    assert "\n" not in message and hparams["name"] in message
    assert ("needs about" in message and "this machine has" in message) or (
        "too large for any machine" in message
    )


def _refuse_allocation(*args, **kwargs):
    raise AssertionError("the model was built before the memory check")


@pytest.mark.parametrize(
    "argv",
    [
        ["profile", "mobilenet_v1", "--width-mult", "1e9"],
        ["profile", "mobilenet_v1", "--num-classes", str(10**12)],
        ["profile", "shufflenet_v2", "--input-size", "100000"],
        ["bench", "squeezenet1_1", "--batch-size", "100000000"],
    ],
)
def test_cli_refuses_before_building(argv, monkeypatch, capsys):
    monkeypatch.setattr(lightnets.cli.common, "create_model", _refuse_allocation)
    assert main(argv) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith(f"lightnets {argv[0]}: error: ")
    assert "this machine has" in line or "too large for any machine" in line


def test_checkpoint_holding_absurd_hparams_is_refused_before_building(tmp_path, capsys):
    model = lightnets.create_model("squeezenet1_1", num_classes=10, variant="cifar")
    path = tmp_path / "huge.pt"
    save_checkpoint(path, {"hparams": {**model.hparams, "num_classes": 10**12}, "model": {}})
    assert main(["profile", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{path}: cannot rebuild its model:" in line and "needs about" in line


def test_a_normal_model_is_not_refused(capsys):
    assert main(["profile", "squeezenet1_1", "--variant", "cifar", "--by-type"]) == 0
    assert "error" not in capsys.readouterr().err


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 2**30) == "3.0 GiB"
    assert format_bytes(2**40 * 5e4) == "5.0e+04 TiB"


def test_an_input_too_small_for_the_network_is_named_as_such():
    hparams = {"name": "squeezenet1_0", "num_classes": 1000, "variant": "imagenet"}
    with pytest.raises(InvalidArgumentError, match=r"cannot run on 3x8x8 inputs at batch 1: "):
        check_memory(hparams, (3, 8, 8))
