"""SqueezeNet v1.0 and v1.1.

Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model
size", arXiv:1602.07360 (2016). Table 1 gives the v1.0 macro-architecture; v1.1 is the reference
implementation's revision (3x3 stem with 64 filters, max-pools moved earlier: 2.4x fewer MACs, same
accuracy). Section 6 adds bypass connections around Fire modules.

The layer structure is torchvision's (``features`` / ``classifier``, Fire modules with
``squeeze``, ``expand1x1`` and ``expand3x3``), so with ``bypass="none"`` and ``batch_norm=False``
the state dict maps tensor for tensor onto torchvision's trained weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightnets.errors import InvalidArgumentError
from lightnets.models.base import LightweightNet, validate_variant
from lightnets.models.facts import M, PaperFigure, PlotStyle
from lightnets.models.layers import init_conv_bn_
from lightnets.models.registry import HParam, register_model

# The macro-architectures as data (paper Table 1 for v1.0). Each row is a layer of ``features``:
#   ("conv", out_channels, kernel, stride)  the stem, followed by its ReLU
#   ("pool",)                                3x3 max-pool, stride 2, ceil_mode (as in Caffe)
#   ("fire", s1x1, e1x1, e3x3)               Fire module: squeeze, then expand 1x1 | expand 3x3
# Fire modules are numbered fire2 ... fire9 in the paper, in the order they appear.
SQUEEZENET_CFGS: dict[str, list[tuple]] = {
    "1_0": [
        ("conv", 96, 7, 2),
        ("pool",),
        ("fire", 16, 64, 64),  # fire2
        ("fire", 16, 64, 64),  # fire3
        ("fire", 32, 128, 128),  # fire4
        ("pool",),
        ("fire", 32, 128, 128),  # fire5
        ("fire", 48, 192, 192),  # fire6
        ("fire", 48, 192, 192),  # fire7
        ("fire", 64, 256, 256),  # fire8
        ("pool",),
        ("fire", 64, 256, 256),  # fire9
    ],
    "1_1": [
        ("conv", 64, 3, 2),
        ("pool",),
        ("fire", 16, 64, 64),  # fire2
        ("fire", 16, 64, 64),  # fire3
        ("pool",),
        ("fire", 32, 128, 128),  # fire4
        ("fire", 32, 128, 128),  # fire5
        ("pool",),
        ("fire", 48, 192, 192),  # fire6
        ("fire", 48, 192, 192),  # fire7
        ("fire", 64, 256, 256),  # fire8
        ("fire", 64, 256, 256),  # fire9
    ],
}

#: Section 6: simple bypass (identity) around the Fire modules whose input and output widths match.
SIMPLE_BYPASS_FIRES = (3, 5, 7, 9)
#: Section 6: complex bypass (1x1 convolution) around the remaining Fire modules.
COMPLEX_BYPASS_FIRES = (2, 4, 6, 8)

BYPASS_CHOICES = ("none", "simple", "complex")

#: CIFAR variant: kernel of the stride-1 stem (both versions), as in the widely used CIFAR ports.
CIFAR_STEM_KERNEL = 3


def _conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    batch_norm: bool = False,
) -> nn.Module:
    """A plain convolution with bias (the paper), or convolution + BatchNorm without bias."""
    if not batch_norm:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class Fire(nn.Module):
    """Fire module (Section 3.2): a 1x1 squeeze layer feeding a mix of 1x1 and 3x3 expand filters.

    ``bypass`` is ``None``, ``"simple"`` (identity shortcut, input and output widths must match)
    or ``"complex"`` (a 1x1 convolution on the shortcut), Section 6 and Figure 2. The shortcut is
    added to the concatenated, already rectified, expand outputs.
    """

    def __init__(
        self,
        in_channels: int,
        squeeze_channels: int,
        expand1x1_channels: int,
        expand3x3_channels: int,
        batch_norm: bool = False,
        bypass: str | None = None,
    ) -> None:
        super().__init__()
        out_channels = expand1x1_channels + expand3x3_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.squeeze = _conv(in_channels, squeeze_channels, 1, batch_norm=batch_norm)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = _conv(squeeze_channels, expand1x1_channels, 1, batch_norm=batch_norm)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = _conv(
            squeeze_channels, expand3x3_channels, 3, padding=1, batch_norm=batch_norm
        )
        self.expand3x3_activation = nn.ReLU(inplace=True)
        self.bypass: nn.Module | None
        if bypass is None:
            self.bypass = None
        elif bypass == "simple":
            if in_channels != out_channels:
                raise InvalidArgumentError(
                    f"simple bypass needs equal widths, got {in_channels}->{out_channels}"
                )
            self.bypass = nn.Identity()
        elif bypass == "complex":
            self.bypass = _conv(in_channels, out_channels, 1, batch_norm=batch_norm)
        else:
            raise InvalidArgumentError(f"unknown bypass {bypass!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_activation(self.squeeze(x))
        out = torch.cat(
            [
                self.expand1x1_activation(self.expand1x1(s)),
                self.expand3x3_activation(self.expand3x3(s)),
            ],
            1,
        )
        if self.bypass is not None:
            out = out + self.bypass(x)
        return out


def _fire_bypass(fire_index: int, bypass: str) -> str | None:
    """The shortcut around fire ``fire_index`` for the network's ``bypass`` setting (Section 6)."""
    if bypass in ("simple", "complex") and fire_index in SIMPLE_BYPASS_FIRES:
        return "simple"
    if bypass == "complex" and fire_index in COMPLEX_BYPASS_FIRES:
        return "complex"
    return None


