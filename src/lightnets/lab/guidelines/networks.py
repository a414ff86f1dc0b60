"""The benchmark networks of ShuffleNet V2's Section 2, built from the paper's tables, and
lightnets' own counts of them (MACs, memory access, params; Eq. 1's lower bound for G1)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightnets.errors import InvalidArgumentError, check_int
from lightnets.lab.guidelines.paper import (
    FEATURE_MAP,
    GUIDELINE_TABLES,
    REPEATS,
    SCALES,
    GuidelineRow,
)

__all__ = [
    "BYTES_PER_ELEMENT",
    "GUIDELINES",
    "WIDTHS",
    "Bottleneck",
    "Experiment",
    "FragmentBlock",
    "build_experiments",
    "g1_lower_bound",
]

GUIDELINES = tuple(GUIDELINE_TABLES)
WIDTHS = ("arm", "gpu")
BYTES_PER_ELEMENT = 4  # float32


def _conv1x1(c_in: int, c_out: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, groups=groups, bias=False)


class FragmentBlock(nn.Module):
    """Appendix Fig. 1: ``fragments`` 1x1 convolutions c -> c, in sequence, or in parallel on
    the same input with their outputs summed (the figure's merge is assumed to be a sum)."""

    def __init__(self, channels: int, fragments: int, arrangement: str) -> None:
        super().__init__()
        self.parallel = arrangement == "parallel"
        self.convs = nn.ModuleList(_conv1x1(channels, channels) for _ in range(fragments))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.parallel:
            for conv in self.convs:
                x = conv(x)
            return x
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)
        return out


class Bottleneck(nn.Module):
    """He et al. 2016's bottleneck unit (1x1, 3x3, 1x1; c channels throughout), BatchNorm folded
    away as at inference; Table 4 removes its ReLUs and/or its shortcut."""

    def __init__(self, channels: int, relu: bool, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = _conv1x1(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv3 = _conv1x1(channels, channels)
        self.act = nn.ReLU() if relu else nn.Identity()
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        if self.shortcut:
            out = out + x
        return self.act(out)


def _g1_net(row: GuidelineRow, channels: tuple[int, ...]) -> nn.Module:
    c1, c2 = channels
    return nn.Sequential(
        *(nn.Sequential(_conv1x1(c1, c2), _conv1x1(c2, c1)) for _ in range(REPEATS))
    )


def _g2_net(row: GuidelineRow, channels: tuple[int, ...]) -> nn.Module:
    (c,) = channels
    return nn.Sequential(*(_conv1x1(c, c, row.groups) for _ in range(REPEATS)))


def _g3_net(row: GuidelineRow, channels: tuple[int, ...]) -> nn.Module:
    (c,) = channels
    return nn.Sequential(
        *(FragmentBlock(c, row.fragments, row.arrangement) for _ in range(REPEATS))
    )


def _g4_net(row: GuidelineRow, channels: tuple[int, ...]) -> nn.Module:
    (c,) = channels
    return nn.Sequential(*(Bottleneck(c, row.relu, row.shortcut) for _ in range(REPEATS)))


#: Guideline -> builder of its benchmark network from a table row and the channel numbers.
_BUILDERS: dict[str, Callable[[GuidelineRow, tuple[int, ...]], nn.Module]] = {
    "G1": _g1_net,
    "G2": _g2_net,
    "G3": _g3_net,
    "G4": _g4_net,
}


def _channels(guideline: str, row: GuidelineRow, scale: int, widths: str) -> tuple[int, ...]:
    """The channel numbers of ``row`` at ``scale`` (x1, x2, x4) in the paper's GPU or ARM set;
    G3's fragments are narrowed to c / sqrt(k) so that MACs match the 1-fragment block."""
    base = row.gpu_channels if widths == "gpu" else row.arm_channels
    channels = tuple(c * scale for c in base)
    if guideline == "G3" and row.fragments > 1:
        channels = (round(channels[0] / math.sqrt(row.fragments)),)
    if row.groups > 1 and channels[0] % row.groups:
        channels = (_divisible(channels[0], row.groups),)
    return channels


def _divisible(c: int, g: int) -> int:
    """The multiple of ``g`` nearest to ``c`` in MACs (c^2 / g): Table 2's ARM c=180 at g=8
    cannot be split into 8 groups; 176 is the closest width that can (c^2/g 3872 vs 4050)."""
    low, high = (c // g) * g, (c // g + 1) * g
    return min((high, low), key=lambda w: abs(w * w - c * c)) if low else high


@dataclass(frozen=True)
class Experiment:
    """One configuration of one table at one scale."""

    guideline: str
    row: GuidelineRow
    scale: int
    channels: tuple[int, ...]
    widths: str
    feature_map: int = FEATURE_MAP

    @property
    def column(self) -> int:
        return SCALES.index(self.scale)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels[0], self.feature_map, self.feature_map)

    def build(self) -> nn.Module:
        return _BUILDERS[self.guideline](self.row, self.channels).eval()


def build_experiments(
    guidelines: Sequence[str] = GUIDELINES,
    scales: Sequence[int] = SCALES,
    widths: str = "arm",
    feature_map: int = FEATURE_MAP,
) -> list[Experiment]:
    """Every (guideline, scale, row) configuration, tables in order, rows in table order."""
    unknown = [g for g in guidelines if g not in GUIDELINE_TABLES]
    if unknown:
        raise InvalidArgumentError(
            f"unknown guideline {unknown[0]!r}; allowed: {', '.join(GUIDELINES)}"
        )
    if widths not in WIDTHS:
        raise InvalidArgumentError(f"unknown width set {widths!r}; allowed: {', '.join(WIDTHS)}")
    bad = [s for s in scales if s not in SCALES]
    if bad:
        raise InvalidArgumentError(
            f"scale x{bad[0]} is not one of the paper's; allowed: {', '.join(map(str, SCALES))}"
        )
    check_int("feature_map", feature_map, minimum=1)
    return [
        Experiment(g, row, scale, _channels(g, row, scale, widths), widths, feature_map)
        for g in dict.fromkeys(guidelines)
        for scale in scales
        for row in GUIDELINE_TABLES[g].rows
    ]


def g1_lower_bound(height: int, width: int, macs: int) -> float:
    """ShuffleNet V2, Eq. 1: memory access (elements) of a 1x1 convolution with B MACs on an
    h x w map is at least ``2 sqrt(hwB) + B/(hw)``, reached at c1 = c2."""
    hw = height * width
    return 2 * math.sqrt(hw * macs) + macs / hw


def _counts(experiment: Experiment, model: nn.Module) -> dict[str, Any]:
    """MACs, memory access (bytes) and params per image from lightnets' counter; for G1 the
    Eq. 1 bound summed over the network's 2 x 10 convolutions, in bytes."""
    from lightnets.analysis.counter import profile

    prof = profile(model, experiment.input_shape, batch_size=1)
    bound = None
    if experiment.guideline == "G1":
        hw = experiment.feature_map
        per_conv = prof.macs // (2 * REPEATS)
        bound = round(2 * REPEATS * g1_lower_bound(hw, hw, per_conv) * BYTES_PER_ELEMENT)
    return {
        "macs": prof.macs,
        "memory_access": prof.memory_access,
        "memory_access_bound": bound,
        "params": prof.params,
    }
