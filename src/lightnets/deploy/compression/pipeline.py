"""The Deep Compression pipeline: prune, (fine-tune), share weights, (fine-tune), code, write.

Han, Mao & Dally, "Deep Compression", ICLR 2016 (Figure 1): pruning to the important
connections, retraining with the mask, k-means weight sharing, retraining the centroids, then
Huffman coding. The defaults are SqueezeNet's setting (Iandola et al. 2016, Section 4 and
Table 2): about a third of the weights kept and 6-bit shared weights (0.47 MB for SqueezeNet
1.0; 8 bits give 0.66 MB), with Deep Compression's sparse index gaps of 8 bits for
convolutions and 5 for fully connected layers.
"""

from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightnets.data.loader import BatchLoader
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightnets.deploy.compression.codec import SharedLayer, write_compressed
from lightnets.deploy.compression.pruning import (
    KINDS,
    SCOPES,
    Layer,
    apply_pruning,
    compressible_layers,
    remove_pruning,
)
from lightnets.deploy.compression.report import RANDOM_WEIGHTS, CompressionReport, build_report
from lightnets.deploy.compression.sharing import attach_shared, detach_shared
from lightnets.errors import InvalidArgumentError, check_float, check_int

#: Deep Compression, Section 2: bits of a sparse index gap, by layer kind.
INDEX_BITS = {"conv": 8, "fc": 5}


@dataclass(frozen=True)
class CompressionSettings:
    """What to keep and how finely to share it.

    ``bits`` applies to every layer unless ``per_layer_bits`` names its kind (``conv``,
    ``fc``) or its module name (a name wins over a kind). Deep Compression's AlexNet setting is
    ``per_layer_bits={"conv": 8, "fc": 5}``.
    """

    density: float = 0.33
    bits: int = 6
    per_layer_bits: dict[str, int] = field(default_factory=dict)
    index_bits: dict[str, int] = field(default_factory=lambda: dict(INDEX_BITS))
    scope: str = "layer"

    def validate(self) -> CompressionSettings:
        check_float("density", self.density, minimum=0.0, maximum=1.0, exclusive_minimum=True)
        check_int("bits", self.bits, minimum=1, maximum=8)
        for key, value in {**self.per_layer_bits, **self.index_bits}.items():
            check_int(f"bits of {key!r}", value, minimum=1, maximum=8)
        if self.scope not in SCOPES:
            raise InvalidArgumentError(
                f"unknown pruning scope {self.scope!r}; allowed: {', '.join(SCOPES)}"
            )
        return self

    def bits_for(self, layer: Layer) -> int:
        return self.per_layer_bits.get(layer.name, self.per_layer_bits.get(layer.kind, self.bits))

    def check_names(self, layers: list[Layer]) -> None:
        known = {layer.name for layer in layers} | set(KINDS)
        unknown = sorted(set(self.per_layer_bits) - known)
        if unknown:
            raise InvalidArgumentError(
                f"--per-layer-bits names {', '.join(unknown)}, which is neither a layer kind "
                f"({', '.join(KINDS)}) nor a layer of this model (e.g. {layers[0].name})"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "density": self.density,
            "bits": self.bits,
            "per_layer_bits": dict(self.per_layer_bits),
            "index_bits": dict(self.index_bits),
            "scope": self.scope,
        }


def parse_per_layer_bits(text: str) -> dict[str, int]:
    """``"conv=8,fc=5"`` -> ``{"conv": 8, "fc": 5}`` (keys: a layer kind or a layer name)."""
    result: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise InvalidArgumentError(
                f"--per-layer-bits item {item!r} is not KEY=BITS (e.g. conv=8,fc=5)"
            )
        result[key.strip()] = check_int(
            f"bits of {key.strip()!r}", int(value), minimum=1, maximum=8
        )
    return result


@dataclass
class CompressionData:
    """Optional data: fine-tuning (``finetune_epochs`` > 0; with 0, the training images only
    re-estimate BatchNorm statistics) and/or top-1 evaluation."""

    finetune: Any = None  # a training loader (BatchLoader) or None
    evaluate: Any = None  # an evaluation loader or None
    num_classes: int = 0
    finetune_epochs: int = 0
    lr: float = 0.005
    batch_size: int = 128
    name: str | None = None


