"""The shared building blocks of lightnets.models.layers, against their definitions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightnets.models.layers import (
    ChannelShuffle,
    ConvBNAct,
    GlobalAvgPool,
    channel_shuffle,
    make_divisible,
)


def _index_tensor(channels: int, batch: int = 2, size: int = 3) -> torch.Tensor:
    """A (batch, channels, size, size) tensor whose every value is its own channel index."""
    return (
        torch.arange(channels, dtype=torch.float32)
        .view(1, channels, 1, 1)
        .expand(batch, channels, size, size)
    )


@pytest.mark.parametrize(("groups", "per_group"), [(1, 5), (2, 3), (3, 4), (4, 2), (8, 3)])
def test_channel_shuffle_matches_definition(groups: int, per_group: int) -> None:
    # ShuffleNet V1, Section 3.1: reshape the channels to (g, n), transpose to (n, g), flatten.
    channels = groups * per_group
    expected = torch.arange(channels).reshape(groups, per_group).t().flatten()
    # The same permutation written out: output channel i * g + k comes from group k, slot i.
    written_out = [k * per_group + i for i in range(per_group) for k in range(groups)]
    assert expected.tolist() == written_out

    out = channel_shuffle(_index_tensor(channels), groups)
    assert out.shape == (2, channels, 3, 3)
    for c in range(channels):
        assert torch.all(out[:, c] == expected[c]), f"channel {c}"


def test_channel_shuffle_moves_whole_channels_of_each_sample() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 12, 5, 4)
    perm = torch.arange(12).reshape(3, 4).t().flatten()
    assert torch.equal(channel_shuffle(x, 3), x[:, perm])
    # Shuffling with g groups, then with n = C / g groups, is the identity.
    assert torch.equal(channel_shuffle(channel_shuffle(x, 3), 4), x)


def test_channel_shuffle_two_groups_interleaves_halves() -> None:
    # ShuffleNet V2's use: the two concatenated halves end up interleaved.
    out = channel_shuffle(_index_tensor(6, batch=1, size=1), 2)
    assert out.flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_channel_shuffle_module() -> None:
    module = ChannelShuffle(4)
    x = _index_tensor(8)
    assert torch.equal(module(x), channel_shuffle(x, 4))
    assert module(x)[0, :, 0, 0].tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert list(module.parameters()) == []
    assert "groups=4" in repr(module)
    scripted = torch.jit.script(module)
    for batch in (1, 5):
        y = torch.randn(batch, 8, 2, 3)
        assert torch.equal(scripted(y), module(y))


def _slim_make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    # The rule as written in TensorFlow slim's mobilenet/mobilenet.py (_make_divisible).
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@pytest.mark.parametrize(
    ("value", "divisor", "expected"),
    [
        (32, 8, 32),  # already a multiple
        (24.0, 8, 24),  # 32 x 0.75
        (33.6, 8, 32),  # 96 x 0.35: rounds to nearest
        (13, 8, 16),  # rounds up past the half-way point
        (12, 8, 16),  # half-way rounds up
        (5.6, 8, 8),  # never below the divisor (min_value)
        (10, 8, 16),  # nearest is 8 < 90% of 10: one divisor more
        (11.9, 8, 16),  # nearest is 8 < 10.71: one divisor more
        (17, 4, 16),  # ShuffleNet V1 g=4 at 0.25x
        (25, 2, 26),
        (12.5, 2, 12),
        (1280 * 1.4, 8, 1792),
    ],
)
def test_make_divisible_values(value: float, divisor: int, expected: int) -> None:
    assert make_divisible(value, divisor) == expected
    assert make_divisible(value, divisor) == _slim_make_divisible(value, divisor)


def test_make_divisible_rule_holds_on_a_grid() -> None:
    for divisor in (1, 2, 3, 4, 8):
        for tenths in range(10, 4000, 7):
            value = tenths / 10
            result = make_divisible(value, divisor)
            assert result == _slim_make_divisible(value, divisor)
            assert result % divisor == 0
            assert result >= 0.9 * value
            assert result >= divisor


def test_make_divisible_min_value() -> None:
    assert make_divisible(3, 8, min_value=4) == 4
    assert make_divisible(3, 8) == 8


def test_conv_bn_act_structure() -> None:
    block = ConvBNAct(16, 32, 3, stride=2, groups=4)
    conv, bn, act = block
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    assert isinstance(act, nn.ReLU)
    assert conv.bias is None  # BatchNorm supplies the shift
    assert (conv.kernel_size, conv.stride, conv.padding, conv.groups) == ((3, 3), (2, 2), (1, 1), 4)
    assert conv.weight.shape == (32, 4, 3, 3)
    assert bn.num_features == 32
    assert block.out_channels == 32
    assert list(block.state_dict())[:3] == ["0.weight", "1.weight", "1.bias"]


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_conv_bn_act_same_padding(kernel: int) -> None:
    block = ConvBNAct(3, 4, kernel)
    assert block[0].padding == ((kernel - 1) // 2,) * 2
    assert block(torch.randn(1, 3, 9, 11)).shape == (1, 4, 9, 11)
    assert ConvBNAct(3, 4, kernel, stride=2)(torch.randn(1, 3, 9, 11)).shape == (1, 4, 5, 6)


def test_conv_bn_act_variants() -> None:
    linear = ConvBNAct(8, 8, 1, activation=None)
    assert [type(m) for m in linear] == [nn.Conv2d, nn.BatchNorm2d]
    assert linear[0].bias is None

    plain = ConvBNAct(8, 8, 3, norm=False)
    assert [type(m) for m in plain] == [nn.Conv2d, nn.ReLU]
    assert plain[0].bias is not None and plain[0].bias.shape == (8,)

    relu6 = ConvBNAct(8, 8, 3, groups=8, activation=nn.ReLU6)
    assert isinstance(relu6[2], nn.ReLU6)
    assert relu6[0].weight.shape == (8, 1, 3, 3)  # depthwise


def test_global_avg_pool() -> None:
    x = torch.randn(2, 5, 7, 3)
    out = GlobalAvgPool()(x)
    assert out.shape == (2, 5)
    torch.testing.assert_close(out, nn.AdaptiveAvgPool2d(1)(x).flatten(1))
