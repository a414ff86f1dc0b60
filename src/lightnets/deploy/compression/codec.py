"""A quantized, pruned model -> the streams of a compressed file.

Each compressed layer is stored as its codebook (<= ``2**bits`` float32 values, entry 0 = 0), its
entry codes and its entry gaps (Deep Compression, Figure 2; see :mod:`.coding`). Every other
tensor of the state dict (biases, BatchNorm parameters and statistics) is stored exactly, as
one byte stream. Reading them back (``codebook[codes]``, bit for bit, every size bounded first) is
:mod:`lightnets.models.weights.compressed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lightnets.deploy.compression import coding
from lightnets.deploy.compression.format import Payload, tensor_bytes, write_file
from lightnets.models.weights.compressed.header import FORMAT


@dataclass(frozen=True)
class SharedLayer:
    """A layer after weight sharing: ``codebook[codes]`` is its weight."""

    key: str
    kind: str
    bits: int
    index_bits: int
    codebook: torch.Tensor  # float32 (2**bits,), entry 0 == 0
    codes: torch.Tensor  # int64, the weight's shape, 0 where pruned


@dataclass(frozen=True)
class LayerCoding:
    """What storing one layer cost: entry count, fillers, and bytes per stream and coder."""

    entries: int
    fillers: int
    codes_coder: str
    gaps_coder: str
    codes_bytes: int
    gaps_bytes: int
    codebook_bytes: int
    codes_sizes: dict[str, int]
    gaps_sizes: dict[str, int]


def encode_layer(layer: SharedLayer, payload: Payload) -> tuple[dict[str, Any], LayerCoding]:
    """Append a layer's streams to ``payload``; returns its header record and its costs."""
    flat = layer.codes.reshape(-1).numpy().astype(np.uint8)
    entry_codes, entry_gaps = coding.sparse_encode(flat, layer.index_bits)
    codes_coder, codes_data, codes_sizes = coding.encode_stream(entry_codes, layer.bits)
    gaps_coder, gaps_data, gaps_sizes = coding.encode_stream(entry_gaps, layer.index_bits)
    book = tensor_bytes(layer.codebook.float())
    record = {
        "key": layer.key,
        "kind": layer.kind,
        "shape": list(layer.codes.shape),
        "bits": layer.bits,
        "index_bits": layer.index_bits,
        "entries": len(entry_codes),
        "codebook": payload.add(book),
        "codes": payload.add(codes_data, coder=codes_coder),
        "gaps": payload.add(gaps_data, coder=gaps_coder),
    }
    cost = LayerCoding(
        entries=len(entry_codes),
        fillers=int((entry_codes == 0).sum()),
        codes_coder=codes_coder,
        gaps_coder=gaps_coder,
        codes_bytes=len(codes_data),
        gaps_bytes=len(gaps_data),
        codebook_bytes=len(book),
        codes_sizes=codes_sizes,
        gaps_sizes=gaps_sizes,
    )
    return record, cost


def encode_dense(tensors: dict[str, torch.Tensor], payload: Payload) -> tuple[dict, int]:
    """The tensors left uncompressed, exactly, as one byte stream (its best coder)."""
    raw = b"".join(tensor_bytes(t) for t in tensors.values())
    symbols = np.frombuffer(raw, dtype=np.uint8)
    coder, data, _ = coding.encode_stream(symbols, 8)
    record = payload.add(data, coder=coder, count=len(raw))
    record["tensors"] = [
        {"key": key, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
        for key, t in tensors.items()
    ]
    return record, len(data)


def write_compressed(
    path: str | os.PathLike[str],
    layers: list[SharedLayer],
    dense: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> tuple[int, list[LayerCoding], int]:
    """Write the file; returns (file bytes, per-layer costs, bytes of the other tensors)."""
    payload = Payload()
    records, costs = [], []
    for layer in layers:
        record, cost = encode_layer(layer, payload)
        records.append(record)
        costs.append(cost)
    dense_record, dense_bytes = encode_dense(dense, payload)
    header = {"format": FORMAT, **meta, "layers": records, "dense": dense_record}
    size = write_file(path, header, payload)
    return size, costs, dense_bytes
