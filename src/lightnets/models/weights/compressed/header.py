"""The compressed-model file (``.lnz``): magic bytes, version, CRC, a JSON header, then the streams.

Layout (little-endian)::

    magic    8 bytes   b"\\x89LNZ\\r\\n\\x1a\\n" (PNG-style: catches text-mode and truncated copies)
    version  uint16
    crc32    uint32    of everything after this field (header length, header, payload)
    hlen     uint32    length of the header
    header   hlen bytes of UTF-8 JSON: model hparams, source record, settings, and for each
                       compressed layer its shape, bit widths and (offset, length, coder) of its
                       codebook, weight-code and gap streams; the other tensors' names/dtypes
    payload  the streams, back to back

The file is recognised by its content (:func:`is_compressed`), whatever its name. A corrupted or
truncated file is a one-line :class:`~lightnets.errors.CheckpointError`. The header is parsed
strictly (:func:`parse_header`): every field has one type and range, and the first that does not
is named in the error, so nothing later trusts a size, an offset or a name it did not check.
``lightnets.deploy.compression`` writes these files; this module only reads them.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightnets.errors import CheckpointError, first_line

MAGIC = b"\x89LNZ\r\n\x1a\n"
VERSION = 1
FORMAT = "lightnets-compressed"
PREAMBLE = struct.Struct("<8sHII")  # magic, version, crc32, header length
#: Tensor dtypes the file may hold (anything else in a header is corruption, not code to run).
DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.float64,
        torch.int64,
        torch.int32,
        torch.uint8,
        torch.bool,
    )
}


def tensor_from_bytes(data: bytes, dtype_name: str, shape: list[int]) -> torch.Tensor:
    """A tensor of ``shape`` from its raw bytes; the byte count must be exactly its size."""
    if dtype_name not in DTYPES:
        raise CheckpointError(f"corrupted compressed file: unknown dtype {dtype_name!r}")
    dtype = DTYPES[dtype_name]
    count = 1
    for size in shape:
        count *= int(size)
    if len(data) != count * dtype.itemsize:
        raise CheckpointError("corrupted compressed file: a tensor has the wrong byte count")
    if count == 0:
        return torch.zeros(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape).clone()


def is_compressed(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a file that starts with the compressed format's magic bytes."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], memoryview]:
    """Check magic, version, CRC and that the header is a JSON object of this format; returns
    (header, payload). :func:`read_header` also checks every field."""
    data = Path(path).read_bytes()
    if len(data) < PREAMBLE.size or data[: len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path} is not a lightnets compressed model (or is truncated)")
    _, version, crc, head_len = PREAMBLE.unpack_from(data)
    if version != VERSION:
        raise CheckpointError(
            f"{path}: compressed format version {version}; this lightnets reads version {VERSION}"
        )
    if zlib.crc32(data[PREAMBLE.size - 4 :]) != crc:
        raise CheckpointError(f"{path} is corrupted or truncated (checksum mismatch)")
    start = PREAMBLE.size
    try:
        header = json.loads(data[start : start + head_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: unreadable header: {first_line(exc)}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: the header is not a lightnets compressed-model header")
    return header, memoryview(data)[start + head_len :]


def stream(payload: memoryview, record: StreamRecord) -> bytes:
    """The bytes of one stream (its bounds were checked by :func:`parse_header`)."""
    return bytes(payload[record.offset : record.offset + record.length])


# -- the header, field by field ----------------------------------------------------------------


@dataclass(frozen=True)
class StreamRecord:
    """Where one stream lies in the payload, and its coder (None for a raw codebook)."""

    offset: int
    length: int
    coder: str | None = None


@dataclass(frozen=True)
class LayerRecord:
    """A compressed layer: its weight's shape, bit widths, entry count and three streams."""

    key: str
    kind: str
    shape: tuple[int, ...]
    bits: int
    index_bits: int
    entries: int
    codebook: StreamRecord
    codes: StreamRecord
    gaps: StreamRecord

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class TensorRecord:
    """A tensor stored exactly in the dense stream."""

    key: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class DenseRecord:
    """The stream of every tensor left uncompressed: ``count`` bytes once decoded."""

    stream: StreamRecord
    count: int
    tensors: tuple[TensorRecord, ...]


@dataclass(frozen=True)
class Header:
    """A checked header. ``hparams`` rebuild the model (``name`` and its keyword arguments);
    ``dataset`` and ``config`` are the source checkpoint's records (checked by their readers)."""

    hparams: dict[str, Any]
    layers: tuple[LayerRecord, ...]
    dense: DenseRecord
    settings: dict[str, Any] | None = None
    finetune: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    config: dict[str, Any] | None = None