def finetune(model: nn.Module, data: CompressionData) -> None:
    """A short cosine-annealed SGD fine-tune, with the project's recipe, optimiser and loader.

    Pruning masks (``torch.nn.utils.prune``) and codebook parametrizations stay attached, so
    pruned weights stay zero and shared weights move only through their centroids.
    """
    from lightnets.train.recipes import build_optimizer, build_scheduler, get_recipe

    loader = data.finetune
    recipe = get_recipe(
        "cosine", epochs=data.finetune_epochs, lr=data.lr, warmup_epochs=0.0, weight_decay=0.0
    )
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, len(loader))
    criterion = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(data.finetune_epochs):
        loader.set_epoch(epoch)
        for images, targets in loader:
            loss = criterion(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()


#: Batches used to re-estimate BatchNorm statistics when there is data but no fine-tune.
RECALIBRATION_BATCHES = 20


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, loader: BatchLoader, batches: int = RECALIBRATION_BATCHES
) -> None:
    """Re-estimate BatchNorm running statistics on training images (no weight changes).

    Pruning and weight sharing shift every layer's output statistics; the stored running means
    and variances then mislead inference. A forward pass in train mode with a cumulative
    average (``momentum=None``) measures them afresh.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    loader.set_epoch(0)
    for index, (images, _) in enumerate(loader):
        if index >= batches:
            break
        model(images)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def adapt(model: nn.Module, data: CompressionData | None) -> None:
    """Fine-tune (``finetune_epochs`` > 0) or only recalibrate BatchNorm (0), given data."""
    if data is None or data.finetune is None:
        return
    if data.finetune_epochs > 0:
        finetune(model, data)
    else:
        recalibrate_batchnorm(model, data.finetune)


def top1(model: nn.Module, data: CompressionData | None) -> float | None:
    """Top-1 on the evaluation loader (the project's ``evaluate``), or None without one."""
    if data is None or data.evaluate is None:
        return None
    from lightnets.train.evaluate import evaluate

    device = next(model.parameters()).device
    return evaluate(model, data.evaluate, num_classes=data.num_classes, device=device).top1


def compress(
    model: nn.Module,
    path: str | os.PathLike[str],
    settings: CompressionSettings | None = None,
    *,
    data: CompressionData | None = None,
    source: dict[str, Any] | None = None,
    weights_from: str = RANDOM_WEIGHTS,
) -> tuple[CompressionReport, nn.Module]:
    """Compress ``model`` (left untouched) into ``path``; returns the report and the decoded
    model (dense, pruned and quantized weights: what loading the file gives).

    ``source`` is the checkpoint's record to carry over (``dataset``, ``config``) so that
    ``eval``/``predict`` preprocess as the original run did. ``weights_from`` says where the
    weights come from, for the report (default: a never-trained model's random initial weights).
    """
    settings = (settings or CompressionSettings()).validate()
    hparams = getattr(model, "hparams", None)
    if not isinstance(hparams, dict) or "name" not in hparams:
        raise InvalidArgumentError("compress needs a lightnets model (create_model or checkpoint)")
    model = copy.deepcopy(model).float().eval()
    layers = compressible_layers(model)
    settings.check_names(layers)
    tuning = data is not None and data.finetune is not None and data.finetune_epochs > 0
    tuned = data if tuning else None
    shared, accuracy = _prune_and_share(model, layers, settings, data)
    keys = {layer.key for layer in shared}
    dense = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in keys}
    meta = {
        "hparams": dict(hparams),
        "settings": settings.as_dict(),
        "finetune": {"dataset": tuned.name, "epochs": tuned.finetune_epochs} if tuned else None,
        **{k: v for k, v in (source or {}).items() if k in ("dataset", "config")},
    }
    size, costs, dense_bytes = write_compressed(path, shared, dense, meta)
    report = build_report(
        path,
        size,
        shared,
        costs,
        dense,
        dense_bytes,
        settings,
        accuracy,
        params=sum(p.numel() for p in model.parameters()),
        finetune_epochs=tuned.finetune_epochs if tuned else 0,
        dataset=data.name if data is not None else None,
        weights_from=weights_from,
    )
    return report, model


def _prune_and_share(
    model: nn.Module,
    layers: list[Layer],
    settings: CompressionSettings,
    data: CompressionData | None,
) -> tuple[list[SharedLayer], dict[str, float | None]]:
    """Deep Compression's first two stages on ``model`` in place (Figure 1): prune and adapt,
    then share weights and adapt; the shared layers and top-1 before, pruned and shared."""
    accuracy = {"dense": top1(model, data)}
    apply_pruning(layers, settings.density, settings.scope)
    adapt(model, data)
    remove_pruning(layers)
    accuracy["pruned"] = top1(model, data)
    for layer in layers:
        attach_shared(layer.module, settings.bits_for(layer))
    adapt(model, data)
    shared = [
        SharedLayer(
            layer.key,
            layer.kind,
            settings.bits_for(layer),
            settings.index_bits[layer.kind],
            *detach_shared(layer.module),
        )
        for layer in layers
    ]
    accuracy["compressed"] = top1(model, data)
    return shared, accuracy
