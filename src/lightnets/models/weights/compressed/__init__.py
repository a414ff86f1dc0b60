"""Reading Deep Compression files (``.lnz``, written by ``lightnets compress``), beside the other
weight formats.

:func:`read_compressed` decodes a file into the dense state dict of the model it describes
without building that model (only its shapes, on the meta device); :func:`load_compressed` also
builds it. The file's layout and header are in :mod:`.header`, the stream decoders in
:mod:`.streams`, the tensors in :mod:`.tensors`. The compressor (pruning, weight sharing, the
encoders, the writer) is :mod:`lightnets.deploy.compression`, which imports this reader.

Nothing is decoded before the header is checked field by field, the model it describes against
this machine's memory at its recorded input size, and every stream's declared size against that
model (:func:`.tensors.check_against_model`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from lightnets.errors import CheckpointError, LightnetsError, first_line
from lightnets.models.base import LightweightNet
from lightnets.models.memory import check_stored_model, meta_model, state_specs
from lightnets.models.registry import create_model
from lightnets.models.weights.compressed.header import (
    FORMAT,
    MAGIC,
    VERSION,
    Header,
    is_compressed,
    read_header,
)
from lightnets.models.weights.compressed.tensors import read_state_dict
from lightnets.stored import check_dataset_metadata, check_finite_weights, check_stored_hparams

__all__ = [
    "FORMAT",
    "MAGIC",
    "VERSION",
    "CompressedFile",
    "is_compressed",
    "load_compressed",
    "read_compressed",
]


@dataclass(frozen=True)
class CompressedFile:
    """A decoded compressed file.

    ``header`` is the checked header (its ``hparams`` as stored; ``dataset``, ``config``,
    ``settings``, ``finetune`` records); ``hparams`` the model's full hyperparameters
    (defaults filled in: ``create_model(**hparams)`` rebuilds it); ``state_dict`` its dense
    tensors, in the order of the model's own state dict.
    """

    header: Header
    hparams: dict[str, Any]
    state_dict: dict[str, torch.Tensor]


def read_compressed(path: str | os.PathLike[str]) -> CompressedFile:
    """Decode a compressed file's tensors, every size bounded first (module docstring)."""
    header, payload = read_header(path)
    try:  # what the header says, checked as user input (no path among the hparams, ...)
        check_stored_hparams(header.hparams)
        if header.dataset is not None:
            check_dataset_metadata(header.dataset, header.hparams.get("num_classes"))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    try:
        hparams, _ = check_stored_model(header.hparams, (header.dataset or {}).get("input_size"))
        shapes = meta_model(hparams)
    except LightnetsError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from exc
    state_dict = read_state_dict(path, header, payload, state_specs(shapes))
    check_finite_weights(state_dict, str(path))
    return CompressedFile(header, dict(shapes.hparams), state_dict)


def load_compressed(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[LightweightNet, dict[str, Any]]:
    """Decode a compressed file into a dense model (eval mode) and a checkpoint-like dict.

    The dict has ``format``, ``hparams``, ``model`` (the dense state dict), ``compression``
    (the settings) and, when the source was a checkpoint, its ``dataset`` and ``config``
    records, so everything that reads a checkpoint reads this too.
    """
    decoded = read_compressed(path)
    header = decoded.header
    kwargs = dict(header.hparams)
    try:
        model = create_model(kwargs.pop("name"), **kwargs)
        model.load_state_dict(decoded.state_dict)
    except (LightnetsError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {first_line(exc)}") from exc
    model.to(map_location).eval()
    state = {
        "format": FORMAT,
        "format_version": VERSION,
        "hparams": dict(header.hparams),
        "model": model.state_dict(),
        "compression": header.settings,
        "finetune": header.finetune,
    }
    for key in ("dataset", "config"):
        if getattr(header, key) is not None:
            state[key] = getattr(header, key)
    return model, state