#: Bounds of the bit widths a layer may declare (weights: 2**bits values; gaps: index_bits).
BITS_RANGE = (1, 8)


class _Fields:
    """Reads the fields of one JSON object, naming the first wrong one in a CheckpointError."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _bad(where, "must be an object", value)
        self.value, self.where = value, where

    def _get(self, key: str, optional: bool) -> Any:
        if key not in self.value:
            if optional:
                return None
            raise CheckpointError(f"header field {self._name(key)} is missing")
        return self.value[key]

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def integer(self, key: str, minimum: int = 0, maximum: int | None = None) -> int:
        value = self._get(key, False)
        if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
            allowed = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise _bad(self._name(key), f"must be an integer {allowed}", value)
        return value

    def text(self, key: str) -> str:
        value = self._get(key, False)
        if not isinstance(value, str):
            raise _bad(self._name(key), "must be a string", value)
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self._get(key, False)
        if not isinstance(value, dict):
            raise _bad(self._name(key), "must be an object", value)
        return value

    def optional_mapping(self, key: str) -> dict[str, Any] | None:
        return None if self._get(key, True) is None else self.mapping(key)

    def items(self, key: str) -> list[Any]:
        value = self._get(key, False)
        if not isinstance(value, list):
            raise _bad(self._name(key), "must be a list", value)
        return value

    def shape(self, key: str) -> tuple[int, ...]:
        value = self._get(key, False)
        if not isinstance(value, list) or not all(_is_int(v) and v >= 0 for v in value):
            raise _bad(self._name(key), "must be a list of non-negative integers", value)
        return tuple(value)

    def stream(self, key: str, payload_size: int, *, coded: bool = True) -> StreamRecord:
        fields = _Fields(self._get(key, False), self._name(key))
        return fields.stream_here(payload_size, coded=coded)

    def stream_here(self, payload_size: int, *, coded: bool = True) -> StreamRecord:
        offset, length = self.integer("offset"), self.integer("length")
        if offset + length > payload_size:
            raise CheckpointError(
                f"header field {self.where} places a stream at "
                f"{offset}..{offset + length}, past the payload's {payload_size} bytes"
            )
        return StreamRecord(offset, length, self.text("coder") if coded else None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(name: str, rule: str, value: Any) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return CheckpointError(f"header field {name} {rule}, found {shown}")


def parse_header(header: dict[str, Any], payload_size: int) -> Header:
    """Every field of a header checked: types, ranges, stream bounds within ``payload_size``.

    Sizes are not yet checked against the model the header describes: that needs the model's
    tensor shapes (:func:`lightnets.models.weights.compressed.tensors.check_against_model`)."""
    top = _Fields(header, "")
    hparams = top.mapping("hparams")
    if not isinstance(hparams.get("name"), str):
        raise _bad("hparams.name", "must be a model name", hparams.get("name"))
    layers = []
    for i, item in enumerate(top.items("layers")):
        fields = _Fields(item, f"layers[{i}]")
        low, high = BITS_RANGE
        layers.append(
            LayerRecord(
                key=fields.text("key"),
                kind=fields.text("kind"),
                shape=fields.shape("shape"),
                bits=fields.integer("bits", low, high),
                index_bits=fields.integer("index_bits", low, high),
                entries=fields.integer("entries"),
                codebook=fields.stream("codebook", payload_size, coded=False),
                codes=fields.stream("codes", payload_size),
                gaps=fields.stream("gaps", payload_size),
            )
        )
    dense_fields = _Fields(top.mapping("dense"), "dense")
    tensors = []
    for i, item in enumerate(dense_fields.items("tensors")):
        fields = _Fields(item, f"dense.tensors[{i}]")
        dtype = fields.text("dtype")
        if dtype not in DTYPES:
            raise _bad(f"dense.tensors[{i}].dtype", f"must be one of {', '.join(DTYPES)}", dtype)
        tensors.append(TensorRecord(fields.text("key"), dtype, fields.shape("shape")))
    dense = DenseRecord(
        dense_fields.stream_here(payload_size), dense_fields.integer("count"), tuple(tensors)
    )
    return Header(
        hparams=dict(hparams),
        layers=tuple(layers),
        dense=dense,
        settings=top.optional_mapping("settings"),
        finetune=top.optional_mapping("finetune"),
        dataset=top.optional_mapping("dataset"),
        config=top.optional_mapping("config"),
    )


def read_header(path: str | os.PathLike[str]) -> tuple[Header, memoryview]:
    """:func:`read_file`, then :func:`parse_header`: a checked header and the payload."""
    header, payload = read_file(path)
    try:
        return parse_header(header, len(payload)), payload
    except CheckpointError as exc:
        raise CheckpointError(f"{path} is malformed: {exc}") from exc
