"""One registry: model name -> builder, with every hyperparameter declared and validated.

``create_model`` is the only way users build networks; the builders register themselves with
:func:`register_model`, declaring each hyperparameter (default, allowed values) so that bad
input is refused here with a message that says what is allowed.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightnets.errors import InvalidArgumentError
from lightnets.models.base import LightweightNet

VARIANTS = ("imagenet", "cifar")


@dataclass(frozen=True)
class HParam:
    """Declaration of one hyperparameter of a family.

    ``kind`` is the Python type (``int``, ``float``, ``bool``, ``str``); ``choices`` lists the
    allowed values when the paper defines a finite set; ``positive`` requires a value > 0.
    """

    default: Any
    kind: type
    help: str
    choices: tuple[Any, ...] | None = None
    positive: bool = False

    def validate(self, model: str, name: str, value: Any) -> Any:
        value = self._coerce(model, name, value)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise InvalidArgumentError(
                f"{model}: {name}={value!r} is not supported; allowed: {allowed}"
            )
        if self.positive and not value > 0:
            raise InvalidArgumentError(f"{model}: {name} must be > 0, got {value!r}")
        return value

    def _coerce(self, model: str, name: str, value: Any) -> Any:
        bad = InvalidArgumentError(f"{model}: {name} must be a {self.kind.__name__}, got {value!r}")
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad
            return value
        if isinstance(value, bool):
            raise bad
        if self.kind is float:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad
            return float(value)
        if self.kind is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise bad
            return value
        if not isinstance(value, self.kind):
            raise bad
        return value


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, the paper it implements, and its hyperparameters."""

    name: str
    builder: Callable[..., LightweightNet]
    paper: str
    hparams: dict[str, HParam] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        return {key: spec.default for key, spec in self.hparams.items()}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, paper: str, hparams: dict[str, HParam] | None = None
) -> Callable[[Callable[..., LightweightNet]], Callable[..., LightweightNet]]:
    """Decorator: register ``builder(num_classes=, variant=, **hparams)`` under ``name``."""

    def decorator(builder: Callable[..., LightweightNet]) -> Callable[..., LightweightNet]:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, paper, dict(hparams or {}))
        return builder

    return decorator


def _ensure_loaded() -> None:
    # Importing the family modules runs their @register_model decorators.
    from lightnets.models import (  # noqa: F401
        mobilenet_v1,
        mobilenet_v2,
        shufflenet_v1,
        shufflenet_v2,
        squeezenet,
    )


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise with the closest suggestions."""
    _ensure_loaded()
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InvalidArgumentError(
            f"unknown model {name!r}{hint} (available: {', '.join(sorted(_REGISTRY))})"
        )
    return _REGISTRY[name]


def validate_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidArgumentError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return num_classes


def validate_variant(variant: Any) -> str:
    if variant not in VARIANTS:
        raise InvalidArgumentError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    return variant


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
    validate_num_classes(num_classes)
    validate_variant(variant)
    resolved = resolve_hparams(name, **hparams)
    model = entry.builder(num_classes=num_classes, variant=variant, **resolved)
    model.num_classes = num_classes
    model.hparams = {"name": name, "num_classes": num_classes, "variant": variant, **resolved}
    return model