def _build_features(
    cfg: list[tuple], cifar: bool, bypass: str, batch_norm: bool
) -> tuple[nn.Sequential, int]:
    """``features`` from one of :data:`SQUEEZENET_CFGS`, and its output channels."""
    layers: list[nn.Module] = []
    channels = 3
    fire_index = 2
    for row in cfg:
        if row[0] == "conv":
            _, out_channels, kernel, stride = row
            if cifar:
                kernel, stride = CIFAR_STEM_KERNEL, 1
            padding = (kernel - 1) // 2 if cifar else 0
            layers.append(
                _conv(channels, out_channels, kernel, stride, padding, batch_norm=batch_norm)
            )
            layers.append(nn.ReLU(inplace=True))
            channels = out_channels
        elif row[0] == "pool":
            # CIFAR: the pool after the stem (before any fire) keeps its index as an identity.
            before_fires = fire_index == 2
            pool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
            layers.append(nn.Identity() if cifar and before_fires else pool)
        else:
            _, squeeze, e1, e3 = row
            bypass_kind = _fire_bypass(fire_index, bypass)
            fire = Fire(channels, squeeze, e1, e3, batch_norm=batch_norm, bypass=bypass_kind)
            layers.append(fire)
            channels = fire.out_channels
            fire_index += 1
    return nn.Sequential(*layers), channels


