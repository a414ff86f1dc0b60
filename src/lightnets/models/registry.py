"""One registry: model name -> builder, with every hyperparameter declared and validated.

``create_model`` (:mod:`~lightnets.models.factory`, which adds ``weights=``) is the only way
users build networks. Each family module registers its builder with :func:`register_model` when
it is imported (``lightnets.models`` imports them all, as torchvision and timm do), declaring
each hyperparameter (default, allowed values or range) so that bad input is refused here with a
message that says what is allowed, and the family's facts (:mod:`.facts`: classifier, weight
layouts, paper figures, plot style), which the rest of lightnets reads from the entry. This
module imports no family, and no weights reader.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightnets.errors import InvalidArgumentError, check_float, check_int
from lightnets.models.base import VARIANTS, LightweightNet, validate_variant
from lightnets.models.facts import PaperFigure, PlotStyle

__all__ = [
    "VARIANTS",
    "HParam",
    "ModelEntry",
    "create_model",
    "list_models",
    "model_entries",
    "register_model",
    "unregister_model",
]


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
    # The integer bounds of the declared (possibly exclusive) range.
    minimum = maximum = None
    if spec.minimum is not None:
        low = spec.minimum
        minimum = math.floor(low) + 1 if spec.exclusive_minimum else math.ceil(low)
    if spec.maximum is not None:
        high = spec.maximum
        maximum = math.ceil(high) - 1 if spec.exclusive_maximum else math.floor(high)
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


#: The weight layout every family accepts: lightnets' own names.
OWN_LAYOUT = "lightnets"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, the paper it implements, its hyperparameters, and the
    facts every other part of lightnets reads about it (:mod:`.facts`).

    ``classifier``: the module replaced when the number of classes changes (fine-tuning, a
    pretrained file with other classes). ``layouts``: the weight layouts whose files it loads
    (``lightnets.models.weights.layouts``), each with the hyperparameters that library's
    network has (``{"torchvision": {"bypass": "none"}}``); its own layout always.
    ``paper_figures``: the paper's ImageNet figures, one per configuration; ``paper_hparams``:
    what every one of them assumes besides its own key (SqueezeNet's are of the network without
    bypass or BatchNorm). ``plot_style``: its markers in figures. ``compare_configs``: the
    configurations ``lightnets compare`` shows by default (hyperparameters that differ from the
    defaults), the family's place in that list being its place in the registry.
    ``recipe_defaults``: the training defaults measured for it, a training recipe's name
    (``lightnets.train.recipes.RECIPES``) mapped to plain values of its fields
    (``{"onecycle": {"lr": 0.04}}``) that this family trains with instead of the recipe's own,
    like the per-model recipes of torchvision's and timm's references, or to values of its own
    hyperparameters that runs of that recipe build the model with (``{"batch_norm": True}``);
    ``lightnets.train.recipes`` reads them (models do not import train).
    """

    name: str
    builder: Callable[..., LightweightNet]
    paper: str
    hparams: dict[str, HParam] = field(default_factory=dict)
    classifier: str = field(kw_only=True)
    layouts: dict[str, dict[str, Any]] = field(kw_only=True, default_factory=dict)
    paper_figures: tuple[PaperFigure, ...] = field(kw_only=True, default=())
    paper_hparams: dict[str, Any] = field(kw_only=True, default_factory=dict)
    plot_style: PlotStyle | None = field(kw_only=True, default=None)
    compare_configs: tuple[dict[str, Any], ...] = field(kw_only=True, default=({},))
    recipe_defaults: dict[str, dict[str, Any]] = field(kw_only=True, default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        return {key: spec.default for key, spec in self.hparams.items()}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    paper: str,
    hparams: dict[str, HParam] | None = None,
    classifier: str,
    layouts: dict[str, dict[str, Any]] | None = None,
    paper_figures: Sequence[PaperFigure] = (),
    paper_hparams: dict[str, Any] | None = None,
    plot_style: PlotStyle | None = None,
    compare_configs: Sequence[dict[str, Any]] = ({},),
    recipe_defaults: dict[str, dict[str, Any]] | None = None,
) -> Callable[[Callable[..., LightweightNet]], Callable[..., LightweightNet]]:
    """Decorator: register ``builder(num_classes, variant, **hparams)`` under ``name``.

    ``builder`` is a family's class (or a function returning one) called with the validated
    hyperparameters; the decorator returns it unchanged. The other arguments are the family's
    facts (:class:`ModelEntry`); the hyperparameters they name are checked against ``hparams``
    here, so a typo fails at import, not in a figure.
    """

    def decorator(builder: Callable[..., LightweightNet]) -> Callable[..., LightweightNet]:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        entry = ModelEntry(
            name,
            builder,
            paper,
            dict(hparams or {}),
            classifier=classifier,
            layouts={OWN_LAYOUT: {}, **{k: dict(v) for k, v in (layouts or {}).items()}},
            paper_figures=tuple(paper_figures),
            paper_hparams=dict(paper_hparams or {}),
            plot_style=plot_style,
            compare_configs=tuple(dict(config) for config in compare_configs),
            recipe_defaults={k: dict(v) for k, v in (recipe_defaults or {}).items()},
        )
        _check_facts(entry)
        _REGISTRY[name] = entry
        return builder

    return decorator


