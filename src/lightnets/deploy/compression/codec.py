"""A quantized, pruned model <-> the streams of a compressed file, and back to a dense model.

Each compressed layer is stored as its codebook (<= ``2**bits`` float32 values, entry 0 = 0), its
entry codes and its entry gaps (Deep Compression, Figure 2; see :mod:`.coding`). Every other
tensor of the state dict (biases, BatchNorm parameters and statistics) is stored exactly, as
one byte stream. Decoding rebuilds the model from its hparams and loads the dense weights
``codebook[codes]``: the very tensors the compressor produced, bit for bit. Every stream is
decoded against the size its header declares, and that size against the model the header
describes (:func:`check_against_model`), so a file cannot make the decoder inflate more than
that model holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lightnets.deploy.compression import coding
from lightnets.deploy.compression.format import (
    DTYPES,
    FORMAT,
    DenseRecord,
    Header,
    LayerRecord,
    Payload,
    stream,
    tensor_bytes,
    tensor_from_bytes,
    write_file,
)
from lightnets.errors import CheckpointError


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


def decode_layer(record: LayerRecord, payload: memoryview) -> torch.Tensor:
    """A layer's dense weight ``codebook[codes]`` from its (checked) record."""
    book_data = stream(payload, record.codebook)
    size = len(book_data) // 4
    if len(book_data) % 4 or not 1 <= size <= (1 << record.bits):
        raise CheckpointError(
            f"corrupted compressed file: {record.key}'s codebook has the wrong size"
        )
    book = tensor_from_bytes(book_data, "float32", [size])
    count = record.entries
    entry_codes = coding.decode_stream(
        record.codes.coder, stream(payload, record.codes), count, record.bits
    )
    entry_gaps = coding.decode_stream(
        record.gaps.coder, stream(payload, record.gaps), count, record.index_bits
    )
    if count and int(entry_codes.max()) >= size:
        raise CheckpointError(
            f"corrupted compressed file: a weight code of {record.key} exceeds its codebook"
        )
    codes = coding.sparse_decode(entry_codes, entry_gaps, record.numel)
    return book[torch.from_numpy(codes.astype(np.int64))].reshape(record.shape)


def decode_dense(record: DenseRecord, payload: memoryview) -> dict[str, torch.Tensor]:
    """The tensors stored exactly; ``record.count`` (checked against them) bounds the decoding."""
    if record.count != sum(item.nbytes for item in record.tensors):
        raise CheckpointError("corrupted compressed file: the other tensors' sizes do not add up")
    raw = coding.decode_stream(
        record.stream.coder, stream(payload, record.stream), record.count, 8
    ).tobytes()
    tensors, offset = {}, 0
    for item in record.tensors:
        tensors[item.key] = tensor_from_bytes(
            raw[offset : offset + item.nbytes], item.dtype, list(item.shape)
        )
        offset += item.nbytes
    return tensors


#: What a model's state dict holds: key -> (shape, dtype).
TensorSpecs = dict[str, tuple[tuple[int, ...], torch.dtype]]


def check_against_model(header: Header, expected: TensorSpecs) -> None:
    """Every size in ``header`` checked against the model it describes, before any decoding.

    ``expected`` is the state dict of the model the header's hparams build (shapes and dtypes,
    built on the meta device). Each compressed layer must be one of its float32 weights, shape
    for shape, with at most one entry per element; each dense tensor one of its tensors, dtype
    and shape alike; together exactly its tensors. So the streams decode to what that model
    holds, never to what a forged count or length claims.
    """
    seen: set[str] = set()
    for layer in header.layers:
        _expect(layer.key, layer.shape, torch.float32, expected, seen)
        if layer.entries > layer.numel:
            raise CheckpointError(
                f"corrupted compressed file: {layer.key} declares {layer.entries} entries for "
                f"{layer.numel} weights"
            )
    for item in header.dense.tensors:
        _expect(item.key, item.shape, DTYPES[item.dtype], expected, seen)
    missing = [key for key in expected if key not in seen]
    if missing:
        raise CheckpointError(
            f"corrupted compressed file: tensor {missing[0]} of the model is not in the file"
        )


def _expect(
    key: str,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    expected: TensorSpecs,
    seen: set[str],
) -> None:
    if key not in expected:
        raise CheckpointError(f"corrupted compressed file: tensor {key} has no place in the model")
    if key in seen:
        raise CheckpointError(f"corrupted compressed file: tensor {key} is stored twice")
    seen.add(key)
    want_shape, want_dtype = expected[key]
    if tuple(shape) != tuple(want_shape) or dtype != want_dtype:
        raise CheckpointError(
            f"corrupted compressed file: tensor {key} is {str(dtype).removeprefix('torch.')} "
            f"{list(shape)} in the file but {str(want_dtype).removeprefix('torch.')} "
            f"{list(want_shape)} in the model"
        )


def read_state_dict(
    path: str | os.PathLike[str], header: Header, payload: memoryview, expected: TensorSpecs
) -> dict[str, torch.Tensor]:
    """Decode a compressed file's tensors, after checking its header against the model."""
    try:
        check_against_model(header, expected)
        state = decode_dense(header.dense, payload)
        for record in header.layers:
            state[record.key] = decode_layer(record, payload)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return state
