"""ShuffleNet V2.

Ma, Zhang, Zheng and Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", ECCV 2018 (arXiv:1807.11164).

- Section 3, Figure 3(c): the basic unit. A channel split halves the input; one half passes
  unchanged (guideline G4: no element-wise add), the other goes through 1x1 conv (BN, ReLU), 3x3
  depthwise conv (BN), 1x1 conv (BN, ReLU), with equal input and output widths (G1) and no group
  convolution (G2). The halves are concatenated and shuffled with two groups.
- Figure 3(d): the down-sampling unit. No split: both branches see the whole input, the left one
  a 3x3 depthwise conv with stride 2 (BN) and a 1x1 conv (BN, ReLU), the right one the same branch
  as above with a stride-2 depthwise conv; the concatenation doubles the width.
- Table 5: the network. Conv1 3x3 stride 2 with 24 channels, 3x3 stride-2 max-pool, stages 2, 3, 4
  of 4, 8, 4 units (the first of each down-sampling), Conv5 1x1, global pooling, FC. Widths at
  0.5x / 1x / 1.5x / 2x are :data:`STAGE_OUT_CHANNELS`.

The layer structure is torchvision's ``ShuffleNetV2`` (``conv1``, ``maxpool``, ``stage2``-``stage4``
of ``InvertedResidual`` units with flat ``branch1`` / ``branch2`` Sequentials, ``conv5``, ``fc``):
the state dict has the same keys, in the same order, with the same shapes, so torchvision's trained
ImageNet weights load directly. Branches are assembled from :class:`ConvBNAct` units flattened into
one Sequential (:func:`_flat`) to keep torchvision's indices (``branch2.0`` conv, ``branch2.1`` BN,
``branch2.3`` depthwise conv, ...). Parameters at 224x224 with 1000 classes: 1,366,792 /
2,278,604 / 3,503,624 / 7,393,996 at 0.5x / 1x / 1.5x / 2x.

``variant="cifar"``: Conv1 has stride 1 (still followed by BN and ReLU) and there is no max-pool, so
a 32x32 input reaches stage 2 at full resolution; stages 2, 3, 4 still halve the resolution as in
the paper (32 -> 16 -> 8 -> 4). The state dict is the same as the ImageNet variant's.
"""

from __future__ import annotations

import torch
from torch import nn

from lightnets.errors import InvalidArgumentError
from lightnets.models.base import LightweightNet, validate_variant
from lightnets.models.facts import M, PaperFigure, PlotStyle
from lightnets.models.layers import ConvBNAct, GlobalAvgPool, channel_shuffle
from lightnets.models.registry import HParam, register_model

# Table 5: output channels of Conv1, Stage2, Stage3, Stage4, Conv5 for each width multiplier.
STAGE_OUT_CHANNELS: dict[float, tuple[int, int, int, int, int]] = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
#: Table 5: units per stage (the first of each stage has stride 2).
STAGE_REPEATS: tuple[int, int, int] = (4, 8, 4)


def _flat(*units: nn.Sequential) -> nn.Sequential:
    """One Sequential holding the layers of ``units`` in order (torchvision's flat indices)."""
    return nn.Sequential(*(layer for unit in units for layer in unit))


class InvertedResidual(nn.Module):
    """Figure 3(c) (``stride=1``: channel split) and 3(d) (``stride=2``: down-sampling).

    Named as in torchvision so that state-dict keys match.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise InvalidArgumentError(f"stride must be 1 or 2, got {stride}")
        branch_channels = out_channels // 2
        if stride == 1 and in_channels != 2 * branch_channels:
            raise InvalidArgumentError(
                "a stride-1 unit needs in_channels == out_channels (an even number)"
            )
        self.stride = stride
        if stride == 2:
            self.branch1 = _flat(
                ConvBNAct(in_channels, in_channels, 3, 2, groups=in_channels, activation=None),
                ConvBNAct(in_channels, branch_channels, 1),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = _flat(
            ConvBNAct(in_channels if stride == 2 else branch_channels, branch_channels, 1),
            ConvBNAct(
                branch_channels, branch_channels, 3, stride, groups=branch_channels, activation=None
            ),
            ConvBNAct(branch_channels, branch_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(LightweightNet):
    """ShuffleNet V2 at width ``width_mult`` (Table 5).

    Args:
        num_classes: classifier outputs.
        variant: ``"imagenet"`` (Table 5) or ``"cifar"`` (stride-1 stem with BN and ReLU, no
            max-pool).
        width_mult: one of 0.5, 1, 1.5, 2 (the widths of Table 5).
    """

    def __init__(
        self, num_classes: int = 1000, variant: str = "imagenet", *, width_mult: float = 1.0
    ) -> None:
        super().__init__(num_classes, variant)
        cifar = validate_variant(variant) == "cifar"
        if width_mult not in STAGE_OUT_CHANNELS:
            raise InvalidArgumentError(
                f"width_mult={width_mult!r} is not supported; "
                f"allowed: {', '.join(map(str, STAGE_OUT_CHANNELS))}"
            )
        self.width_mult = width_mult
        self.default_input_size = (3, 32, 32) if cifar else (3, 224, 224)
        stem, *stage_widths, last = STAGE_OUT_CHANNELS[width_mult]

        self.conv1 = ConvBNAct(3, stem, 3, stride=1 if cifar else 2)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = stem
        stages: list[nn.Sequential] = []
        for repeats, out_channels in zip(STAGE_REPEATS, stage_widths, strict=True):
            units = [InvertedResidual(in_channels, out_channels, 2)]
            units += [InvertedResidual(out_channels, out_channels, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            in_channels = out_channels
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = ConvBNAct(in_channels, last, 1)
        self.num_features = last
        self.global_pool = GlobalAvgPool()
        self.fc = nn.Linear(last, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv5(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)

    def _reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)


SHUFFLENET_V2 = "ShuffleNet V2 (Ma et al. 2018, arXiv:1807.11164)"
#: The paper's ImageNet figures: Table 5 (MACs) and Table 8 (top-1); parameters from the
#: reference code.
PAPER_FIGURES = tuple(
    PaperFigure.of(
        "shufflenet_v2",
        macs * M,
        params,
        top1,
        f"{SHUFFLENET_V2}, Tables 5 and 8",
        width_mult=width,
    )
    for width, macs, params, top1 in (
        (0.5, 41, 1_366_792, 60.3),
        (1.0, 146, 2_278_604, 69.4),
        (1.5, 299, 3_503_624, 72.6),
        (2.0, 591, 7_393_996, 74.9),
    )
)


register_model(
    "shufflenet_v2",
    paper="Ma et al., ShuffleNet V2, ECCV 2018 (arXiv:1807.11164), Table 5",
    classifier="fc",
    layouts={"torchvision": {}},
    paper_figures=PAPER_FIGURES,
    plot_style=PlotStyle("shufflenet_v2", "tab:red", "v", "#a01818"),
    # The paper's smallest, default and largest widths.
    compare_configs=({"width_mult": 0.5}, {}, {"width_mult": 2.0}),
    hparams={
        "width_mult": HParam(
            1.0,
            float,
            "width multiplier (Table 5: 0.5x, 1x, 1.5x, 2x)",
            choices=tuple(STAGE_OUT_CHANNELS),
        ),
    },
)(ShuffleNetV2)
