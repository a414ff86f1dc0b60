"""One registry: model name -> builder, with every hyperparameter declared and validated.

``create_model`` is the only way users build networks. Each family module registers its
builder with :func:`register_model` when it is imported (``lightnets.models`` imports them all,
as torchvision and timm do), declaring each hyperparameter (default, allowed values or range) so
that bad input is refused here with a message that says what is allowed. This module imports no
family.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightnets.errors import InvalidArgumentError, check_float, check_int
from lightnets.models.base import VARIANTS, LightweightNet, validate_variant

__all__ = ["VARIANTS", "HParam", "ModelEntry", "create_model", "list_models", "register_model"]


@dataclass(frozen=True)
class HParam:
    """Declaration of one hyperparameter of a family.

    ``kind`` is the Python type (``int``, ``float``, ``bool``, ``str``); ``choices`` lists the
    allowed values when the paper defines a finite set; ``minimum`` / ``maximum`` bound numbers
    (strictly when ``exclusive_minimum`` / ``exclusive_maximum``).
    """

    default: Any
    kind: type
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False

    @property
    def positive(self) -> bool:
        """True when the range is "> 0" (reported by ``lightnets models``)."""
        return self.minimum == 0 and self.exclusive_minimum and self.maximum is None

    def validate(self, model: str, name: str, value: Any) -> Any:
        """``value`` checked against the kind, range and choices; else InvalidArgumentError."""
        label = f"{model}: {name}"
        value = _COERCE[self.kind](self, label, value)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise InvalidArgumentError(f"{label}={value!r} is not supported; allowed: {allowed}")
        return value


def _coerce_float(spec: HParam, label: str, value: Any) -> float:
    return check_float(
        label,
        value,
        minimum=spec.minimum,
        maximum=spec.maximum,
        exclusive_minimum=spec.exclusive_minimum,
        exclusive_maximum=spec.exclusive_maximum,
    )


def _coerce_int(spec: HParam, label: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 from a JSON file or a YAML config is the integer 3
    minimum, maximum = spec.minimum, spec.maximum
    if minimum is not None and spec.exclusive_minimum:
        minimum += 1
    if maximum is not None and spec.exclusive_maximum:
        maximum -= 1
    return check_int(label, value, minimum=minimum, maximum=maximum)


def _coerce_exact(kind: type, what: str) -> Callable[[HParam, str, Any], Any]:
    def coerce(spec: HParam, label: str, value: Any) -> Any:
        if not isinstance(value, kind):
            raise InvalidArgumentError(f"{label}={value!r} is not allowed; use {what}")
        return value

    return coerce


#: How each kind of hyperparameter is checked (``bool`` is not an ``int`` here).
_COERCE: dict[type, Callable[[HParam, str, Any], Any]] = {
    float: _coerce_float,
    int: _coerce_int,
    bool: _coerce_exact(bool, "a bool (True or False)"),
    str: _coerce_exact(str, "a string"),
}


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, the paper it implements, its hyperparameters, and the
    training defaults measured for it.

    ``recipe_defaults`` maps a training recipe's name (``lightnets.train.recipes.RECIPES``) to
    plain values of its fields (``{"onecycle": {"lr": 0.04}}``) that this family trains with
    instead of the recipe's own, like the per-model recipes of torchvision's and timm's
    references; ``lightnets.train.recipes`` reads them (models do not import train).
    """

    name: str
    builder: Callable[..., LightweightNet]
    paper: str
    hparams: dict[str, HParam] = field(default_factory=dict)
    recipe_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        return {key: spec.default for key, spec in self.hparams.items()}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    paper: str,
    hparams: dict[str, HParam] | None = None,
    recipe_defaults: dict[str, dict[str, Any]] | None = None,
) -> Callable[[Callable[..., LightweightNet]], Callable[..., LightweightNet]]:
    """Decorator: register ``builder(num_classes, variant, **hparams)`` under ``name``.

    ``builder`` is a family's class (or a function returning one) called with the validated
    hyperparameters; the decorator returns it unchanged. ``recipe_defaults``: see
    :class:`ModelEntry`.
    """

    def decorator(builder: Callable[..., LightweightNet]) -> Callable[..., LightweightNet]:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        defaults = {recipe: dict(values) for recipe, values in (recipe_defaults or {}).items()}
        _REGISTRY[name] = ModelEntry(name, builder, paper, dict(hparams or {}), defaults)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise with the closest suggestions."""
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidArgumentError(
            f"unknown model {name!r}{hint} (available: {', '.join(sorted(_REGISTRY))})"
        )
    return _REGISTRY[name]


def resolve_hparams(name: str, **hparams: Any) -> dict[str, Any]:
    """Validate ``hparams`` for model ``name`` and fill in defaults."""
    entry = get_model_entry(name)
    unknown = sorted(set(hparams) - set(entry.hparams))
    if unknown:
        allowed = ", ".join(entry.hparams) or "none"
        raise InvalidArgumentError(
            f"{name}: unknown hyperparameter {', '.join(unknown)}; allowed: {allowed}"
        )
    resolved = entry.defaults
    for key, value in hparams.items():
        resolved[key] = entry.hparams[key].validate(name, key, value)
    return resolved


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    variant: str | None = None,
    weights: Any = None,
    **hparams: Any,
) -> LightweightNet:
    """Build a registered model.

    Args:
        name: one of :func:`list_models`, e.g. ``"shufflenet_v2"``.
        num_classes: size of the classifier output (default 1000, or the classifier of
            ``weights``; another size than the file's starts a fresh classifier).
        variant: ``"imagenet"`` (default: the paper's network for 224x224 inputs, total stride
            32) or ``"cifar"`` (stem without stride or max-pool, for 32x32 inputs).
        weights: a weights file to load (lightnets checkpoint or safetensors, torchvision or timm
            state dict; see :mod:`lightnets.models.weights`). Hyperparameters not given are
            taken from the file.
        **hparams: the family's hyperparameters (``width_mult``, ``groups``, ...); see
            ``get_model_entry(name).hparams``.

    Returns:
        The model, with ``model.hparams`` set so that ``create_model(**model.hparams)`` rebuilds it.
    """
    if weights is not None:
        from lightnets.models.weights import create_pretrained

        return create_pretrained(name, weights, num_classes=num_classes, variant=variant, **hparams)
    num_classes = 1000 if num_classes is None else num_classes
    variant = "imagenet" if variant is None else variant
    entry = get_model_entry(name)
    check_int("num_classes", num_classes, minimum=1)
    validate_variant(variant)
    resolved = resolve_hparams(name, **hparams)
    model = entry.builder(num_classes=num_classes, variant=variant, **resolved)
    model.num_classes = num_classes
    model.hparams = {"name": name, "num_classes": num_classes, "variant": variant, **resolved}
    return model
