"""Training recipes as data: optimiser, learning-rate schedule and regularisation in one record.

``cifar`` is the recipe behind the CIFAR-100 figures widely reported for these networks
(SGD with momentum 0.9, lr 0.1, weight decay 5e-4, lr x0.2 at 30%/60%/80% of 200 epochs,
batch 128, one warm-up epoch). ``cosine`` is a linear warm-up followed by cosine annealing
(Loshchilov & Hutter, SGDR, Section 3, without restarts). ``onecycle`` is Smith & Topin's
one-cycle policy (Super-Convergence, Section 3): the lr rises from lr/div_factor to lr over
the first ``pct_start`` of training, then anneals to lr/(div_factor*final_div_factor), both by
cosine, as in ``torch.optim.lr_scheduler.OneCycleLR`` (momentum is not cycled).

Every schedule steps once per iteration and its whole state is the iteration counter, so it
resumes exactly from a checkpoint. The same recipe holds for short and long runs: the warm-up
lasts ``warmup_epochs`` but at most ``warmup_cap`` (10%) of the run, and step milestones fall on
iterations, so a 200-epoch run gets the published schedule (1-epoch warm-up, lr / 5 at epochs
60, 120, 160) and a 3-epoch run a 0.3-epoch warm-up and four lr levels, not a warm-up that
outlasts the run (``cosine``'s 5 epochs) or milestones rounded onto the same epoch.

``finetune`` is the default for a run that starts from pretrained weights (``--weights``): a
lower lr and a cosine schedule, so that the fresh classifier's first large gradients do not
wreck the loaded backbone.

A recipe's values are defaults: :func:`resolve_recipe` applies, in order, the recipe's own
values, the model family's ``recipe_defaults`` for that recipe (measured per family and declared
on its registry entry, beside its builder: SqueezeNet, without BatchNorm, needs a lower lr) and
the values the user gave, which always win. A family's defaults may also name one of its model
hyperparameters (SqueezeNet's short runs train ``batch_norm=True``): the user's flag wins there
too, and the first line of ``train`` says it like every other family value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from lightnets.errors import InvalidArgumentError
from lightnets.models.registry import get_model_entry

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "onecycle")
#: Without ``--recipe``: the published recipe for runs of SHORT_RUN_EPOCHS epochs or more (its
#: own default is 200), the one-cycle policy -- designed for short budgets -- for shorter runs.
DEFAULT_RECIPE = "cifar"
SHORT_RUN_RECIPE = "onecycle"
SHORT_RUN_EPOCHS = 30
#: Without ``--recipe``, a run starting from pretrained weights (``--weights``), of any length.
FINETUNE_RECIPE = "finetune"


@dataclass(frozen=True)
class Recipe:
    """Every hyperparameter of a training run that is not the model or the data."""

    name: str
    epochs: int = 200
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    #: Apply weight decay to BatchNorm parameters and biases too (off by default: decaying them
    #: only shrinks the scale of normalised activations, see Goyal et al. 2017, Section 5.1).
    decay_norm_and_bias: bool = False
    schedule: str = "step"
    warmup_epochs: float = 1.0
    #: The warm-up lasts at most this fraction of the run, so a short run leaves it (a 5-epoch
    #: warm-up in a 3-epoch run would never reach the peak lr).
    warmup_cap: float = 0.1
    #: ``step`` schedule: the lr is multiplied by ``gamma`` at these fractions of the epochs.
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8)
    gamma: float = 0.2
    #: ``cosine`` schedule: the lr it anneals to.
    min_lr: float = 0.0
    #: ``onecycle`` schedule (OneCycleLR's parameters).
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    label_smoothing: float = 0.0
    clip_grad: float | None = None
    ema_decay: float | None = None

    def replace(self, **overrides: Any) -> Recipe:
        """A copy with ``overrides`` applied (``None`` values leave a field as it is)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InvalidArgumentError(
                f"unknown recipe field {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
            )
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "milestones" in changes:
            changes["milestones"] = tuple(float(m) for m in changes["milestones"])
        return dataclasses.replace(self, **changes).validate()

    def validate(self) -> Recipe:
        """This recipe, after checking every field against :data:`_CHECKS` (in table order)."""
        for field, test, template in _CHECKS:
            value = getattr(self, field)
            if not test(value, self):
                shown = list(value) if isinstance(value, (list, tuple)) else value
                raise InvalidArgumentError(template.format(value=value, shown=shown))
        return self

    @property
    def effective_warmup_epochs(self) -> float:
        """The warm-up this run gets: ``warmup_epochs``, at most ``warmup_cap`` of the run."""
        return min(self.warmup_epochs, self.warmup_cap * self.epochs)

    def warmup_note(self) -> str | None:
        """One line saying that the warm-up was capped, or ``None`` when it was not."""
        if self.schedule == "onecycle" or self.effective_warmup_epochs >= self.warmup_epochs:
            return None
        return (
            f"warm-up shortened from {self.warmup_epochs:g} to "
            f"{self.effective_warmup_epochs:g} epochs: at most {100 * self.warmup_cap:g}% of "
            f"a {self.epochs}-epoch run (--warmup-cap)"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples) for checkpoints and JSON."""
        data = dataclasses.asdict(self)
        data["milestones"] = list(self.milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["milestones"] = tuple(kwargs.get("milestones", ()))
        kwargs.setdefault("warmup_cap", 1.0)  # saved before the cap existed: uncapped
        return cls(**kwargs).validate()


#: Largest learning rate accepted: far above any useful rate (the papers' largest is 0.1 per
#: 256 images; 1e6 diverges in the first step, which the NaN guard reports), far below
#: float32's range (3.4e38), which the optimiser casts lr to: lr 1e308 crashed inside the step.
MAX_LR = 1e9


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value: Any, _: Recipe) -> bool:
    return isinstance(value, int) and value >= 1


#: :meth:`Recipe.validate`'s checks, in order: (field, test of (value, recipe), message; the
#: message gets ``value`` and ``shown``, the value with a sequence shown as a list).
_CHECKS: tuple[tuple[str, Callable[[Any, Recipe], bool], str], ...] = (
    ("epochs", _positive_int, "epochs must be an integer >= 1, got {value!r}"),
    ("batch_size", _positive_int, "batch size must be an integer >= 1, got {value!r}"),
    (
        "lr",
        lambda v, r: _finite(v) and 0 < v <= MAX_LR,
        "lr must be > 0 and at most " + f"{MAX_LR:g}" + ", got {value!r}",
    ),
    (
        "optimizer",
        lambda v, r: v in OPTIMIZERS,
        "unknown optimizer {value!r}; allowed: " + ", ".join(OPTIMIZERS),
    ),
    (
        "schedule",
        lambda v, r: v in SCHEDULES,
        "unknown schedule {value!r}; allowed: " + ", ".join(SCHEDULES),
    ),
    (
        "momentum",
        lambda v, r: _finite(v) and 0 <= v < 1,
        "momentum must be in [0, 1), got {value!r}",
    ),
    ("nesterov", lambda v, r: not v or r.momentum > 0, "nesterov needs a momentum > 0"),
    (
        "weight_decay",
        lambda v, r: _finite(v) and v >= 0,
        "weight decay must be >= 0, got {value!r}",
    ),
    (
        "warmup_epochs",
        lambda v, r: _finite(v) and v >= 0,
        "warm-up epochs must be >= 0, got {value!r}",
    ),
    (
        "warmup_cap",
        lambda v, r: _finite(v) and 0 <= v <= 1,
        "warm-up cap must be a fraction of the run in [0, 1], got {value!r}",
    ),
    (
        "milestones",
        lambda v, r: all(_finite(m) and 0 < m < 1 for m in v) and list(v) == sorted(v),
        "milestones must be increasing fractions in (0, 1), got {shown}",
    ),
    ("gamma", lambda v, r: _finite(v) and 0 < v <= 1, "gamma must be in (0, 1], got {value!r}"),
    (
        "min_lr",
        lambda v, r: _finite(v) and 0 <= v < r.lr,
        "min lr must be in [0, lr), got {value!r}",
    ),
    (
        "pct_start",
        lambda v, r: _finite(v) and 0 < v < 1,
        "pct_start must be in (0, 1), got {value!r}",
    ),
    ("div_factor", lambda v, r: _finite(v) and v >= 1, "div_factor must be >= 1, got {value!r}"),
    (
        "final_div_factor",
        lambda v, r: _finite(v) and v >= 1,
        "final_div_factor must be >= 1, got {value!r}",
    ),
    (
        "label_smoothing",
        lambda v, r: _finite(v) and 0 <= v < 1,
        "label smoothing must be in [0, 1), got {value!r}",
    ),
    (
        "clip_grad",
        lambda v, r: v is None or (_finite(v) and v > 0),
        "gradient clipping norm must be > 0, got {value!r}",
    ),
    (
        "ema_decay",
        lambda v, r: v is None or (_finite(v) and 0 < v < 1),
        "EMA decay must be in (0, 1), got {value!r}",
    ),
)


RECIPES: dict[str, Recipe] = {
    "cifar": Recipe(name="cifar"),
    "cosine": Recipe(name="cosine", schedule="cosine", warmup_epochs=5.0, nesterov=True),
    "onecycle": Recipe(
        name="onecycle", schedule="onecycle", epochs=30, warmup_epochs=0.0, nesterov=True
    ),
    # Measured on two pretrained backbones (benchmarks/pretrained_finetune.py, docs/training.md):
    # lr 0.03 was best or within a point of the best, frozen or not, without the loss spikes
    # of lr 0.1 (the one-cycle default before: mean top-1 11 points lower fully fine-tuned).
    "finetune": Recipe(
        name="finetune", schedule="cosine", epochs=15, lr=0.03, warmup_epochs=0.0, nesterov=True
    ),
}


def default_recipe_name(epochs: int | None = None, *, pretrained: bool = False) -> str:
    """The recipe a run of ``epochs`` epochs gets without ``--recipe`` (None: the recipe's own);
    ``pretrained``: the run starts from pretrained weights (``--weights``).

    A step schedule tuned for 200 epochs spends a 3-epoch run in a few coarse lr levels: issue 9
    measured 76.4% for it against 81.0% for the one-cycle recipe (ShuffleNet V2 0.5x, 3 epochs,
    10k Fashion-MNIST images; a plain OneCycleLR(max_lr=0.2) loop: 84.3%). Long runs keep the
    published recipe; the 30-epoch threshold is the one-cycle recipe's own length, not measured.
    """
    if pretrained:
        return FINETUNE_RECIPE
    if epochs is not None and epochs < SHORT_RUN_EPOCHS:
        return SHORT_RUN_RECIPE
    return DEFAULT_RECIPE


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """The named recipe with ``overrides`` applied (``None`` values are ignored)."""
    if name not in RECIPES:
        raise InvalidArgumentError(f"unknown recipe {name!r}; allowed: {', '.join(RECIPES)}")
    return RECIPES[name].replace(**overrides)


@dataclass(frozen=True)
class ResolvedRecipe:
    """A run's recipe and where its values came from (said in the first line of ``train``)."""

    recipe: Recipe
    model: str
    #: Why the recipe was picked when ``--recipe`` was not given (None: it was given).
    picked_because: str | None
    #: The values taken from the family's ``recipe_defaults`` (those the user did not give).
    family_defaults: dict[str, Any]
    #: Of those, the model hyperparameters (the rest are recipe fields): the run builds its
    #: model with them unless the user gave them.
    model_hparams: dict[str, Any] = dataclasses.field(default_factory=dict)

    def describe(self, flag: Callable[[str], str] = lambda field: field) -> str:
        """``onecycle (fewer than 30 epochs; squeezenet1_1's defaults: --lr 0.04)``, with each
        field named by ``flag`` (its command-line flag, for ``train``)."""
        reasons = [self.picked_because] if self.picked_because else []
        if self.family_defaults:
            values = " ".join(_flag_value(flag(k), v) for k, v in self.family_defaults.items())
            reasons.append(f"{self.model}'s defaults: {values}")
        return self.recipe.name + (f" ({'; '.join(reasons)})" if reasons else "")


def _flag_value(flag: str, value: Any) -> str:
    # A boolean reads as the flag itself: --batch-norm, --no-batch-norm.
    if isinstance(value, bool):
        return flag if value else flag.replace("--", "--no-", 1)
    return f"{flag} {_plain(value)}"


def _plain(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_plain(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolve_recipe(
    model: str,
    name: str | None = None,
    *,
    pretrained: bool = False,
    model_hparams: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> ResolvedRecipe:
    """The recipe a run of ``model`` trains with, as ``lightnets train`` resolves it.

    ``name`` None picks :func:`default_recipe_name` of ``overrides["epochs"]`` and
    ``pretrained`` (the run starts from ``--weights``). The recipe's values are then replaced by
    ``model``'s family defaults for that recipe (its registry entry's ``recipe_defaults``), and
    those by ``overrides`` (the user's values, ``None`` meaning "not given"), which always win.
    A family default naming a model hyperparameter lands in ``model_hparams`` of the result
    unless the user's ``model_hparams`` give it.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    given_hparams = {k: v for k, v in (model_hparams or {}).items() if v is not None}
    picked_because = None
    if name is None:
        name = default_recipe_name(given.get("epochs"), pretrained=pretrained)
        if pretrained:
            picked_because = "the default with --weights"
        elif name == SHORT_RUN_RECIPE:
            picked_because = f"the default below {SHORT_RUN_EPOCHS} epochs"
    base = get_recipe(name)
    entry = get_model_entry(model)
    family = entry.recipe_defaults.get(name, {})
    fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(family) - fields - set(entry.hparams)
    if unknown:  # a registry mistake, not the user's: say which family declared it
        raise ValueError(
            f"{model}'s recipe_defaults[{name!r}] name {sorted(unknown)}: neither recipe fields "
            "nor its hyperparameters"
        )
    unset = {
        key: value
        for key, value in family.items()
        if key not in (given if key in fields else given_hparams)
    }
    recipe_values = {key: value for key, value in unset.items() if key in fields}
    recipe = base.replace(**{**recipe_values, **given})
    hparams = {key: value for key, value in unset.items() if key not in fields}
    return ResolvedRecipe(recipe, model, picked_because, unset, hparams)


def parameter_groups(
    model: nn.Module, weight_decay: float, decay_norm_and_bias: bool
) -> list[dict]:
    """Split parameters into a decayed group and an undecayed one (BatchNorm and biases).

    Every parameter with fewer than two dimensions is a BatchNorm scale/shift or a bias.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 and not decay_norm_and_bias:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = parameter_groups(model, recipe.weight_decay, recipe.decay_norm_and_bias)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov
        )
    return torch.optim.AdamW(groups, lr=recipe.lr)


class RecipeSchedule(LRScheduler):
    """The recipe's learning rate as a closed-form function of the iteration number.

    ``last_epoch`` counts optimiser steps (torch's name, kept so the base class works). Its state
    is plain numbers, so it is saved in checkpoints and reloaded with ``weights_only=True``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        recipe: Recipe,
        steps_per_epoch: int,
        last_epoch: int = -1,
    ) -> None:
        self.configure(recipe, steps_per_epoch)
        super().__init__(optimizer, last_epoch)

    def configure(self, recipe: Recipe, steps_per_epoch: int) -> None:
        """Set the schedule's shape from ``recipe`` (also after loading a saved state)."""
        if steps_per_epoch < 1:
            raise InvalidArgumentError(
                "the training set gives no full batch: lower --batch-size or use more images"
            )
        self.schedule = recipe.schedule
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = recipe.epochs * steps_per_epoch
        self.warmup_steps = min(
            round(recipe.warmup_epochs * steps_per_epoch),
            math.floor(recipe.warmup_cap * self.total_steps),
        )
        # Milestones fall on iterations, not epoch boundaries, so that a 3-epoch run anneals in
        # four steps too (on whole epochs 30% and 60% of 3 would both round to 1 and 2).
        self.milestone_steps = [round(m * self.total_steps) for m in recipe.milestones]
        self.gamma = recipe.gamma
        self.min_factor = recipe.min_lr / recipe.lr
        self.pct_start = recipe.pct_start
        self.div_factor = recipe.div_factor
        self.final_div_factor = recipe.final_div_factor

    def restore(self, state: dict[str, Any], recipe: Recipe, steps_per_epoch: int) -> None:
        """Load a saved state, keep ``recipe``'s shape, and set the optimiser's lr to match."""
        self.load_state_dict(state)
        self.configure(recipe, steps_per_epoch)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs

    def factor(self, step: int) -> float:
        """Multiplier of the peak lr at iteration ``step`` (0-based)."""
        if self.schedule == "onecycle":
            rise = max(1, round(self.pct_start * self.total_steps))
            start = 1.0 / self.div_factor
            end = start / self.final_div_factor
            if step < rise:
                return _cosine(start, 1.0, step / rise)
            fall = max(1, self.total_steps - 1 - rise)  # the last step takes the final lr
            return _cosine(1.0, end, min(1.0, (step - rise) / fall))
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "step":
            passed = sum(step >= m for m in self.milestone_steps)
            return self.gamma**passed
        span = max(1, self.total_steps - self.warmup_steps)
        return _cosine(1.0, self.min_factor, min(1.0, (step - self.warmup_steps) / span))

    def get_lr(self) -> list[float | torch.Tensor]:  # LRScheduler's signature; floats here
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


def _cosine(start: float, end: float, t: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(
    optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int
) -> RecipeSchedule:
    return RecipeSchedule(optimizer, recipe, steps_per_epoch)
