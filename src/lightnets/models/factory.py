"""``create_model``: the one way users build networks, from a name and hyperparameters, with
pretrained weights from a file when asked.

Above both :mod:`~lightnets.models.registry` (which builds a family's network with fresh
weights, and which every family imports to register itself) and
:mod:`~lightnets.models.weights` (which reads weights files and needs the registry to build
the network it loads them into), so that neither imports the other.
"""

from __future__ import annotations

from typing import Any

from lightnets.models.base import LightweightNet
from lightnets.models.registry import create_model as build_model

__all__ = ["create_model"]


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
        name: one of :func:`~lightnets.models.list_models`, e.g. ``"shufflenet_v2"``.
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
    return build_model(name, num_classes=num_classes, variant=variant, **hparams)
