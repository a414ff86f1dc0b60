"""MobileNet V1.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", arXiv:1704.04861 (2017). The network is Table 1: a standard 3x3 convolution
followed by 13 depthwise separable convolutions (Figure 3: depthwise 3x3, BN, ReLU, pointwise 1x1,
BN, ReLU), global average pooling and a fully connected layer. Section 3.3 defines the width
multiplier alpha (``width_mult``) and the resolution multiplier rho, which here is simply the
input size: pooling is global, so any input of 32 px or more works.

4,231,976 parameters at alpha = 1 with 1000 classes: convolutions without bias, each followed by
BatchNorm (2 parameters per channel), and a fully connected layer with bias.
"""

from __future__ import annotations

import torch
from torch import nn

from lightnets.models.base import PooledLinearHeadNet, validate_variant
from lightnets.models.facts import M, PaperFigure, PlotStyle
from lightnets.models.layers import ConvBNAct, init_conv_bn_, make_divisible
from lightnets.models.registry import HParam, register_model

#: Table 1, first row: "Conv / s2, 3x3x3x32".
STEM_CHANNELS = 32
#: Table 1, the 13 depthwise separable layers as (pointwise output channels, depthwise stride).
#: The table prints "Conv dw / s2" for the last depthwise layer although its input and output are
#: both 7x7; that stride is 1, as in every reference implementation.
DEPTHWISE_SEPARABLE_SETTING: list[tuple[int, int]] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]
#: Width rounding: every width is ``make_divisible(c * alpha, 8)`` (the MobileNet V2 reference
#: rule). For the paper's multipliers 1, 0.75, 0.5 and 0.25 every scaled width is already a
#: multiple of 8, so the paper's networks are reproduced exactly; other multipliers round to the
#: nearest multiple of 8, never below 8 nor below 90% of the exact width.
ROUND_NEAREST = 8
#: ``activation`` hyperparameter -> module. The paper (Figure 3) uses ReLU; TF-slim's reference
#: code, and timm's ``mobilenetv1_*`` weights ported from it, use ReLU6.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6}


def scaled_width(channels: int, width_mult: float) -> int:
    """Width of a layer of ``channels`` channels at width multiplier ``width_mult``."""
    return make_divisible(channels * width_mult, ROUND_NEAREST)


class DepthwiseSeparableConv(nn.Module):
    """Figure 3 (right): depthwise 3x3 conv, BN, ReLU, then pointwise 1x1 conv, BN, ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.dw = ConvBNAct(
            in_channels, in_channels, 3, stride=stride, groups=in_channels, activation=activation
        )
        self.pw = ConvBNAct(in_channels, out_channels, 1, activation=activation)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(PooledLinearHeadNet):
    """MobileNet V1 (Table 1) with width multiplier ``width_mult`` (Section 3.3).

    ``variant="imagenet"``: the stem is a 3x3 convolution with stride 2 (total stride 32, 7x7
    features at 224 px). ``variant="cifar"``: the stem is the same 3x3 convolution with stride 1,
    so it keeps the full 32x32 resolution; the depthwise layers stride as in Table 1 (total stride
    16, 2x2 features at 32 px). The classifier is global average pooling, dropout
    (p = ``drop_rate``; 0 by default: Section 4 trains with little regularisation, and the
    reference TensorFlow code keeps 99.9% of activations) and a linear layer with bias.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        variant: str = "imagenet",
        *,
        width_mult: float = 1.0,
        drop_rate: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__(num_classes, variant)
        self.drop_rate = drop_rate
        act = ACTIVATIONS[activation]
        stem_stride = 1 if validate_variant(variant) == "cifar" else 2
        in_channels = scaled_width(STEM_CHANNELS, width_mult)
        layers: list[nn.Module] = [ConvBNAct(3, in_channels, 3, stride=stem_stride, activation=act)]
        for channels, stride in DEPTHWISE_SEPARABLE_SETTING:
            out_channels = scaled_width(channels, width_mult)
            layers.append(DepthwiseSeparableConv(in_channels, out_channels, stride, act))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.num_features = in_channels
        self.classifier = self._make_classifier(num_classes)
        self.default_input_size = (3, 32, 32) if variant == "cifar" else (3, 224, 224)
        # As MobileNet V2's reference implementation (the paper gives no initialisation).
        init_conv_bn_(self.features, nn.init.kaiming_normal_, mode="fan_out")


MOBILENETS = "MobileNets (Howard et al. 2017, arXiv:1704.04861)"
#: The paper's ImageNet figures: Table 6 (width multiplier) and Table 7 (resolution).
PAPER_FIGURES = (
    PaperFigure.of(
        "mobilenet_v1", 569 * M, 4.2 * M, 70.6, f"{MOBILENETS}, Table 6", width_mult=1.0
    ),
    PaperFigure.of(
        "mobilenet_v1", 325 * M, 2.6 * M, 68.4, f"{MOBILENETS}, Table 6", width_mult=0.75
    ),
    PaperFigure.of(
        "mobilenet_v1", 149 * M, 1.3 * M, 63.7, f"{MOBILENETS}, Table 6", width_mult=0.5
    ),
    PaperFigure.of(
        "mobilenet_v1", 41 * M, 0.5 * M, 50.6, f"{MOBILENETS}, Table 6", width_mult=0.25
    ),
    PaperFigure.of(
        "mobilenet_v1", 418 * M, 4.2 * M, 69.1, f"{MOBILENETS}, Table 7", 192, width_mult=1.0
    ),
    PaperFigure.of(
        "mobilenet_v1", 290 * M, 4.2 * M, 67.2, f"{MOBILENETS}, Table 7", 160, width_mult=1.0
    ),
    PaperFigure.of(
        "mobilenet_v1", 186 * M, 4.2 * M, 64.4, f"{MOBILENETS}, Table 7", 128, width_mult=1.0
    ),
)


register_model(
    "mobilenet_v1",
    paper="Howard et al., MobileNets, arXiv:1704.04861 (2017), Table 1",
    classifier="classifier.1",
    layouts={"timm": {}},  # timm's mobilenetv1_* (with activation=relu6 to match its outputs)
    paper_figures=PAPER_FIGURES,
    plot_style=PlotStyle("mobilenet_v1", "tab:blue", "o", "#0b4f8a"),
    # The width multipliers of the paper's trade-off (Table 6).
    compare_configs=({}, {"width_mult": 0.5}, {"width_mult": 0.25}),
    hparams={
        "width_mult": HParam(
            1.0,
            float,
            "width multiplier alpha (paper: 1, 0.75, 0.5, 0.25); channels rounded to multiples "
            "of 8",
            minimum=0.0,
            exclusive_minimum=True,
        ),
        "drop_rate": HParam(
            0.0,
            float,
            "dropout before the classifier, in [0, 1)",
            minimum=0.0,
            maximum=1.0,
            exclusive_maximum=True,
        ),
        "activation": HParam(
            "relu",
            str,
            "relu (the paper) or relu6 (TF-slim and timm's mobilenetv1_* weights)",
            choices=tuple(ACTIVATIONS),
        ),
    },
)(MobileNetV1)
