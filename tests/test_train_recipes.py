"""Recipes, schedules, parameter groups, EMA and the evaluation arithmetic."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightnets.cli import build_parser
from lightnets.cli.train import config_from_args
from lightnets.errors import InvalidArgumentError
from lightnets.train.ema import ModelEma
from lightnets.train.evaluate import evaluate
from lightnets.train.metrics import topk_correct
from lightnets.train.recipes import (
    RECIPES,
    Recipe,
    build_optimizer,
    build_scheduler,
    default_recipe_name,
    get_recipe,
    parameter_groups,
)


def _lrs(recipe: Recipe, steps_per_epoch: int) -> list[float]:
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, recipe)
    sched = build_scheduler(opt, recipe, steps_per_epoch)
    lrs = []
    for _ in range(recipe.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cifar_recipe_is_the_widely_used_cifar100_recipe():
    r = RECIPES["cifar"]
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
    assert (r.epochs, r.batch_size, r.warmup_epochs) == (200, 128, 1.0)
    assert (r.milestones, r.gamma) == ((0.3, 0.6, 0.8), 0.2)
    assert not r.decay_norm_and_bias
    assert r.warmup_cap == 0.1 and r.effective_warmup_epochs == 1.0 and r.warmup_note() is None


def _factors(recipe: Recipe, steps_per_epoch: int, steps) -> list[float]:
    """The schedule's lr multiplier at ``steps``, from its closed form (no optimiser stepping)."""
    opt = build_optimizer(nn.Linear(2, 2), recipe)
    sched = build_scheduler(opt, recipe, steps_per_epoch)
    return [sched.factor(s) for s in steps]


def test_long_cifar_run_is_the_published_schedule_on_cifar_sized_epochs():
    """200 epochs of 390 steps (50,000 images, batch 128): 1-epoch warm-up, lr 0.1 divided by 5
    at epochs 60, 120 and 160 exactly -- the cap (10% = 20 epochs) leaves it alone."""
    spe = 390
    steps = [0, spe - 2, spe - 1, 60 * spe - 1, 60 * spe, 120 * spe - 1, 120 * spe, 160 * spe]
    factors = _factors(get_recipe("cifar"), spe, [*steps, 200 * spe - 1])
    expected = [1 / spe, (spe - 1) / spe, 1.0, 1.0, 0.2, 0.2, 0.04, 0.008, 0.008]
    assert factors == pytest.approx(expected)


def test_short_cifar_run_warms_up_for_a_tenth_and_anneals_in_four_steps():
    """3 epochs of 10 steps: warm-up min(1 epoch, 10% of 30 steps) = 3 steps; milestones at
    iterations round(30 x 0.3/0.6/0.8) = 9, 18, 24 (on whole epochs they would be 1, 2, 2)."""
    recipe = get_recipe("cifar", epochs=3)
    assert recipe.effective_warmup_epochs == pytest.approx(0.3)
    assert recipe.warmup_note() == (
        "warm-up shortened from 1 to 0.3 epochs: at most 10% of a 3-epoch run (--warmup-cap)"
    )
    lrs = _lrs(recipe, steps_per_epoch=10)
    expected = [0.1 / 3, 0.2 / 3] + [0.1] * 7 + [0.02] * 9 + [0.004] * 6 + [0.0008] * 6
    assert lrs == pytest.approx(expected)


def test_cosine_warmup_longer_than_the_run_is_capped():
    """The issue's case: `--recipe cosine --epochs 3` (5 warm-up epochs) used to end still
    warming up (lr 0.06); now 3 warm-up steps of 30, then the closed-form cosine to 0."""
    recipe = get_recipe("cosine", epochs=3)
    lrs = _lrs(recipe, steps_per_epoch=10)
    assert lrs[:3] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])
    for i in range(3, 30):
        assert lrs[i] == pytest.approx(0.05 * (1 + math.cos(math.pi * (i - 3) / 27)))
    assert lrs[-1] < 0.001
    assert "from 5 to 0.3 epochs" in recipe.warmup_note()
    # warmup_cap=1: the warm-up may fill the whole run, reaching the peak on its last step.
    whole = _lrs(get_recipe("cosine", epochs=3, warmup_cap=1.0), steps_per_epoch=10)
    assert whole == pytest.approx([0.1 * (i + 1) / 30 for i in range(30)])


@pytest.mark.parametrize("epochs", [2, 3, 30, 200])
def test_every_recipe_reaches_its_peak_and_ends_low_at_any_length(epochs):
    for name in RECIPES:
        recipe = get_recipe(name, epochs=epochs)
        lrs = _factors(recipe, 20, range(epochs * 20))
        assert max(lrs) == pytest.approx(1.0), name
        assert lrs[-1] <= 0.01, name
        assert lrs.index(max(lrs)) <= 0.3 * len(lrs), name


def test_default_recipe_is_the_published_one_for_long_runs_and_one_cycle_for_short_ones():
    assert default_recipe_name(None) == default_recipe_name(200) == "cifar"
    assert default_recipe_name(30) == "cifar"
    assert default_recipe_name(29) == default_recipe_name(3) == "onecycle"
    parser = build_parser()
    for flags, name, epochs in (([], "cifar", 200), (["--epochs", "3"], "onecycle", 3)):
        args = parser.parse_args(["train", "--model", "squeezenet1_1", "-o", "r", *flags])
        config, _ = config_from_args(args)
        assert (config.recipe.name, config.recipe.epochs) == (name, epochs)
    # The one-cycle schedule (OneCycleLR's shape): 0.1 / 25 -> 0.1 at 30% -> 0.1 / 25e4.
    lrs = _lrs(get_recipe("onecycle", epochs=3), steps_per_epoch=10)
    assert (lrs[0], lrs[9], lrs[-1]) == pytest.approx((0.1 / 25, 0.1, 0.1 / 25 / 1e4))


