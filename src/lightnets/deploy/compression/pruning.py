"""Magnitude pruning of convolution and linear weights (Deep Compression, Section 2).

Han, Pool, Tran & Dally, NeurIPS 2015, and Deep Compression (ICLR 2016,
https://www.arxiv-vanity.com/papers/1510.00149/): connections whose weight magnitude is small
are removed, then the network is retrained with the others (the mask is kept fixed). The
threshold is chosen *per layer* in those papers (a quality parameter times the layer's
standard deviation); SqueezeNet's compressed model keeps about a third of the weights
(SqueezeNet, Section 4: "33% sparsity" with 8-bit and 6-bit quantization, 0.66 MB and 0.47 MB).
Here ``scope="layer"`` (default) keeps the same fraction ``density`` of every layer, and
``scope="global"`` one threshold across all layers, both with :mod:`torch.nn.utils.prune`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils import prune

from lightnets.errors import InvalidArgumentError

#: Layer kinds, as Deep Compression distinguishes them (index and weight bit widths).
KINDS = ("conv", "fc")
SCOPES = ("layer", "global")


@dataclass(frozen=True)
class Layer:
    """A compressible weight: the module's qualified name, the module, and its kind."""

    name: str
    module: nn.Module
    kind: str

    @property
    def key(self) -> str:
        """Its state-dict key."""
        return f"{self.name}.weight"


def compressible_layers(model: nn.Module) -> list[Layer]:
    """Every Conv1d/2d/3d (``conv``) and Linear (``fc``) layer, in module order."""
    kinds = {nn.Linear: "fc", nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv"}
    layers = []
    for name, module in model.named_modules():
        kind = kinds.get(type(module))
        if kind is not None:
            layers.append(Layer(name, module, kind))
    if not layers:
        raise InvalidArgumentError("the model has no convolution or linear layer to compress")
    return layers


def apply_pruning(layers: list[Layer], density: float, scope: str = "layer") -> None:
    """Attach L1-magnitude masks keeping ``density`` of the weights (``weight_mask`` buffers).

    The masks stay attached (``weight = weight_orig * weight_mask``) so a fine-tune keeps the
    pruned weights at zero; :func:`remove_pruning` makes them permanent.
    """
    if scope not in SCOPES:
        raise InvalidArgumentError(f"unknown pruning scope {scope!r}; allowed: {', '.join(SCOPES)}")
    amount = 1.0 - density
    if scope == "global":
        prune.global_unstructured(
            [(layer.module, "weight") for layer in layers],
            pruning_method=prune.L1Unstructured,
            amount=amount,
        )
        return
    for layer in layers:
        prune.l1_unstructured(layer.module, "weight", amount=amount)


def remove_pruning(layers: list[Layer]) -> None:
    """Make the masks permanent: ``weight`` becomes a plain parameter with zeros where pruned."""
    for layer in layers:
        if prune.is_pruned(layer.module) and hasattr(layer.module, "weight_mask"):
            prune.remove(layer.module, "weight")
