"""ShuffleNet (V1).

Zhang, Zhou, Lin and Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for
Mobile Devices", CVPR 2018 (arXiv:1707.01083).

- Section 3.1: pointwise group convolution, then a channel shuffle so that the next grouped layer
  sees every group (:func:`lightnets.models.layers.channel_shuffle`).
- Section 3.2, Figure 2: the ShuffleNet unit. 1x1 group conv (BN, ReLU), channel shuffle, 3x3
  depthwise conv (BN, no ReLU), 1x1 group conv (BN); the residual branch is added to the identity
  shortcut and passed through a ReLU (Figure 2b). In a stride-2 unit the shortcut is a 3x3 average
  pool (stride 2) and the two paths are concatenated (Figure 2c), so the residual branch produces
  ``out - in`` channels. The bottleneck width is a quarter of the unit's output width.
- Section 3.3, Table 1: the network. A 3x3 stride-2 convolution with 24 channels, a 3x3 stride-2
  max-pool, stages 2, 3, 4 with 4, 8, 4 units (the first of each with stride 2), global average
  pooling and a fully connected layer. No group convolution on the first pointwise layer of
  stage 2: its 24 input channels are too few.
- Section 4.1.1, Table 2: "ShuffleNet sx" scales the number of filters of every stage by ``s``.

Stem width: Table 1 gives 24 channels at 1x and Table 2 does not say how "sx" treats the stem. We
take the reference code's choice (megvii-model/ShuffleNet-Series: 12 / 24 / 24 / 48 channels at
0.5x / 1x / 1.5x / 2x; 12 at 0.25x, which it lacks), :data:`STEM_CHANNELS`. It reproduces the
complexities of Table 2 at g=3 (37.6M / 292.4M / 524.1M MACs against 38M / 292M / 524M), where a
stem fixed at 24 channels is 12% over at 0.5x (42.7M) and 3% under at 2x (507.6M).

Width rounding (one rule, for every ``groups`` x ``width_mult`` combination): each width, the stem's
above, a stage's ``base * width_mult`` and a bottleneck's ``output / 4``, is rounded with
:func:`~lightnets.models.layers.make_divisible` to the nearest multiple of ``groups`` (never below
90%). Scaled stage widths of Table 1 are already multiples of ``groups``, so only some bottlenecks
of g=2 and g=4 (e.g. g=4 at 0.25x: 17 -> 16; g=2 at 0.5x: 25 -> 26) and the stem of g=8 at 0.25x
and 0.5x (12 -> 16, as in the reference code) move; 1x is Table 1 exactly. The residual branch of a
stride-2 unit, ``out - in`` channels, is then a multiple of ``groups`` because both terms are.

``variant="cifar"``: the stem convolution has stride 1 (still followed by BN and ReLU) and there is
no max-pool, so a 32x32 input reaches stage 2 at full resolution; stages 2, 3, 4 still halve the
resolution as in the paper (32 -> 16 -> 8 -> 4).
"""

from __future__ import annotations

import torch
from torch import nn

from lightnets.errors import InvalidArgumentError
from lightnets.models.base import LightweightNet, validate_variant
from lightnets.models.facts import M, PaperFigure, PlotStyle
from lightnets.models.layers import ChannelShuffle, ConvBNAct, GlobalAvgPool, make_divisible
from lightnets.models.registry import HParam, register_model

# Table 1: output channels of stages 2, 3, 4 at 1x, for each number of groups g.
STAGE_OUT_CHANNELS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
#: Table 1: units per stage (the first unit of each stage has stride 2).
STAGE_REPEATS: tuple[int, int, int] = (4, 8, 4)
#: Conv1 (3x3, stride 2) output channels by width multiplier: 24 at 1x (Table 1); the other widths
#: follow the reference code (megvii-model/ShuffleNet-Series, g=3: 12/24/24/48 at 0.5x/1x/1.5x/2x),
#: 0.25x (absent there) uses 12. Module docstring: this is the choice that reproduces Table 2.
STEM_CHANNELS: dict[float, int] = {0.25: 12, 0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}
#: Section 3.2: bottleneck channels = output channels / 4.
BOTTLENECK_RATIO = 4
#: Table 2: the multipliers s of "ShuffleNet sx".
WIDTH_MULTS: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)


