"""Fine-tuning from a 1000-class file to 10 classes: what trains and what stays as loaded."""

from __future__ import annotations

import logging
import shlex
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lightnets
from lightnets.cli import main
from lightnets.errors import InvalidArgumentError
from lightnets.models.weights import export_state_dict
from lightnets.train.checkpoint import load_checkpoint
from lightnets.train.finetune import create_train_model, head_parameters, scale_backbone_lr
from lightnets.train.recipes import build_optimizer, build_scheduler, get_recipe


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    """A 1000-class timm MobileNet V1 (width 0.25) state dict with trained-looking statistics."""
    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25, activation="relu6")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {k: v.clone() for k, v in export_state_dict(model, "timm").items()}
    path = tmp_path_factory.mktemp("weights") / "mobilenetv1_025.pth"
    torch.save(state, path)
    return str(path), model.state_dict()


def config(weights: str, **changes) -> SimpleNamespace:
    fields = dict(
        model="mobilenet_v1",
        model_hparams={},
        weights=weights,
        num_classes=10,
        variant="cifar",
        freeze_backbone=False,
        lr_backbone=1.0,
        freeze_bn=False,
    )
    return SimpleNamespace(**{**fields, **changes})


def train_steps(model: nn.Module, factor: float = 1.0, steps: int = 3) -> None:
    recipe = get_recipe("cifar", lr=0.05, epochs=1)
    optimizer = build_optimizer(model, recipe)
    scale_backbone_lr(optimizer, model, factor)
    scheduler = build_scheduler(optimizer, recipe, steps)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (8,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def changed(before: dict[str, torch.Tensor], model: nn.Module, prefix: str, *, head: bool):
    return {
        k
        for k, v in model.state_dict().items()
        if k.startswith("classifier") == head
        and k.startswith(prefix)
        and not k.endswith("num_batches_tracked")
        and not torch.equal(v, before[k])
    }


def test_freeze_backbone_trains_only_the_head(imagenet_file):
    path, reference = imagenet_file
    model = create_train_model(
        config(path, freeze_backbone=True), num_classes=10, variant="cifar", resume=False
    )
    assert model.hparams["activation"] == "relu6" and model.num_classes == 10
    start = {k: v.clone() for k, v in model.state_dict().items()}
    backbone = [k for k in reference if not k.startswith("classifier")]
    assert all(torch.equal(start[k], reference[k]) for k in backbone)
    train_steps(model)
    assert changed(start, model, "", head=False) == set()  # weights and BN statistics alike
    assert changed(start, model, "", head=True) == {"classifier.1.weight", "classifier.1.bias"}


def test_full_finetune_trains_the_backbone_and_lr_backbone_scales_it(imagenet_file):
    path, _ = imagenet_file
    model = create_train_model(config(path), num_classes=10, variant="cifar", resume=False)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model)
    assert {"features.0.0.weight", "features.13.pw.0.weight", "features.0.1.running_mean"} <= (
        changed(start, model, "", head=False)
    )
    recipe = get_recipe("cifar", lr=0.05, epochs=1)
    optimizer = build_optimizer(model, recipe)
    scale_backbone_lr(optimizer, model, 0.1)
    scheduler = build_scheduler(optimizer, recipe, 10)
    head = {id(p) for p in head_parameters(model)}
    lrs = {
        ("head" if id(p) in head else "backbone", g["initial_lr"])
        for g in optimizer.param_groups
        for p in g["params"]
    }
    assert lrs == {("head", 0.05), ("backbone", 0.05 * 0.1)}
    optimizer.step()
    scheduler.step()  # the schedule scales both groups alike
    ratios = {round(g["lr"] / g["initial_lr"], 9) for g in optimizer.param_groups}
    assert len(ratios) == 1


def test_freeze_bn_keeps_statistics_but_trains_the_affine_part(imagenet_file):
    path, _ = imagenet_file
    model = create_train_model(
        config(path, freeze_bn=True), num_classes=10, variant="cifar", resume=False
    )
    start = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model)
    moved = changed(start, model, "", head=False)
    assert not any("running_" in k for k in moved)
    assert "features.0.1.bias" in moved and "features.0.0.weight" in moved  # BN affine trains


def test_lr_backbone_conflicts_with_freeze_backbone(tmp_path):
    from lightnets.train.config import TrainConfig

    with pytest.raises(InvalidArgumentError, match="--lr-backbone"):
        TrainConfig(
            model="mobilenet_v1",
            output=str(tmp_path),
            weights="w.pth",
            freeze_backbone=True,
            lr_backbone=0.1,
        ).validate()


TINY = "--dataset synthetic --input-size 16 --train-subset 64 --val-size 32 --batch-size 32 "
TINY += "--epochs 1 --device cpu --model mobilenet_v1"


@pytest.mark.slow
def test_cli_finetune_1000_to_10_classes_freezing_the_backbone(
    imagenet_file, tmp_path, capsys, caplog
):
    path, reference = imagenet_file
    base = [*shlex.split(TINY), "--weights", path]
    # Without --num-classes the 1000-class classifier cannot be kept: one line, exit 2.
    assert main(["train", *base, "--output", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --num-classes 10" in err
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "frozen"
    args = [*base, "--num-classes", "10", "--freeze-backbone", "--output", str(out)]
    # The note is logged on lightnets.weights; capture it there whatever the root logger's state.
    with caplog.at_level(logging.WARNING, logger="lightnets.weights"):
        assert main(["train", *args]) == 0
    assert any("classifier freshly initialised for 10" in r.message for r in caplog.records)
    trained = load_checkpoint(out / "last.pt")
    assert trained["hparams"]["num_classes"] == 10
    assert trained["hparams"]["activation"] == "relu6"
    weights = trained["model"]
    for key, value in reference.items():
        if key.startswith("classifier"):
            assert weights[key].shape[0] == 10
        elif not key.endswith("num_batches_tracked"):
            assert torch.equal(weights[key], value), key


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr-backbone", "0"], "lr_backbone=0.0 is not allowed"),
        (["--freeze-backbone", "--lr-backbone", "0.1"], "--lr-backbone does not apply"),
        (["--num-classes", "7"], "--num-classes 7 differs from the data set's 10 classes"),
    ],
)
def test_bad_finetune_flags_are_one_line_nothing_written(
    imagenet_file, tmp_path, capsys, extra, message
):
    out = tmp_path / "run"
    args = [*shlex.split(TINY), "--weights", imagenet_file[0], *extra, "--output", str(out)]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not out.exists()
