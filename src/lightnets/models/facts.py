"""What a family declares about itself besides its builder and hyperparameters.

Declared once, beside the builder, on its registry entry (:func:`~lightnets.models.register_model`),
as torchvision's ``_COMMON_META`` and timm's default configurations do; everything that needs a
family's facts reads them from the entry (:func:`~lightnets.models.get_model_entry`): the weights
readers its classifier and the weight layouts it accepts, ``lightnets profile`` and ``compare``
its paper's figures, the figures its plot style. Plain data only: nothing here draws or counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PaperFigure", "PlotStyle"]

#: A million, for writing the papers' figures as they print them (569M MACs: ``569 * M``).
M = 1e6


@dataclass(frozen=True)
class PaperFigure:
    """What a paper reports for one configuration (``None`` where it reports nothing):
    ImageNet, 1000 classes; MACs are the paper's "FLOPs" / "mult-adds" (multiply-accumulates).

    ``hparams`` are the hyperparameters that identify the configuration (the others at their
    defaults); ``resolution`` the input size in pixels. Printed beside our counts, never used
    to compute anything.
    """

    name: str
    hparams: tuple[tuple[str, Any], ...]
    resolution: int
    macs: int | None
    params: int | None
    top1: float | None
    source: str

    @classmethod
    def of(
        cls,
        name: str,
        macs: float | None,
        params: float | None,
        top1: float | None,
        source: str,
        resolution: int = 224,
        **hparams: Any,
    ) -> PaperFigure:
        """A figure as the paper's table gives it: ``PaperFigure.of("mobilenet_v1", 569 * M,
        4.2 * M, 70.6, "MobileNets, Table 6", width_mult=1.0)`` (counts rounded to integers)."""
        return cls(
            name=name,
            hparams=tuple(sorted(hparams.items())),
            resolution=resolution,
            macs=round(macs) if macs is not None else None,
            params=round(params) if params is not None else None,
            top1=top1,
            source=source,
        )


@dataclass(frozen=True)
class PlotStyle:
    """How figures draw a family's points: ``family`` names its legend entry (one for every
    model that shares it, e.g. both SqueezeNets), ``colour`` and ``marker`` its markers,
    ``label_colour`` its point labels (darker than the markers, to stay readable on white).
    Colours and markers are matplotlib's names."""

    family: str
    colour: str
    marker: str
    label_colour: str
