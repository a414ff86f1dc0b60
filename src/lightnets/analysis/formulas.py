"""Closed-form costs of the layers these networks are built from (one table, one place).

Conventions (docs/analysis.md states them for users):

* **MACs** are multiply-accumulates, the number the papers call "FLOPs" or "mult-adds". A bias
  add is not a MAC, and BatchNorm, activations and pooling have none.
* **params** of a convolution or linear layer count the weight tensor, plus the bias only when
  ``bias=True``.
* **memory access** is the ShuffleNet V2 paper's "MAC" (Ma et al. 2018, Section 2, Eq. 1): the
  elements a layer reads (input activations and weights) and writes (output activations);
  the ``*_bytes`` functions multiply by the element size.

``H`` and ``W`` are always *output* sizes unless a name says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "conv1x1_memory_access",
    "conv2d_macs",
    "conv2d_memory_access_bytes",
    "conv2d_output_size",
    "conv2d_params",
    "depthwise_separable_cost_ratio",
    "linear_macs",
    "linear_memory_access_bytes",
    "linear_params",
]

Size2 = int | Sequence[int]


def _pair(value: Size2) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    k_h, k_w = value
    return (int(k_h), int(k_w))


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
        )


def conv2d_params(
    in_channels: int,
    out_channels: int,
    kernel_size: Size2,
    groups: int = 1,
    bias: bool = False,
) -> int:
    """Parameters of a 2-D convolution: ``k_h k_w c_in c_out / g`` (+ ``c_out`` with bias).

    Depthwise convolution is ``groups = c_in = c_out`` (MobileNets, Section 3.1: ``k^2 c``);
    pointwise is ``kernel_size = 1``.
    """
    _check_groups(in_channels, out_channels, groups)
    k_h, k_w = _pair(kernel_size)
    weights = k_h * k_w * (in_channels // groups) * out_channels
    return weights + (out_channels if bias else 0)


def conv2d_macs(
    in_channels: int,
    out_channels: int,
    kernel_size: Size2,
    output_size: Size2,
    groups: int = 1,
    batch_size: int = 1,
) -> int:
    """Multiply-accumulates of a 2-D convolution: ``k_h k_w c_in c_out H W / g`` per image.

    MobileNets, Section 3.1, Eq. 2 (standard) and Eq. 3 (depthwise, ``g = c_in``).
    """
    _check_groups(in_channels, out_channels, groups)
    k_h, k_w = _pair(kernel_size)
    out_h, out_w = _pair(output_size)
    return batch_size * k_h * k_w * (in_channels // groups) * out_channels * out_h * out_w


def conv2d_output_size(
    input_size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution or pooling window along one axis (floor mode)."""
    return (input_size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def linear_params(in_features: int, out_features: int, bias: bool = False) -> int:
    """Parameters of a fully connected layer: ``c_in c_out`` (+ ``c_out`` with bias)."""
    return in_features * out_features + (out_features if bias else 0)


def linear_macs(in_features: int, out_features: int, batch_size: int = 1) -> int:
    """Multiply-accumulates of a fully connected layer: ``c_in c_out`` per image."""
    return batch_size * in_features * out_features


def conv2d_memory_access_bytes(
    in_channels: int,
    out_channels: int,
    kernel_size: Size2,
    input_size: Size2,
    output_size: Size2,
    groups: int = 1,
    bias: bool = False,
    batch_size: int = 1,
    bytes_per_element: int = 4,
) -> int:
    """Bytes a convolution reads and writes: input + weights (+ bias) + output.

    The ShuffleNet V2 paper's memory access cost (Section 2) in bytes, for ``batch_size`` images
    of ``bytes_per_element`` (4 for float32).
    """
    in_h, in_w = _pair(input_size)
    out_h, out_w = _pair(output_size)
    elements = (
        batch_size * in_channels * in_h * in_w
        + conv2d_params(in_channels, out_channels, kernel_size, groups, bias)
        + batch_size * out_channels * out_h * out_w
    )
    return elements * bytes_per_element


def linear_memory_access_bytes(
    in_features: int,
    out_features: int,
    bias: bool = False,
    batch_size: int = 1,
    bytes_per_element: int = 4,
) -> int:
    """Bytes a fully connected layer reads and writes: input + weights (+ bias) + output."""
    elements = (
        batch_size * in_features
        + linear_params(in_features, out_features, bias)
        + batch_size * out_features
    )
    return elements * bytes_per_element


def conv1x1_memory_access(
    height: int, width: int, in_channels: int, out_channels: int, groups: int = 1
) -> int:
    """ShuffleNet V2, Eq. 1 and Eq. 2, in elements: ``hw(c1 + c2) + c1 c2 / g``.

    For a fixed MAC budget ``B = hw c1 c2 / g`` this is smallest when ``c1 = c2`` (guideline G1)
    and grows with ``g`` (guideline G2).
    """
    _check_groups(in_channels, out_channels, groups)
    return height * width * (in_channels + out_channels) + in_channels * out_channels // groups


def depthwise_separable_cost_ratio(out_channels: int, kernel_size: int = 3) -> float:
    """MobileNets, Section 3.1, Eq. 5: depthwise separable / standard cost = 1/N + 1/k^2."""
    if out_channels < 1 or kernel_size < 1:
        raise ValueError("out_channels and kernel_size must be >= 1")
    return 1.0 / out_channels + 1.0 / kernel_size**2
