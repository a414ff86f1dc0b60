"""Deep Compression for the zoo and for trained checkpoints (SqueezeNet's "< 0.5 MB").

Han, Mao & Dally, "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained
Quantization and Huffman Coding", ICLR 2016; SqueezeNet (Iandola et al. 2016), Section 4 and
Table 2. One module per stage: :mod:`.pruning` (magnitude pruning), :mod:`.sharing` (k-means
weight sharing, trained centroids), :mod:`.coding` (sparse relative indices, Huffman / LZMA /
Zstandard), :mod:`.format` (the file), :mod:`.codec` (model <-> streams), :mod:`.pipeline`
and :mod:`.report`.

>>> from lightnets import create_model
>>> from lightnets.deploy.compression import compress, load_compressed
>>> report, _ = compress(create_model("squeezenet1_0"), "sq.lnz")   # doctest: +SKIP
>>> model, state = load_compressed("sq.lnz")                        # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from lightnets.deploy.compression.codec import read_state_dict
from lightnets.deploy.compression.format import FORMAT, VERSION, is_compressed, read_header
from lightnets.deploy.compression.pipeline import (
    CompressionData,
    CompressionSettings,
    compress,
    parse_per_layer_bits,
)
from lightnets.deploy.compression.report import CompressionReport, print_report
from lightnets.errors import CheckpointError, LightnetsError, first_line
from lightnets.stored import check_dataset_metadata, check_finite_weights, check_stored_hparams

__all__ = [
    "CompressionData",
    "CompressionReport",
    "CompressionSettings",
    "compress",
    "is_compressed",
    "load_compressed",
    "parse_per_layer_bits",
    "print_report",
]


def load_compressed(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Decode a compressed file into a dense model (eval mode) and a checkpoint-like dict.

    The dict has ``format``, ``hparams``, ``model`` (the dense state dict), ``compression``
    (the settings) and, when the source was a checkpoint, its ``dataset`` and ``config``
    records, so everything that reads a checkpoint reads this too.

    Nothing is built or decoded before the header is checked field by field, the model it
    describes against this machine's memory at its recorded input size, and every stream's
    declared size against that model (:func:`.codec.check_against_model`).
    """
    from lightnets.models import create_model
    from lightnets.models.memory import check_stored_model, tensor_specs

    header, payload = read_header(path)
    try:  # what the header says, checked as user input (no path among the hparams, ...)
        check_stored_hparams(header.hparams)
        if header.dataset is not None:
            check_dataset_metadata(header.dataset, header.hparams.get("num_classes"))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    try:
        hparams, _ = check_stored_model(header.hparams, (header.dataset or {}).get("input_size"))
        expected = tensor_specs(hparams)
    except LightnetsError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from exc
    state_dict = read_state_dict(path, header, payload, expected)
    check_finite_weights(state_dict, str(path))
    kwargs = dict(hparams)
    try:
        model = create_model(kwargs.pop("name"), **kwargs)
        model.load_state_dict(state_dict)
    except (LightnetsError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {first_line(exc)}") from exc
    model.to(map_location).eval()
    state = {
        "format": FORMAT,
        "format_version": VERSION,
        "hparams": dict(hparams),
        "model": model.state_dict(),
        "compression": header.settings,
        "finetune": header.finetune,
    }
    for key in ("dataset", "config"):
        if getattr(header, key) is not None:
            state[key] = getattr(header, key)
    return model, state