def test_checkpoints_from_before_the_cap_resume_uncapped():
    data = get_recipe("cosine", epochs=3).to_dict()
    del data["warmup_cap"]
    assert Recipe.from_dict(data).warmup_cap == 1.0


def test_step_schedule_warms_up_per_iteration_then_divides_by_5_at_30_60_80_percent():
    lrs = _lrs(get_recipe("cifar", epochs=10), steps_per_epoch=4)
    # Warm-up over the first epoch's 4 iterations: 0.025, 0.05, 0.075, 0.1.
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    per_epoch = [lrs[4 * e] for e in range(10)]
    assert per_epoch == pytest.approx([0.025, 0.1, 0.1, 0.02, 0.02, 0.02, 0.004, 0.004, 8e-4, 8e-4])
    # 200 epochs: milestones at epochs 60, 120, 160.
    lrs = _lrs(get_recipe("cifar"), steps_per_epoch=1)
    assert (lrs[59], lrs[60], lrs[119], lrs[120], lrs[159], lrs[160]) == pytest.approx(
        (0.1, 0.02, 0.02, 0.004, 0.004, 8e-4)
    )


def test_cosine_schedule():
    recipe = get_recipe("cosine", epochs=4, warmup_epochs=1, min_lr=0.001, warmup_cap=0.25)
    lrs = _lrs(recipe, steps_per_epoch=2)
    assert lrs[:2] == pytest.approx([0.05, 0.1])
    for i in range(2, 8):
        t = (i - 2) / 6
        assert lrs[i] == pytest.approx(0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * t)))


def test_onecycle_schedule_rises_then_anneals():
    lrs = _lrs(get_recipe("onecycle", epochs=10, lr=0.4), steps_per_epoch=10)
    peak = lrs.index(max(lrs))
    assert peak == 30 and lrs[peak] == pytest.approx(0.4)
    assert lrs[0] == pytest.approx(0.4 / 25)
    assert all(a <= b for a, b in itertools.pairwise(lrs[:31]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[30:]))
    assert lrs[-1] == pytest.approx(0.4 / 25 / 1e4)


def test_scheduler_state_is_plain_data_and_restores():
    recipe = get_recipe("cosine", epochs=3)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, recipe)
    sched = build_scheduler(opt, recipe, 5)
    for _ in range(7):
        opt.step()
        sched.step()
    buffer = io.BytesIO()
    torch.save({"s": sched.state_dict(), "o": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    opt2 = build_optimizer(model, recipe)
    opt2.load_state_dict(saved["o"])
    sched2 = build_scheduler(opt2, recipe, 5)
    sched2.restore(saved["s"], recipe, 5)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_no_weight_decay_on_batchnorm_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = parameter_groups(model, 5e-4, decay_norm_and_bias=False)
    assert [p.shape for p in decay["params"]] == [(4, 3, 3, 3), (2, 4)]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 4
    (everything,) = parameter_groups(model, 5e-4, decay_norm_and_bias=True)
    assert len(everything["params"]) == 6 and everything["weight_decay"] == 5e-4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": float("nan")}, "lr must be > 0"),
        ({"batch_size": 0}, "batch size"),
        ({"momentum": 1.0}, "momentum"),
        ({"milestones": (0.6, 0.3)}, "milestones"),
        ({"label_smoothing": 1.0}, "label smoothing"),
        ({"clip_grad": 0.0}, "clipping"),
        ({"warmup_cap": 1.5}, "warm-up cap must be a fraction"),
        ({"nesterov": True, "momentum": 0.0}, "nesterov"),
        ({"colour": 1}, "unknown recipe field colour"),
    ],
)
def test_recipe_validation(overrides, message):
    with pytest.raises(InvalidArgumentError, match=message):
        get_recipe("cifar", **overrides)


def test_unknown_recipe():
    with pytest.raises(InvalidArgumentError, match="allowed: cifar, cosine, onecycle"):
        get_recipe("fast")


def test_recipe_round_trips_through_plain_data():
    recipe = get_recipe("cosine", epochs=7, ema_decay=0.99, milestones=[0.5])
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_ema_update_is_the_exponential_moving_average():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = ModelEma(model, decay=0.75)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # moves the BN running statistics and its counter
    ema.update(model)
    for key, value in model.state_dict().items():
        got = ema.module.state_dict()[key]
        if value.is_floating_point():
            torch.testing.assert_close(got, 0.75 * start[key] + 0.25 * value)
        else:
            assert torch.equal(got, value)


def test_topk_correct_counts_and_caps_k_at_the_class_count():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    targets = torch.tensor([2, 0, 0])
    top1, top2, top5 = topk_correct(logits, targets, (1, 2, 5))
    assert (top1.item(), top2.item(), top5.item()) == (1, 2, 3)


def test_evaluate_matches_a_direct_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7))
    images, labels = torch.randn(50, 3, 2, 2), torch.randint(0, 7, (50,))
    batches = [(images[i : i + 16], labels[i : i + 16]) for i in range(0, 50, 16)]
    result = evaluate(model, batches, num_classes=7, device=torch.device("cpu"), per_class=True)
    with torch.no_grad():
        logits = model(images)
    assert result.images == 50
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert result.top1 == (logits.argmax(1) == labels).sum().item() / 50
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    assert result.top5 == pytest.approx(top5)
    for c in range(7):
        mask = labels == c
        expected = (logits[mask].argmax(1) == c).float().mean().item() if mask.any() else math.nan
        assert result.per_class[c] == pytest.approx(expected, nan_ok=True)