class SqueezeNet(LightweightNet):
    """SqueezeNet v1.0 / v1.1 (Table 1), optionally with bypass (Section 6) and BatchNorm.

    ``variant="imagenet"``: the paper's network; a 224x224 input gives a 13x13 map before the
    classifier (both versions). ``variant="cifar"``: the stem is a 3x3 convolution with
    stride 1 and padding 1 (v1.0 keeps its 96 filters, v1.1 its 64) and the max-pool after the
    stem is replaced by an identity, so the stem keeps the full 32x32 resolution; the two later
    max-pools downsample as in the paper (32 -> 16 -> 8). The identity keeps the layer indices
    of ``features`` equal to the ImageNet network's, so Fire weights transfer by key.

    ``batch_norm=True`` puts BatchNorm (and drops the bias) after every convolution of
    ``features`` (stem, squeeze, expand, complex bypass); the classifier's 1x1 convolution,
    whose outputs are the class scores, keeps its bias and has no BatchNorm.

    The classifier is the paper's conv10: dropout (p = ``drop_rate``, 0.5 in the paper, after
    fire9), a 1x1 convolution to ``num_classes`` channels, ReLU, global average pooling.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        variant: str = "imagenet",
        *,
        version: str = "1_0",
        bypass: str = "none",
        batch_norm: bool = False,
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__(num_classes, variant)
        cifar = validate_variant(variant) == "cifar"
        if version not in SQUEEZENET_CFGS:
            raise InvalidArgumentError(
                f"version={version!r} is not supported; allowed: {', '.join(SQUEEZENET_CFGS)}"
            )
        cfg = SQUEEZENET_CFGS[version]
        self.version = version
        self.drop_rate = drop_rate
        self.features, self.num_features = _build_features(cfg, cifar, bypass, batch_norm)
        self.classifier = self._make_classifier(num_classes)
        self.default_input_size = (3, 32, 32) if cifar else (3, 224, 224)
        # torchvision's initialisation: Kaiming-uniform convolutions, zero biases; the final
        # convolution is drawn from N(0, 0.01), each class's weights then centred, in
        # _make_classifier.
        init_conv_bn_(self.features, nn.init.kaiming_uniform_)

    def _make_classifier(self, num_classes: int) -> nn.Sequential:
        final_conv = nn.Conv2d(self.num_features, num_classes, kernel_size=1)
        if not final_conv.weight.is_meta:  # see init_conv_bn_
            nn.init.normal_(final_conv.weight, mean=0.0, std=0.01)
            # conv10 reads fire9's outputs, which pass a ReLU: non-negative, with a mean shared
            # by every channel. A class whose weights happen to sum below zero then scores below
            # zero on every image and location, so its ReLU passes no gradient and it never
            # learns (at 32 px on Fashion-MNIST: 1 to 3 of 10 classes in 4 of the 6 seeds and
            # versions tried). Centring each class's weights
            # removes that shared term: every class starts alive. Same architecture, same scale.
            with torch.no_grad():
                final_conv.weight.sub_(final_conv.weight.mean(dim=(1, 2, 3), keepdim=True))
            assert final_conv.bias is not None  # Conv2d has a bias unless asked not to
            nn.init.zeros_(final_conv.bias)
        return nn.Sequential(
            nn.Dropout(p=self.drop_rate),
            final_conv,
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return x.mean((2, 3))
        return torch.flatten(self.classifier(x), 1)

    def _reset_classifier(self, num_classes: int) -> None:
        self.classifier = self._make_classifier(num_classes)


PAPER = "Iandola et al., SqueezeNet, arXiv:1602.07360 (2016)"

HPARAMS = {
    "bypass": HParam(
        "none",
        str,
        "bypass connections (Section 6): simple = identity around fire3/5/7/9, "
        "complex = also 1x1 conv around fire2/4/6/8",
        choices=BYPASS_CHOICES,
    ),
    "batch_norm": HParam(
        False,
        bool,
        "BatchNorm after every convolution of the trunk (default off: the paper's network; "
        "train's short one-cycle runs turn it on, said in their first line)",
    ),
    "drop_rate": HParam(
        0.5,
        float,
        "dropout before the conv10 classifier, in [0, 1)",
        minimum=0.0,
        maximum=1.0,
        exclusive_maximum=True,
    ),
}

#: Facts both versions share: torchvision's SqueezeNets, and the paper's figures, are of the
#: network without bypass or BatchNorm.
PLAIN = {"bypass": "none", "batch_norm": False}
#: The training recipes' values SqueezeNet needs instead of their own (read by
#: lightnets.train.recipes; measured on Fashion-MNIST, docs/training.md "Per-family values").
#: Without BatchNorm, SGD at the recipes' peak lr 0.1 drives every conv10 ReLU to zero, or the
#: loss to NaN, within the first epochs, and the run stays at chance; so did the paper's lr 0.04
#: (Section 5: SGD, lr 0.04, polynomial decay, for 170k iterations on ImageNet). AdamW's steps do
#: not grow with the gradient; at lr 0.002 it too sometimes pushed conv10 below zero for good, at
#: 0.001 never; batch 16 gives a 3-epoch run four times the steps of batch 128. Label smoothing
#: 0.1 (Szegedy et al. 2016, Section 7) stops pushing a wrong class's score down once its
#: probability reaches 0.01, so fewer conv10 outputs are driven below zero for good: 3-epoch
#: runs gained 2 to 3 points with it (docs/training.md). Measured for the one-cycle recipe only.
#: Short (one-cycle) runs also train with BatchNorm after every convolution of the trunk: without
#: it the network underfits 3 epochs (training top-1 about its test top-1; 77.6-80.2% on 5,000
#: Fashion-MNIST images over three seeds), with it every seed passed 80% (docs/training.md). The
#: shipped network keeps the paper's layers: export folds each BatchNorm into its convolution
#: (lightnets.deploy.fusion). ``--no-batch-norm`` trains the paper's trunk as it is.
RECIPE_DEFAULTS: dict[str, dict[str, object]] = {
    "onecycle": {
        "optimizer": "adamw",
        "lr": 0.001,
        "batch_size": 16,
        "label_smoothing": 0.1,
        "batch_norm": True,
    },
    "cifar": {"optimizer": "adamw", "lr": 0.001},
    "cosine": {"optimizer": "adamw", "lr": 0.001},
}


FACTS: dict[str, Any] = {
    "classifier": "classifier.1",
    "layouts": {"torchvision": PLAIN},
    "paper_hparams": PLAIN,
    "plot_style": PlotStyle("squeezenet", "tab:brown", "s", "#5b3a29"),
    "recipe_defaults": RECIPE_DEFAULTS,
}


@register_model(
    "squeezenet1_0",
    paper=PAPER + ", Table 1",
    hparams=HPARAMS,
    # Table 2 (top-1). The paper prints no MAC count: ~819M is the reference implementation's
    # count, as the v1.1 release notes give it.
    paper_figures=(
        PaperFigure.of(
            "squeezenet1_0",
            819 * M,
            1_248_424,
            57.5,
            "SqueezeNet (Iandola et al. 2016, arXiv:1602.07360), Table 2; MACs ~819M counted "
            "from the reference implementation",
        ),
    ),
    **FACTS,
)
def squeezenet1_0(num_classes: int = 1000, variant: str = "imagenet", **hparams: Any) -> SqueezeNet:
    """SqueezeNet v1.0: 7x7/2 stem with 96 filters, max-pools after conv1, fire4 and fire8."""
    return SqueezeNet(num_classes, variant, version="1_0", **hparams)


@register_model(
    "squeezenet1_1",
    paper=PAPER + ", v1.1 (reference implementation)",
    hparams=HPARAMS,
    paper_figures=(
        PaperFigure.of(
            "squeezenet1_1",
            349 * M,
            1_235_496,
            None,
            "SqueezeNet v1.1 reference release (~349M MACs, 2.4x fewer than 1.0)",
        ),
    ),
    **FACTS,
)
def squeezenet1_1(num_classes: int = 1000, variant: str = "imagenet", **hparams: Any) -> SqueezeNet:
    """SqueezeNet v1.1: 3x3/2 stem with 64 filters, max-pools after conv1, fire3 and fire5."""
    return SqueezeNet(num_classes, variant, version="1_1", **hparams)
