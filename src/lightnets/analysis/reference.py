"""The papers' own figures, as data, each with its source (ImageNet, 1000 classes).

Each family declares its paper's figures on its registry entry, beside its builder
(:class:`lightnets.models.PaperFigure`, ``register_model(paper_figures=...)``); this module finds
the one for a configuration. Used to print the papers' numbers beside ours; they are never used
to compute anything. MACs are the papers' "FLOPs" / "mult-adds" (multiply-accumulates).
"""

from __future__ import annotations

from typing import Any

from lightnets.models import get_model_entry, list_models, model_entries
from lightnets.models.facts import PaperFigure

__all__ = [
    "MOBILENET_V1_TABLE2",
    "PaperFigure",
    "model_paper_figure",
    "paper_figure",
    "paper_figures",
    "table2_for",
]


def paper_figures(name: str | None = None) -> tuple[PaperFigure, ...]:
    """Every paper figure of model ``name`` (of every registered model when None; none for a
    name nobody registered), as the families declare them."""
    if name is not None and name not in list_models():
        return ()
    entries = model_entries() if name is None else [get_model_entry(name)]
    return tuple(figure for entry in entries for figure in entry.paper_figures)


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

    Only the ImageNet variant with 1000 classes matches, and only a network with the
    hyperparameters every figure of its family assumes (the entry's ``paper_hparams``);
    hyperparameters absent from a figure's key (``drop_rate``, ...) do not change the figures.
    """
    if variant != "imagenet" or num_classes != 1000 or name not in list_models():
        return None
    entry = get_model_entry(name)
    values = {**entry.defaults, **(hparams or {})}
    if any(values.get(key) != value for key, value in entry.paper_hparams.items()):
        return None
    for figure in entry.paper_figures:
        if figure.resolution == resolution and all(
            values.get(key) == value for key, value in figure.hparams
        ):
            return figure
    return None


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
