"""Loading a weights file into a model, building a model from one, and writing one out.

Every tensor is matched by name (through the file's layout, :mod:`.layouts`) and shape before
anything is copied: the first tensor that does not fit is named in a one-line
:class:`~lightnets.errors.CheckpointError` that also says what the file looks like. Notes (a
classifier started afresh, an activation chosen to match the file) go to the
``lightnets.weights`` logger, which prints them on stderr unless configured otherwise.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightnets.errors import CheckpointError
from lightnets.models.base import LightweightNet
from lightnets.models.weights.files import (
    LIGHTNETS_SAFETENSORS,
    WeightsFile,
    read_weights_file,
    write_weights_file,
)
from lightnets.models.weights.layouts import (
    Source,
    classifier_of,
    describe,
    identify,
    key_map,
    model_text,
    what_is,
)

logger = logging.getLogger("lightnets.weights")

#: Hyperparameters that are not part of a family's own declaration.
GENERIC_HPARAMS = ("name", "num_classes", "variant")
#: timm's MobileNet V1 weights were trained with this activation (TF-slim's choice).
TIMM_MOBILENET_V1_ACTIVATION = "relu6"


@dataclass
class LoadReport:
    """What :func:`load_weights` did: the file's description and the notes it emitted."""

    source: Source
    loaded: int
    notes: list[str] = field(default_factory=list)


def source_of(weights: WeightsFile) -> Source:
    """What ``weights`` holds; a lightnets file says it, a foreign one is recognised by content."""
    if weights.hparams is not None:
        hparams = dict(weights.hparams)
        name = str(hparams.get("name"))
        extra = {k: v for k, v in hparams.items() if k not in GENERIC_HPARAMS}
        extra["variant"] = hparams.get("variant")
        return Source(
            "lightnets",
            name,
            {k: v for k, v in hparams.items() if k not in GENERIC_HPARAMS},
            hparams.get("num_classes"),
            hparams.get("variant"),
            describe("lightnets", name, extra, hparams.get("num_classes"), weights.container),
        )
    source = identify(weights.tensors)
    if source is None:
        raise CheckpointError(f"{weights.path}: this is {what_is(weights.tensors)}")
    return source


def _note(report_notes: list[str], text: str) -> None:
    report_notes.append(text)
    logger.warning("note: %s", text)


def load_weights(
    model: LightweightNet,
    weights: str | Path | WeightsFile,
    *,
    new_classifier: bool = False,
) -> LoadReport:
    """Load a weights file into ``model`` (built by ``create_model``), in place.

    ``new_classifier=True``: a classifier of another size in the file is skipped and the model's
    freshly initialised one kept (with a note); otherwise it is an error. Everything else must
    match tensor for tensor (``num_batches_tracked`` may be absent, as in some timm files).
    """
    file = weights if isinstance(weights, WeightsFile) else read_weights_file(weights)
    source = source_of(file)
    name = model.hparams["name"]
    asked = model_text(name, _shape_hparams(model.hparams))
    if source.family != name:
        raise CheckpointError(f"{file.path}: this is {source.description}; you asked for {name}")
    where = f"this is {source.description}; you asked for {asked}"
    mapping = key_map(model, source.layout)
    classifier = classifier_of(name) + "."
    state = model.state_dict()
    loaded, skipped_classifier = _match_tensors(file, mapping, state, classifier, where)
    unexpected = [key for key in file.tensors if key not in set(mapping.values())]
    if unexpected:
        raise CheckpointError(
            f"{file.path}: tensor {unexpected[0]} (and {len(unexpected) - 1} more) has no place "
            f"in the model; {where}"
        )
    report = LoadReport(source, len(loaded))
    if skipped_classifier:
        _keep_fresh_classifier(model, file, loaded, classifier, new_classifier, report)
    _activation_note(model, source, report)
    with torch.no_grad():
        for key, tensor in loaded.items():
            state[key].copy_(tensor)
    return report


def _match_tensors(
    file: WeightsFile,
    mapping: dict[str, str],
    state: dict[str, torch.Tensor],
    classifier: str,
    where: str,
) -> tuple[dict[str, torch.Tensor], bool]:
    """The file's tensors by model key, and whether a classifier of another shape was skipped."""
    loaded: dict[str, torch.Tensor] = {}
    skipped_classifier = False
    for ours, theirs in mapping.items():
        tensor = file.tensors.get(theirs)
        if tensor is None:
            if ours.endswith("num_batches_tracked"):
                continue
            raise CheckpointError(f"{file.path}: tensor {theirs} is missing; {where}")
        if tensor.shape != state[ours].shape:
            if ours.startswith(classifier):
                skipped_classifier = True
                continue
            raise CheckpointError(
                f"{file.path}: tensor {theirs} is {tuple(tensor.shape)} in the file but "
                f"{tuple(state[ours].shape)} in the model; {where}"
            )
        loaded[ours] = tensor
    return loaded, skipped_classifier


