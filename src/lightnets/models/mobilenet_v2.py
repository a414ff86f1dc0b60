"""MobileNet V2.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018
(arXiv:1801.04381). The network is Table 2 of the paper, built from the bottleneck of Table 1
(expansion 1x1 + ReLU6, depthwise 3x3 + ReLU6, linear 1x1 projection; residual when the stride is
1 and the widths match, Figure 4).

The layer structure is torchvision's (``features``: stem, 17 ``InvertedResidual`` blocks, last
1x1 layer; ``classifier``: dropout, linear), so the state dict maps tensor for tensor onto the
reference implementation's trained weights (3,504,872 parameters at width 1.0, 1000 classes).
"""

from __future__ import annotations

import torch
from torch import nn

from lightnets.models.base import PooledLinearHeadNet, validate_variant
from lightnets.models.facts import M, PaperFigure, PlotStyle
from lightnets.models.layers import ConvBNAct, init_conv_bn_, make_divisible
from lightnets.models.registry import HParam, register_model

#: Table 2: stem width (a 3x3 convolution with stride 2).
STEM_CHANNELS = 32
#: Table 2: bottleneck stages, one row each: expansion t, output channels c, repeats n, stride s
#: (the stride of the first block of the stage; the others have stride 1).
INVERTED_RESIDUAL_SETTING: list[tuple[int, int, int, int]] = [
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
#: Table 2: the last 1x1 convolution, widened only for width multipliers above 1 (Section 6.1).
LAST_CHANNELS = 1280
#: Channels are rounded to multiples of this (the reference implementation's ``_make_divisible``).
ROUND_NEAREST = 8


class InvertedResidual(nn.Module):
    """Bottleneck residual block, Table 1: expand (1x1, ReLU6), depthwise 3x3 (ReLU6), project
    (1x1, linear). The expansion layer is left out when the expansion factor t is 1, as in the
    reference implementation (the first block of Table 2 has t = 1)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        self.stride = stride
        hidden = round(in_channels * expand_ratio)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(PooledLinearHeadNet):
    """MobileNet V2 (Table 2) with width multiplier ``width_mult`` (Section 6.1).

    Every width is ``make_divisible(c * width_mult, 8)``; the last layer has
    ``make_divisible(1280 * max(1, width_mult), 8)`` channels (not reduced for multipliers below
    one). ``variant="imagenet"``: the stem is a 3x3 convolution with stride 2 (total stride 32,
    7x7 features at 224 px). ``variant="cifar"``: the stem is the same 3x3 convolution with
    stride 1, so it keeps the full 32x32 resolution; the stages stride as in Table 2 (total stride
    16, 2x2 features at 32 px). The classifier is dropout (p = ``drop_rate``, 0.2 in the reference
    implementation) and a linear layer on globally average-pooled features.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        variant: str = "imagenet",
        *,
        width_mult: float = 1.0,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__(num_classes, variant)
        self.drop_rate = drop_rate
        stem_stride = 1 if validate_variant(variant) == "cifar" else 2
        in_channels = make_divisible(STEM_CHANNELS * width_mult, ROUND_NEAREST)
        layers: list[nn.Module] = [
            ConvBNAct(3, in_channels, 3, stride=stem_stride, activation=nn.ReLU6)
        ]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(c * width_mult, ROUND_NEAREST)
            for i in range(n):
                layers.append(InvertedResidual(in_channels, out_channels, s if i == 0 else 1, t))
                in_channels = out_channels
        last_channels = make_divisible(LAST_CHANNELS * max(1.0, width_mult), ROUND_NEAREST)
        layers.append(ConvBNAct(in_channels, last_channels, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.num_features = last_channels
        self.classifier = self._make_classifier(num_classes)
        self.default_input_size = (3, 32, 32) if variant == "cifar" else (3, 224, 224)
        # The reference implementation's initialisation.
        init_conv_bn_(self.features, nn.init.kaiming_normal_, mode="fan_out")


MOBILENET_V2 = "MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381)"
#: The paper's ImageNet figures (Table 4); parameters at 1.0 from the reference code (3,504,872).
PAPER_FIGURES = (
    PaperFigure.of(
        "mobilenet_v2", 300 * M, 3_504_872, 72.0, f"{MOBILENET_V2}, Table 4", width_mult=1.0
    ),
    PaperFigure.of(
        "mobilenet_v2", 585 * M, 6.9 * M, 74.7, f"{MOBILENET_V2}, Table 4", width_mult=1.4
    ),
)


register_model(
    "mobilenet_v2",
    paper="Sandler et al., MobileNetV2, CVPR 2018 (arXiv:1801.04381), Table 2",
    classifier="classifier.1",
    layouts={"torchvision": {}, "timm": {}},
    paper_figures=PAPER_FIGURES,
    plot_style=PlotStyle("mobilenet_v2", "tab:green", "^", "#1b6e1b"),
    compare_configs=({}, {"width_mult": 1.4}),
    hparams={
        "width_mult": HParam(
            1.0,
            float,
            "width multiplier alpha; channels rounded to multiples of 8",
            minimum=0.0,
            exclusive_minimum=True,
        ),
        "drop_rate": HParam(
            0.2,
            float,
            "dropout before the classifier, in [0, 1)",
            minimum=0.0,
            maximum=1.0,
            exclusive_maximum=True,
        ),
    },
)(MobileNetV2)
