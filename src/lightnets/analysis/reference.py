"""The papers' own figures, as data, each with its source (ImageNet, 1000 classes).

Used to print the papers' numbers beside ours; they are never used to compute anything.
MACs are the papers' "FLOPs" / "mult-adds" (multiply-accumulates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "MOBILENET_V1_TABLE2",
    "PAPER_FIGURES",
    "PaperFigure",
    "model_paper_figure",
    "paper_figure",
    "table2_for",
]

MOBILENETS = "MobileNets (Howard et al. 2017, arXiv:1704.04861)"
MOBILENET_V2 = "MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381)"
SHUFFLENET = "ShuffleNet (Zhang et al. 2018, arXiv:1707.01083)"
SHUFFLENET_V2 = "ShuffleNet V2 (Ma et al. 2018, arXiv:1807.11164)"
SQUEEZENET = "SqueezeNet (Iandola et al. 2016, arXiv:1602.07360)"


@dataclass(frozen=True)
class PaperFigure:
    """What a paper reports for one configuration (``None`` where it reports nothing).

    ``hparams`` are the hyperparameters that identify the configuration (the others at their
    defaults); ``resolution`` the input size in pixels.
    """

    name: str
    hparams: tuple[tuple[str, Any], ...]
    resolution: int
    macs: int | None
    params: int | None
    top1: float | None
    source: str


def _fig(
    name: str,
    macs: float | None,
    params: float | None,
    top1: float | None,
    source: str,
    resolution: int = 224,
    **hparams: Any,
) -> PaperFigure:
    return PaperFigure(
        name=name,
        hparams=tuple(sorted(hparams.items())),
        resolution=resolution,
        macs=round(macs) if macs is not None else None,
        params=round(params) if params is not None else None,
        top1=top1,
        source=source,
    )


M = 1e6
PAPER_FIGURES: tuple[PaperFigure, ...] = (
    # MobileNets, Table 6 (width multiplier) and Table 7 (resolution).
    _fig("mobilenet_v1", 569 * M, 4.2 * M, 70.6, f"{MOBILENETS}, Table 6", width_mult=1.0),
    _fig("mobilenet_v1", 325 * M, 2.6 * M, 68.4, f"{MOBILENETS}, Table 6", width_mult=0.75),
    _fig("mobilenet_v1", 149 * M, 1.3 * M, 63.7, f"{MOBILENETS}, Table 6", width_mult=0.5),
    _fig("mobilenet_v1", 41 * M, 0.5 * M, 50.6, f"{MOBILENETS}, Table 6", width_mult=0.25),
    _fig("mobilenet_v1", 418 * M, 4.2 * M, 69.1, f"{MOBILENETS}, Table 7", 192, width_mult=1.0),
    _fig("mobilenet_v1", 290 * M, 4.2 * M, 67.2, f"{MOBILENETS}, Table 7", 160, width_mult=1.0),
    _fig("mobilenet_v1", 186 * M, 4.2 * M, 64.4, f"{MOBILENETS}, Table 7", 128, width_mult=1.0),
    # MobileNetV2, Table 4; parameters at 1.0 from the reference code (3,504,872).
    _fig("mobilenet_v2", 300 * M, 3_504_872, 72.0, f"{MOBILENET_V2}, Table 4", width_mult=1.0),
    _fig("mobilenet_v2", 585 * M, 6.9 * M, 74.7, f"{MOBILENET_V2}, Table 4", width_mult=1.4),
    # ShuffleNet, Table 1 (complexity per group count at 1x) and Table 2 (top-1 of g=3).
    _fig("shufflenet_v1", 143 * M, None, None, f"{SHUFFLENET}, Table 1", groups=1, width_mult=1.0),
    _fig("shufflenet_v1", 140 * M, None, None, f"{SHUFFLENET}, Table 1", groups=2, width_mult=1.0),
    _fig(
        "shufflenet_v1",
        137 * M,
        1.9 * M,
        67.4,
        f"{SHUFFLENET}, Tables 1-2",
        groups=3,
        width_mult=1.0,
    ),
    _fig("shufflenet_v1", 133 * M, None, None, f"{SHUFFLENET}, Table 1", groups=4, width_mult=1.0),
    _fig(
        "shufflenet_v1", 137 * M, 2.4 * M, None, f"{SHUFFLENET}, Table 1", groups=8, width_mult=1.0
    ),
    _fig(
        "shufflenet_v1", 38 * M, 0.7 * M, None, f"{SHUFFLENET}, Table 2", groups=3, width_mult=0.5
    ),
    _fig(
        "shufflenet_v1", 292 * M, 3.4 * M, None, f"{SHUFFLENET}, Table 2", groups=3, width_mult=1.5
    ),
    _fig(
        "shufflenet_v1", 524 * M, 5.4 * M, None, f"{SHUFFLENET}, Table 2", groups=3, width_mult=2.0
    ),
    # ShuffleNet V2, Table 5 (MACs) and Table 8 (top-1); parameters from the reference code.
    _fig(
        "shufflenet_v2", 41 * M, 1_366_792, 60.3, f"{SHUFFLENET_V2}, Tables 5 and 8", width_mult=0.5
    ),
    _fig(
        "shufflenet_v2",
        146 * M,
        2_278_604,
        69.4,
        f"{SHUFFLENET_V2}, Tables 5 and 8",
        width_mult=1.0,
    ),
    _fig(
        "shufflenet_v2",
        299 * M,
        3_503_624,
        72.6,
        f"{SHUFFLENET_V2}, Tables 5 and 8",
        width_mult=1.5,
    ),
    _fig(
        "shufflenet_v2",
        591 * M,
        7_393_996,
        74.9,
        f"{SHUFFLENET_V2}, Tables 5 and 8",
        width_mult=2.0,
    ),
    # SqueezeNet, Table 2 (top-1 of 1.0). The paper prints no MAC count: the ~819M (1.0) and
    # ~349M (1.1) are the reference implementations' count, as the v1.1 release notes give it.
    _fig(
        "squeezenet1_0",
        819 * M,
        1_248_424,
        57.5,
        f"{SQUEEZENET}, Table 2; MACs ~819M counted from the reference implementation",
    ),
    _fig(
        "squeezenet1_1",
        349 * M,
        1_235_496,
        None,
        "SqueezeNet v1.1 reference release (~349M MACs, 2.4x fewer than 1.0)",
    ),
)

#: MobileNets, Table 2: share of MACs and of parameters per layer type, for 1.0 MobileNet-224.
#: The paper prints 1.19% for the 3x3 convolution's MACs; the four shares then sum to 99.29%.
#: The network gives 1.91% (digits swapped) and the shares sum to 100%.
MOBILENET_V1_TABLE2: dict[str, tuple[float, float]] = {
    "conv1x1": (94.86, 74.59),
    "dw3x3": (3.06, 1.06),
    "conv3x3": (1.19, 0.02),
    "fc": (0.18, 24.33),
}


def paper_figure(
    name: str,
    hparams: dict[str, Any] | None = None,
    resolution: int = 224,
    *,
    num_classes: int = 1000,
    variant: str = "imagenet",
) -> PaperFigure | None:
    """The paper's figures for this configuration, or ``None`` where the paper has none.

    Only the ImageNet variant with 1000 classes matches; hyperparameters absent from a figure's
    key (``drop_rate``, ...) do not change the figures.
    """
    if variant != "imagenet" or num_classes != 1000:
        return None
    hparams = dict(hparams or {})
    for figure in PAPER_FIGURES:
        if figure.name != name or figure.resolution != resolution:
            continue
        if all(hparams.get(key, _default(name, key)) == value for key, value in figure.hparams):
            if name.startswith("squeezenet") and (
                hparams.get("bypass", "none") != "none" or hparams.get("batch_norm", False)
            ):
                return None
            return figure
    return None


def _default(name: str, key: str) -> Any:
    from lightnets.models import get_model_entry

    spec = get_model_entry(name).hparams.get(key)
    return spec.default if spec is not None else None


def model_paper_figure(model: Any, resolution: int) -> PaperFigure | None:
    """:func:`paper_figure` for a built lightnets model (its ``hparams``); ``None`` for others."""
    hparams = dict(getattr(model, "hparams", {}) or {})
    return paper_figure(
        hparams.get("name", ""),
        hparams,
        resolution,
        num_classes=hparams.get("num_classes", 0),
        variant=hparams.get("variant", ""),
    )


def table2_for(figure: PaperFigure | None) -> dict[str, tuple[float, float]] | None:
    """MobileNets' Table 2 when ``figure`` is 1.0 MobileNet-224, the one network it describes."""
    if (
        figure is not None
        and figure.name == "mobilenet_v1"
        and figure.resolution == 224
        and dict(figure.hparams).get("width_mult") == 1.0
    ):
        return MOBILENET_V1_TABLE2
    return None