def stage_widths(groups: int, width_mult: float) -> list[int]:
    """Output channels of stages 2, 3, 4 for ``groups`` and ``width_mult`` (module docstring)."""
    return [make_divisible(c * width_mult, groups) for c in STAGE_OUT_CHANNELS[groups]]


def stem_width(groups: int, width_mult: float) -> int:
    """Conv1 output channels: :data:`STEM_CHANNELS` rounded to a multiple of ``groups``."""
    return make_divisible(STEM_CHANNELS[width_mult], groups)


def bottleneck_width(out_channels: int, groups: int) -> int:
    """Bottleneck channels of a unit with ``out_channels`` outputs, a multiple of ``groups``."""
    return make_divisible(out_channels / BOTTLENECK_RATIO, groups)


class ShuffleUnit(nn.Module):
    """Figure 2(b) (stride 1: add) and 2(c) (stride 2: 3x3 avg-pool shortcut, concat).

    ``first_groups`` is the group count of the first pointwise convolution: 1 in the first unit of
    stage 2 (Section 3.3), ``groups`` elsewhere.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, groups: int, first_groups: int
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise InvalidArgumentError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.concat = stride == 2
        mid = bottleneck_width(out_channels, groups)
        # Concatenation keeps the shortcut's `in_channels`; the branch supplies the rest.
        branch_out = out_channels - in_channels if self.concat else out_channels
        if not self.concat and in_channels != out_channels:
            raise InvalidArgumentError("a stride-1 unit needs in_channels == out_channels")
        self.conv1 = ConvBNAct(in_channels, mid, 1, groups=first_groups)
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.dwconv = ConvBNAct(mid, mid, 3, stride=stride, groups=mid, activation=None)
        self.conv2 = ConvBNAct(mid, branch_out, 1, groups=groups, activation=None)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if self.concat else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.dwconv(self.shuffle(self.conv1(x))))
        # Figure 2(c): concat with the pooled shortcut; 2(b): add the identity. ReLU after either.
        out = torch.cat((self.shortcut(x), out), 1) if self.concat else out + self.shortcut(x)
        return self.act(out)


class ShuffleNetV1(LightweightNet):
    """ShuffleNet with ``groups`` groups at width ``width_mult`` (Table 1, Table 2).

    Args:
        num_classes: classifier outputs.
        variant: ``"imagenet"`` (Table 1) or ``"cifar"`` (stride-1 stem with BN and ReLU, no
            max-pool).
        groups: g of Table 1, one of 1, 2, 3, 4, 8.
        width_mult: s of "ShuffleNet sx", one of 0.25, 0.5, 1, 1.5, 2.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        variant: str = "imagenet",
        *,
        groups: int = 3,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__(num_classes, variant)
        cifar = validate_variant(variant) == "cifar"
        if groups not in STAGE_OUT_CHANNELS:
            raise InvalidArgumentError(
                f"groups={groups!r} is not supported; allowed: {sorted(STAGE_OUT_CHANNELS)}"
            )
        if width_mult not in STEM_CHANNELS:
            raise InvalidArgumentError(
                f"width_mult={width_mult!r} is not supported; allowed: {WIDTH_MULTS}"
            )
        self.groups = groups
        self.width_mult = width_mult
        self.default_input_size = (3, 32, 32) if cifar else (3, 224, 224)

        in_channels = stem_width(groups, width_mult)
        self.conv1 = ConvBNAct(3, in_channels, 3, stride=1 if cifar else 2)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, stride=2, padding=1)
        stages: list[nn.Sequential] = []
        for stage_idx, (repeats, out_channels) in enumerate(
            zip(STAGE_REPEATS, stage_widths(groups, width_mult), strict=True)
        ):
            units = []
            for i in range(repeats):
                first_groups = 1 if stage_idx == 0 and i == 0 else groups
                stride = 2 if i == 0 else 1
                units.append(ShuffleUnit(in_channels, out_channels, stride, groups, first_groups))
                in_channels = out_channels
            stages.append(nn.Sequential(*units))
        self.stage2, self.stage3, self.stage4 = stages
        self.num_features = in_channels
        self.global_pool = GlobalAvgPool()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.stage4(self.stage3(self.stage2(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)

    def _reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)


SHUFFLENET = "ShuffleNet (Zhang et al. 2018, arXiv:1707.01083)"
#: The paper's ImageNet figures: Table 1 (complexity per group count at 1x) and Table 2 (top-1
#: of g=3, and the other widths).
PAPER_FIGURES = (
    PaperFigure.of(
        "shufflenet_v1", 143 * M, None, None, f"{SHUFFLENET}, Table 1", groups=1, width_mult=1.0
    ),
    PaperFigure.of(
        "shufflenet_v1", 140 * M, None, None, f"{SHUFFLENET}, Table 1", groups=2, width_mult=1.0
    ),
    PaperFigure.of(
        "shufflenet_v1",
        137 * M,
        1.9 * M,
        67.4,
        f"{SHUFFLENET}, Tables 1-2",
        groups=3,
        width_mult=1.0,
    ),
    PaperFigure.of(
        "shufflenet_v1", 133 * M, None, None, f"{SHUFFLENET}, Table 1", groups=4, width_mult=1.0
    ),
    PaperFigure.of(
        "shufflenet_v1", 137 * M, 2.4 * M, None, f"{SHUFFLENET}, Table 1", groups=8, width_mult=1.0
    ),
    PaperFigure.of(
        "shufflenet_v1", 38 * M, 0.7 * M, None, f"{SHUFFLENET}, Table 2", groups=3, width_mult=0.5
    ),
    PaperFigure.of(
        "shufflenet_v1", 292 * M, 3.4 * M, None, f"{SHUFFLENET}, Table 2", groups=3, width_mult=1.5
    ),
    PaperFigure.of(
        "shufflenet_v1", 524 * M, 5.4 * M, None, f"{SHUFFLENET}, Table 2", groups=3, width_mult=2.0
    ),
)

#: The training recipes' values ShuffleNet V1 needs instead of their own (read by
#: lightnets.train.recipes; docs/training.md "Per-family values"). Its default short run
#: (onecycle, 3 epochs, 5,000 Fashion-MNIST images, cifar variant) at the recipe's peak lr 0.1
#: and batch 128 ended at 63.9-74.1% test top-1 over seeds 0-2, its first-epoch loss far above
#: chance; seed 0 gave 80.0% at lr 0.01, 80.6% at 0.02, 83.9% at 0.02 with batch 64 (twice the
#: steps); benchmarks/short_run_accuracy.py then gave 83.9% / 83.7% / 85.1% for seeds 0 / 1 / 2.
RECIPE_DEFAULTS: dict[str, dict[str, object]] = {"onecycle": {"lr": 0.02, "batch_size": 64}}


register_model(
    "shufflenet_v1",
    paper="Zhang et al., ShuffleNet, CVPR 2018 (arXiv:1707.01083), Table 1",
    classifier="fc",
    paper_figures=PAPER_FIGURES,
    plot_style=PlotStyle("shufflenet_v1", "tab:purple", "D", "#5e3a87"),
    compare_configs=({}, {"groups": 8}),
    hparams={
        "groups": HParam(
            3,
            int,
            "groups g of the pointwise group convolutions (Table 1)",
            choices=tuple(STAGE_OUT_CHANNELS),
        ),
        "width_mult": HParam(
            1.0, float, "width multiplier s of 'ShuffleNet sx' (Table 2)", choices=WIDTH_MULTS
        ),
    },
    recipe_defaults=RECIPE_DEFAULTS,
)(ShuffleNetV1)
