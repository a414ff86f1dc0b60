"""The streams of a compressed file -> the dense tensors of its model's state dict.

Each compressed layer is stored as its codebook (<= ``2**bits`` float32 values, entry 0 = 0), its
entry codes and its entry gaps (Deep Compression, Figure 2; :mod:`.streams`); every other tensor
(biases, BatchNorm parameters and statistics) exactly, in one byte stream. Decoding gives the
dense weights ``codebook[codes]``: the very tensors the compressor produced, bit for bit. Every
stream is decoded against the size its header declares, and that size against the model the
header describes (:func:`check_against_model`), so a file cannot make the decoder inflate more
than that model holds.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from lightnets.errors import CheckpointError
from lightnets.models.weights.compressed import streams
from lightnets.models.weights.compressed.header import (
    DTYPES,
    DenseRecord,
    Header,
    LayerRecord,
    stream,
    tensor_from_bytes,
)

#: What a model's state dict holds: key -> (shape, dtype).
TensorSpecs = dict[str, tuple[tuple[int, ...], torch.dtype]]


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
    entry_codes = streams.decode_stream(
        record.codes.coder, stream(payload, record.codes), count, record.bits
    )
    entry_gaps = streams.decode_stream(
        record.gaps.coder, stream(payload, record.gaps), count, record.index_bits
    )
    if count and int(entry_codes.max()) >= size:
        raise CheckpointError(
            f"corrupted compressed file: a weight code of {record.key} exceeds its codebook"
        )
    codes = streams.sparse_decode(entry_codes, entry_gaps, record.numel)
    return book[torch.from_numpy(codes.astype(np.int64))].reshape(record.shape)


def decode_dense(record: DenseRecord, payload: memoryview) -> dict[str, torch.Tensor]:
    """The tensors stored exactly; ``record.count`` (checked against them) bounds the decoding."""
    if record.count != sum(item.nbytes for item in record.tensors):
        raise CheckpointError("corrupted compressed file: the other tensors' sizes do not add up")
    raw = streams.decode_stream(
        record.stream.coder, stream(payload, record.stream), record.count, 8
    ).tobytes()
    tensors, offset = {}, 0
    for item in record.tensors:
        tensors[item.key] = tensor_from_bytes(
            raw[offset : offset + item.nbytes], item.dtype, list(item.shape)
        )
        offset += item.nbytes
    return tensors


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
    """Decode a compressed file's tensors, after checking its header against the model; in the
    order of the model's own state dict."""
    try:
        check_against_model(header, expected)
        state = decode_dense(header.dense, payload)
        for record in header.layers:
            state[record.key] = decode_layer(record, payload)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return {key: state[key] for key in expected}