def _keep_fresh_classifier(
    model: LightweightNet,
    file: WeightsFile,
    loaded: dict[str, torch.Tensor],
    classifier: str,
    new_classifier: bool,
    report: LoadReport,
) -> None:
    """Drop the file's classifier from ``loaded`` with a note; refuse without ``new_classifier``."""
    file_classes = report.source.num_classes
    if not new_classifier:
        raise CheckpointError(
            f"{file.path}: the file's classifier has {file_classes} classes, the model "
            f"{model.hparams['num_classes']}; give the number of classes explicitly "
            f"(--num-classes {model.hparams['num_classes']}) to start a fresh classifier"
        )
    for key in [k for k in loaded if k.startswith(classifier)]:
        del loaded[key]
    _note(
        report.notes,
        f"classifier freshly initialised for {model.hparams['num_classes']} "
        f"classes (the file's has {file_classes}); the rest loaded from {file.path}",
    )


def _activation_note(model: LightweightNet, source: Source, report: LoadReport) -> None:
    """A note when timm's MobileNet V1 weights (trained with ReLU6) meet another activation."""
    if (
        source.layout == "timm"
        and model.hparams["name"] == "mobilenet_v1"
        and model.hparams.get("activation") != TIMM_MOBILENET_V1_ACTIVATION
    ):
        _note(
            report.notes,
            "timm trained these MobileNet V1 weights with ReLU6; this model uses "
            f"{model.hparams.get('activation')}, so its outputs differ from timm's",
        )


def _shape_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hparams.items() if k not in ("name", "num_classes", "drop_rate")}


def create_pretrained(
    name: str,
    weights: str | Path | WeightsFile,
    *,
    num_classes: int | None = None,
    variant: str | None = None,
    **hparams: Any,
) -> LightweightNet:
    """``create_model(name, weights=...)``: hyperparameters not given are taken from the file.

    A timm MobileNet V1 file selects ``activation="relu6"`` (timm's, TF-slim's) unless
    ``activation`` is given. ``num_classes`` other than the file's starts a fresh classifier.
    """
    from lightnets.models.registry import create_model, get_model_entry

    file = weights if isinstance(weights, WeightsFile) else read_weights_file(weights)
    source = source_of(file)
    if source.family != name:
        raise CheckpointError(f"{file.path}: this is {source.description}; you asked for {name}")
    declared = get_model_entry(name).hparams
    resolved = {k: v for k, v in source.hparams.items() if k in declared}
    notes: list[str] = []
    if source.layout == "timm" and name == "mobilenet_v1" and "activation" not in hparams:
        resolved["activation"] = TIMM_MOBILENET_V1_ACTIVATION
        _note(
            notes,
            "activation=relu6: timm's MobileNet V1 weights were trained with ReLU6 "
            "(the paper uses ReLU)",
        )
    resolved.update(hparams)
    classes = num_classes if num_classes is not None else source.num_classes
    model = create_model(
        name,
        num_classes=classes if classes is not None else 1000,
        variant=variant or source.variant or "imagenet",
        **resolved,
    )
    report = load_weights(
        model,
        file,
        new_classifier=num_classes is not None and num_classes != source.num_classes,
    )
    model.weights_report = LoadReport(report.source, report.loaded, notes + report.notes)
    return model


def weights_state(weights: WeightsFile) -> dict[str, Any] | None:
    """The checkpoint-like metadata of a lightnets file (its ``dataset`` preprocessing)."""
    if weights.checkpoint is not None:
        return weights.checkpoint
    if weights.dataset is not None:
        return {"dataset": weights.dataset, "hparams": weights.hparams}
    return None


def model_from_file(
    path: str | Path, **overrides: Any
) -> tuple[LightweightNet, dict[str, Any] | None]:
    """Build the model a weights file holds (family and width read from it) and load it.

    Returns the model in eval mode and the lightnets metadata (None for foreign files).
    """
    file = read_weights_file(path)
    source = source_of(file)
    model = create_pretrained(source.family, file, **overrides)
    model.eval()
    return model, weights_state(file)


def export_state_dict(model: LightweightNet, layout: str) -> dict[str, torch.Tensor]:
    """``model``'s weights under ``layout``'s names (``lightnets``, ``torchvision``, ``timm``)."""
    mapping = key_map(model, layout)
    state = model.state_dict()
    return {theirs: state[ours] for ours, theirs in mapping.items()}


def save_weights(
    model: LightweightNet,
    path: str | Path,
    layout: str = "lightnets",
    *,
    dataset: dict[str, Any] | None = None,
) -> list[str]:
    """Write ``model``'s weights in ``layout`` to ``path`` (``.safetensors`` or ``.pth``).

    The lightnets layout in safetensors also stores the hyperparameters and ``dataset``
    preprocessing as metadata, so the file rebuilds its model alone. Returns notes.
    """
    notes: list[str] = []
    tensors = export_state_dict(model, layout)
    metadata = None
    if layout == "lightnets":
        metadata = {"format": LIGHTNETS_SAFETENSORS, "hparams": json.dumps(model.hparams)}
        if dataset is not None:
            metadata["dataset"] = json.dumps(dataset)
    else:
        if model.hparams.get("variant") == "cifar":
            notes.append(
                f"this is the cifar variant: {layout}'s network has the strided "
                "ImageNet stem, so there the weights compute something else"
            )
        if layout == "timm" and model.hparams.get("activation") not in (None, "relu6"):
            notes.append(
                "timm's MobileNet V1 uses ReLU6; this model uses ReLU, so outputs "
                "in timm will differ"
            )
    write_weights_file(path, tensors, metadata)
    return notes