def _check_facts(entry: ModelEntry) -> None:
    """Every hyperparameter a fact names must be one of the family's (a programming error)."""
    known = {"num_classes", "variant", *entry.hparams}
    named = [
        *(key for required in entry.layouts.values() for key in required),
        *(key for figure in entry.paper_figures for key, _ in figure.hparams),
        *entry.paper_hparams,
        *(key for config in entry.compare_configs for key in config),
    ]
    unknown = sorted(set(named) - known)
    if unknown:
        raise RuntimeError(
            f"{entry.name}'s facts name unknown hyperparameters: {', '.join(unknown)}"
        )
    strangers = [f.name for f in entry.paper_figures if f.name != entry.name]
    if strangers:
        raise RuntimeError(f"{entry.name} declares a paper figure of {strangers[0]}")


def unregister_model(name: str) -> None:
    """Remove ``name`` from the registry (a test's or a plug-in's own family; unknown: no-op)."""
    _REGISTRY.pop(name, None)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def model_entries() -> list[ModelEntry]:
    """Every registered entry, in registration order: the zoo's order (``lightnets.models``
    imports the families in it), in which ``compare`` lists them and figures' legends show them."""
    return list(_REGISTRY.values())


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
    **hparams: Any,
) -> LightweightNet:
    """Build a registered model from its hyperparameters, with fresh weights.

    :func:`lightnets.models.create_model` is this with ``weights=FILE`` besides (the weights
    readers sit above the registry, which the families import).

    Args:
        name: one of :func:`list_models`, e.g. ``"shufflenet_v2"``.
        num_classes: size of the classifier output (default 1000).
        variant: ``"imagenet"`` (default: the paper's network for 224x224 inputs, total stride
            32) or ``"cifar"`` (stem without stride or max-pool, for 32x32 inputs).
        **hparams: the family's hyperparameters (``width_mult``, ``groups``, ...); see
            ``get_model_entry(name).hparams``.

    Returns:
        The model, with ``model.hparams`` set so that ``create_model(**model.hparams)`` rebuilds it.
    """
    num_classes = 1000 if num_classes is None else num_classes
    variant = "imagenet" if variant is None else variant
    entry = get_model_entry(name)
    check_int("num_classes", num_classes, minimum=1)
    validate_variant(variant)
    resolved = resolve_hparams(name, **hparams)
    model = entry.builder(num_classes=num_classes, variant=variant, **resolved)
    model.hparams = {"name": name, "num_classes": num_classes, "variant": variant, **resolved}
    return model
