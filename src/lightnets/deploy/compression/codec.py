"""A quantized, pruned model <-> the streams of a compressed file, and back to a dense model.

Each compressed layer is stored as its codebook (<= ``2**bits`` float32 values, entry 0 = 0), its
entry codes and its entry gaps (Deep Compression, Figure 2; see :mod:`.coding`). Every other
tensor of the state dict (biases, BatchNorm parameters and statistics) is stored exactly, as
one byte stream. Decoding rebuilds the model from its hparams and loads the dense weights
``codebook[codes]``: the very tensors the compressor produced, bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lightnets.deploy.compression import coding
from lightnets.deploy.compression.format import (
    FORMAT,
    Payload,
    read_file,
    stream,
    tensor_bytes,
    tensor_from_bytes,
    write_file,
)
from lightnets.errors import CheckpointError, LightnetsError


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


def decode_layer(record: dict[str, Any], payload: memoryview) -> torch.Tensor:
    """A layer's dense weight ``codebook[codes]`` from its record."""
    bits, index_bits = int(record["bits"]), int(record["index_bits"])
    if not (1 <= bits <= 8 and 1 <= index_bits <= 8):
        raise CheckpointError("corrupted compressed file: bit widths out of range")
    shape = [int(s) for s in record["shape"]]
    book_data = stream(payload, record["codebook"])
    size = len(book_data) // 4
    if not 1 <= size <= (1 << bits):
        raise CheckpointError("corrupted compressed file: a codebook has the wrong size")
    book = tensor_from_bytes(book_data, "float32", [size])
    count = int(record["entries"])
    entry_codes = coding.decode_stream(
        record["codes"]["coder"], stream(payload, record["codes"]), count, bits
    )
    entry_gaps = coding.decode_stream(
        record["gaps"]["coder"], stream(payload, record["gaps"]), count, index_bits
    )
    if count and int(entry_codes.max()) >= size:
        raise CheckpointError("corrupted compressed file: a weight code exceeds the codebook")
    codes = coding.sparse_decode(entry_codes, entry_gaps, int(np.prod(shape)))
    return book[torch.from_numpy(codes.astype(np.int64))].reshape(shape)


def decode_dense(record: dict[str, Any], payload: memoryview) -> dict[str, torch.Tensor]:
    count = int(record["count"])
    raw = coding.decode_stream(record["coder"], stream(payload, record), count, 8).tobytes()
    tensors, offset = {}, 0
    for item in record["tensors"]:
        dtype = item["dtype"]
        shape = [int(s) for s in item["shape"]]
        size = int(np.prod(shape)) * tensor_from_bytes(b"", dtype, [0]).element_size()
        tensors[item["key"]] = tensor_from_bytes(raw[offset : offset + size], dtype, shape)
        offset += size
    if offset != count:
        raise CheckpointError("corrupted compressed file: the other tensors' sizes do not add up")
    return tensors


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode a compressed file: returns (header, dense state dict)."""
    header, payload = read_file(path)
    try:
        state = decode_dense(header["dense"], payload)
        for record in header["layers"]:
            state[record["key"]] = decode_layer(record, payload)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    except LightnetsError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path}: corrupted compressed model: {exc!r}") from exc
    return header, state
