"""Fold BatchNorm into the convolution before it (inference-time re-parameterisation).

In eval mode BatchNorm is the affine map ``y = gamma * (x - mu) / sqrt(var + eps) + beta``
(Ioffe & Szegedy, 2015, Algorithm 2), applied per channel. After a convolution it can be folded
into the convolution's weights and bias: ``W' = W * s``, ``b' = (b - mu) * s + beta`` with
``s = gamma / sqrt(var + eps)``. The network then computes the same function with one layer (and
one pass over the activation tensor) fewer per ``ConvBNAct``. The arithmetic itself is
``torch.nn.utils.fusion.fuse_conv_bn_eval``.
"""

from __future__ import annotations

import copy
from typing import TypeGuard

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["count_batchnorm", "fuse"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _foldable(conv: nn.Module, norm: nn.Module) -> TypeGuard[nn.modules.conv._ConvNd]:
    """``conv`` a convolution whose output ``norm``, a BatchNorm in eval statistics, normalises
    (a guard on ``conv``; :func:`_fuse_sequential` checks ``norm``'s type too)."""
    return (
        isinstance(conv, _CONVS)
        and isinstance(norm, _NORMS)
        and conv.weight.dim() - 2
        == {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}[type(norm)]
        and norm.track_running_stats
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
    )


def _fuse_sequential(seq: nn.Sequential) -> None:
    # In a Sequential, child order is execution order: a conv directly followed by a BN feeds it.
    index = 0
    while index < len(seq) - 1:
        conv, norm = seq[index], seq[index + 1]
        if _foldable(conv, norm) and isinstance(norm, nn.modules.batchnorm._BatchNorm):
            seq[index] = fuse_conv_bn_eval(conv, norm)
            del seq[index + 1]  # Sequential renumbers the children that follow
        index += 1


def fuse(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every BatchNorm folded into its convolution.

    Folds each convolution that is directly followed by a BatchNorm inside an ``nn.Sequential``
    (every :class:`lightnets.models.layers.ConvBNAct`); the BatchNorm disappears from the module
    tree. The original model is not modified. The result computes the same function up to
    float32 rounding and is meant for inference only.
    """
    fused = copy.deepcopy(model).eval()
    for module in list(fused.modules()):
        if isinstance(module, nn.Sequential):
            _fuse_sequential(module)
    return fused


def count_batchnorm(model: nn.Module) -> int:
    """Number of BatchNorm layers left in ``model``."""
    return sum(isinstance(m, _NORMS) for m in model.modules())
