"""Reference weight layouts: how torchvision's and timm's state dicts name our tensors.

One table per source layout, transcribed from the reference code (torchvision's and timm's
model files; docs/pretrained.md lists the files each layout reads):

- ``lightnets``: our own names (every family).
- ``torchvision``: ``mobilenet_v2``, ``shufflenet_v2_x0_5`` ... ``x2_0``, ``squeezenet1_0`` /
  ``1_1``. Our modules are laid out as torchvision's, so the names are the same, tensor for
  tensor (the mapping is the identity); SqueezeNet only without bypass and BatchNorm.
- ``timm``: ``mobilenetv1_*`` and ``mobilenetv2_*`` (timm's ``EfficientNet`` class):
  ``conv_stem`` / ``bn1``, blocks grouped by stage as ``blocks.<stage>.<index>``, ``conv_head`` /
  ``bn2`` (MobileNet V2 only) and a bare ``classifier`` linear layer.

Which layouts a family accepts, with the hyperparameters each library's network has, and its
classifier module, are the family's own facts, on its registry entry (``layouts=``,
``classifier=``). A mapping is computed for a built model (our module prefix -> the layout's
module prefix), so it follows the model's width and the block structure of its paper table.
Files are recognised by :data:`SIGNATURES`: marker tensors name the layout and family, one probe
tensor gives the width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lightnets.errors import CheckpointError
from lightnets.models.base import LightweightNet
from lightnets.models.layers import make_divisible
from lightnets.models.registry import get_model_entry, model_entries

LAYOUTS = ("lightnets", "torchvision", "timm")


def classifier_of(family: str) -> str:
    """Our classifier module of ``family`` (the tensors replaced when the number of classes
    changes), from its registry entry."""
    return get_model_entry(family).classifier


def supported(layout: str) -> dict[str, dict[str, Any]]:
    """The families whose files in ``layout`` load, with the hyperparameters that library's
    network has (from each registry entry's ``layouts``), in registration order."""
    return {
        entry.name: entry.layouts[layout] for entry in model_entries() if layout in entry.layouts
    }


# -- timm ---------------------------------------------------------------------------------------

#: timm's ``_gen_mobilenet_v1`` arch_def: the 13 separable blocks of Table 1 in 5 stages.
TIMM_MOBILENET_V1_STAGES = (1, 2, 2, 6, 2)
#: timm's ``_gen_mobilenet_v2`` arch_def has one stage per row of Table 2 (repeats n):
#: taken from :data:`lightnets.models.mobilenet_v2.INVERTED_RESIDUAL_SETTING`.

TIMM_STEM = {"features.0.0": "conv_stem", "features.0.1": "bn1"}
#: Our block's modules -> timm's, per block type.
TIMM_BLOCKS: dict[str, dict[str, str]] = {
    # MobileNet V1 separable block (timm "dsa": DepthwiseSeparableConv with activated pw).
    "mobilenet_v1": {"dw.0": "conv_dw", "dw.1": "bn1", "pw.0": "conv_pw", "pw.1": "bn2"},
    # MobileNet V2 block with t = 1 (timm "ds": DepthwiseSeparableConv, linear pw).
    "mobilenet_v2_t1": {
        "conv.0.0": "conv_dw",
        "conv.0.1": "bn1",
        "conv.1": "conv_pw",
        "conv.2": "bn2",
    },
    # MobileNet V2 inverted residual (timm "ir": InvertedResidual).
    "mobilenet_v2": {
        "conv.0.0": "conv_pw",
        "conv.0.1": "bn1",
        "conv.1.0": "conv_dw",
        "conv.1.1": "bn2",
        "conv.2": "conv_pwl",
        "conv.3": "bn3",
    },
}


def _stage_positions(repeats: tuple[int, ...]) -> list[tuple[int, int]]:
    """(stage, index in stage) of each block, in order."""
    return [(stage, i) for stage, n in enumerate(repeats) for i in range(n)]


def _timm_mobilenet(model: LightweightNet, family: str) -> dict[str, str]:
    repeats: tuple[int, ...]
    if family == "mobilenet_v1":
        repeats = TIMM_MOBILENET_V1_STAGES
    else:
        from lightnets.models.mobilenet_v2 import INVERTED_RESIDUAL_SETTING

        repeats = tuple(n for _, _, n, _ in INVERTED_RESIDUAL_SETTING)
    mapping = dict(TIMM_STEM)
    positions = _stage_positions(repeats)
    for index, (stage, i) in enumerate(positions, start=1):
        block = model.get_submodule(f"features.{index}")
        table = TIMM_BLOCKS[family]
        layers = (
            len(list(block.get_submodule("conv").children())) if family == "mobilenet_v2" else 0
        )
        if layers == 3:  # MobileNet V2 without its expansion layer (t = 1)
            table = TIMM_BLOCKS["mobilenet_v2_t1"]
        for ours, theirs in table.items():
            mapping[f"features.{index}.{ours}"] = f"blocks.{stage}.{i}.{theirs}"
    if family == "mobilenet_v2":
        head = len(positions) + 1
        mapping[f"features.{head}.0"] = "conv_head"
        mapping[f"features.{head}.1"] = "bn2"
    mapping["classifier.1"] = "classifier"
    return mapping


def _identity(model: LightweightNet, family: str) -> dict[str, str]:
    return {prefix: prefix for prefix in _module_prefixes(model)}


#: layout -> builder of {our module prefix: the layout's module prefix} for a model.
MODULE_MAPS: dict[str, Callable[[LightweightNet, str], dict[str, str]]] = {
    "lightnets": _identity,
    "torchvision": _identity,
    "timm": _timm_mobilenet,
}


def _module_prefixes(model: LightweightNet) -> list[str]:
    return list(dict.fromkeys(key.rpartition(".")[0] for key in model.state_dict()))


def key_map(model: LightweightNet, layout: str) -> dict[str, str]:
    """{our state-dict key: the layout's key} for every tensor of ``model``, in model order."""
    family = model.hparams["name"]
    check_supported(model, layout)
    modules = MODULE_MAPS[layout](model, family)
    mapping = {}
    for key in model.state_dict():
        prefix, _, leaf = key.rpartition(".")
        mapping[key] = f"{modules[prefix]}.{leaf}"
    return mapping


def check_supported(model: LightweightNet, layout: str) -> None:
    """A one-line error when ``layout``'s library has no network like ``model``."""
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    family = model.hparams["name"]
    required = supported(layout).get(family)
    if required is None:
        families = ", ".join(sorted(supported(layout)))
        raise CheckpointError(f"{layout} has no {family} (its families here: {families})")
    for key, value in required.items():
        if model.hparams.get(key) != value:
            raise CheckpointError(
                f"{layout}'s {family} has {key}={value!r}; this model has "
                f"{key}={model.hparams.get(key)!r}"
            )


# -- recognising a state dict ------------------------------------------------------------------

#: Widths tried first when reading a width from a probe tensor (the published ones).
KNOWN_WIDTHS = (1.0, 0.75, 0.5, 0.35, 0.25, 1.25, 1.3, 1.4, 1.5, 2.0)


@dataclass(frozen=True)
class Signature:
    """How to recognise one family in one layout: ``markers`` must all be present (and
    ``absent`` absent); ``probe`` is the tensor whose output channels are ``base`` scaled by
    the width; ``classifier`` is the layout's classifier weight."""

    layout: str
    family: str
    markers: tuple[str, ...]
    probe: str | None
    base: int
    classifier: str
    absent: tuple[str, ...] = ()
    extra: Callable[[dict[str, torch.Tensor]], dict[str, Any]] = field(default=lambda t: {})


def _squeezenet_hparams(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    # A simple bypass has no tensors: a file cannot tell it from "none".
    bypass = "complex" if any(".bypass." in key for key in tensors) else "none"
    return {"bypass": bypass, "batch_norm": "features.0.1.weight" in tensors}


def _squeeze(layout: str, name: str, stem: int) -> Signature:
    return Signature(layout, name, (), None, stem, "classifier.1.weight", (), _squeezenet_hparams)


def _shufflenet_v2_width(channels: int) -> float | None:
    from lightnets.models.shufflenet_v2 import STAGE_OUT_CHANNELS

    return next((w for w, c in STAGE_OUT_CHANNELS.items() if c[3] == channels), None)


SIGNATURES: tuple[Signature, ...] = (
    Signature(
        "timm",
        "mobilenet_v2",
        ("conv_stem.weight", "blocks.1.0.conv_pwl.weight"),
        "blocks.6.0.conv_pwl.weight",
        320,
        "classifier.weight",
    ),
    Signature(
        "timm",
        "mobilenet_v1",
        ("conv_stem.weight", "blocks.4.1.conv_pw.weight"),
        "blocks.4.1.conv_pw.weight",
        1024,
        "classifier.weight",
        absent=("conv_head.weight", "blocks.0.0.se.conv_reduce.weight"),
    ),
    Signature(
        "lightnets",
        "mobilenet_v1",
        ("features.1.dw.0.weight",),
        "features.13.pw.0.weight",
        1024,
        "classifier.1.weight",
    ),
    Signature(
        "torchvision",
        "mobilenet_v2",
        ("features.1.conv.0.0.weight",),
        "features.17.conv.2.weight",
        320,
        "classifier.1.weight",
    ),
    Signature(
        "torchvision",
        "shufflenet_v2",
        ("stage2.0.branch1.0.weight",),
        "conv5.0.weight",
        0,
        "fc.weight",
    ),
    Signature("lightnets", "shufflenet_v1", ("stage2.0.conv1.0.weight",), None, 0, "fc.weight"),
)

#: State dicts of other architectures, recognised only to say what they are.
OTHER_ARCHITECTURES: tuple[tuple[str, str], ...] = (
    ("conv_stem.weight", "a timm EfficientNet-family state dict of another architecture"),
    ("layer1.0.conv1.weight", "a ResNet-style state dict"),
    ("features.1.block.0.0.weight", "a torchvision MobileNet V3 / EfficientNet state dict"),
    ("layers.0.weight", "a torchvision MNASNet state dict"),
    ("features.denseblock1.denselayer1.conv1.weight", "a DenseNet state dict"),
)


@dataclass(frozen=True)
class Source:
    """What a file holds: its layout, the family, and the hyperparameters read from it."""

    layout: str
    family: str
    hparams: dict[str, Any]
    num_classes: int | None
    variant: str | None
    description: str


def _width_from_probe(channels: int, base: int) -> float:
    for width in KNOWN_WIDTHS:
        if make_divisible(base * width, 8) == channels:
            return width
    return round(channels / base, 4)


def _squeezenet_signature(tensors: dict[str, torch.Tensor]) -> Signature | None:
    stem = tensors.get("features.0.weight", tensors.get("features.0.0.weight"))
    if stem is None or not any(".squeeze." in key for key in tensors):
        return None
    name = {96: "squeezenet1_0", 64: "squeezenet1_1"}.get(int(stem.shape[0]))
    if name is None:
        return None
    plain = "features.0.bias" in tensors and not any(".bypass." in k for k in tensors)
    return _squeeze("torchvision" if plain else "lightnets", name, 0)


def identify(tensors: dict[str, torch.Tensor]) -> Source | None:
    """The layout, family and width of a state dict, or None when no signature matches."""
    signature = next(
        (
            s
            for s in SIGNATURES
            if all(k in tensors for k in s.markers) and not any(k in tensors for k in s.absent)
        ),
        None,
    ) or _squeezenet_signature(tensors)
    if signature is None:
        return None
    hparams = dict(signature.extra(tensors))
    probe = tensors.get(signature.probe) if signature.probe else None
    if signature.family == "shufflenet_v2" and probe is not None:
        hparams["width_mult"] = _shufflenet_v2_width(int(probe.shape[1]))
    elif probe is not None:
        hparams["width_mult"] = _width_from_probe(int(probe.shape[0]), signature.base)
    classifier = tensors.get(signature.classifier)
    num_classes = int(classifier.shape[0]) if classifier is not None else None
    return Source(
        signature.layout,
        signature.family,
        {k: v for k, v in hparams.items() if v is not None},
        num_classes,
        None,
        describe(signature.layout, signature.family, hparams, num_classes),
    )


#: Hyperparameter values left out of descriptions (the defaults every reference shares).
UNREMARKABLE = {
    ("bypass", "none"),
    ("batch_norm", False),
    ("variant", "imagenet"),
    ("activation", "relu"),
}


def model_text(family: str, hparams: dict[str, Any]) -> str:
    """ "shufflenet_v2 x0.5", "mobilenet_v1 width 1.0 activation=relu6" and the like."""
    parts = [family]
    width = hparams.get("width_mult")
    if width is not None:
        parts.append(f"x{width}" if family == "shufflenet_v2" else f"width {width}")
    for key in ("groups", "activation", "bypass", "batch_norm", "variant"):
        if key in hparams and (key, hparams[key]) not in UNREMARKABLE:
            parts.append(f"{key}={hparams[key]}")
    return " ".join(parts)


def describe(
    layout: str,
    family: str,
    hparams: dict[str, Any],
    num_classes: int | None,
    container: str = "state dict",
) -> str:
    """ "a torchvision shufflenet_v2 x1.0 state dict (1000 classes)" and the like."""
    classes = f" ({num_classes} classes)" if num_classes is not None else ""
    if layout == "lightnets" and container != "state dict":
        return f"a {container} of {model_text(family, hparams)}{classes}"
    return f"a {layout} {model_text(family, hparams)} {container}{classes}"


def what_is(tensors: dict[str, torch.Tensor]) -> str:
    """A description of a state dict no signature recognises."""
    for marker, text in OTHER_ARCHITECTURES:
        if marker in tensors:
            return text
    first = ", ".join(list(tensors)[:3])
    return f"a state dict of an architecture lightnets does not know (keys {first}, ...)"
