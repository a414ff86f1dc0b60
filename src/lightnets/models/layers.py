"""Building blocks shared by every family: one implementation of each idea."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going below 90% of it.

    This is the rounding rule of the MobileNet V2 reference implementation (TensorFlow slim's
    ``_make_divisible``), used wherever a width multiplier scales a channel count.
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Convolution, BatchNorm, activation: the unit every paper here is built from.

    A ``Sequential`` (children ``0``, ``1``, ``2``) so that its state-dict keys line up with
    torchvision's ``Conv2dNormActivation``. ``activation=None`` gives a linear bottleneck
    (MobileNet V2, Section 3.2); ``norm=False`` gives a plain convolution with bias.
    Padding is ``(kernel_size - 1) // 2`` ("same" for odd kernels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
        norm: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2,
                groups=groups,
                bias=not norm,
            )
        ]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


def init_conv_bn_(
    module: nn.Module, conv_init: Callable[..., torch.Tensor], **init_kwargs: object
) -> None:
    """Initialise in place every ``Conv2d`` in ``module`` with ``conv_init(weight, **init_kwargs)``
    and a zero bias, and every ``BatchNorm2d`` with weight one and bias zero (the reference
    implementations' scheme; the papers give none). Tensors on the meta device (shapes only,
    for counting and memory estimates) are left alone: they hold no values, and torch's
    ``normal_`` on them imports ``torch._dynamo``, seconds of start-up."""
    if is_meta(module):
        return
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            conv_init(m.weight, **init_kwargs)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def is_meta(module: nn.Module) -> bool:
    """True when ``module``'s parameters live on the meta device (no storage to initialise)."""
    return any(p.is_meta for p in module.parameters(recurse=True))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet V1, Section 3.1: reshape channels to (groups, n), transpose, flatten.

    Written without reading the batch size or spatial size, so that it scripts and exports with
    dynamic shapes.
    """
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle`, so profilers can attribute it to a layer."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class GlobalAvgPool(nn.Module):
    """Global average pooling to a (N, C) tensor, valid for any input resolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))
