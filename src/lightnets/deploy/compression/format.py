"""The compressed-model file: magic bytes, version, CRC, a JSON header, then the streams.

Layout (little-endian)::

    magic    8 bytes   b"\\x89LNZ\\r\\n\\x1a\\n" (PNG-style: catches text-mode and truncated copies)
    version  uint16
    crc32    uint32    of everything after this field (header length, header, payload)
    hlen     uint32    length of the header
    header   hlen bytes of UTF-8 JSON: model hparams, source record, settings, and for each
                       compressed layer its shape, bit widths and (offset, length, coder) of its
                       codebook, weight-code and gap streams; the other tensors' names/dtypes
    payload  the streams, back to back

The file is recognised by its content (:func:`is_compressed`), whatever its name. It is written
atomically (:mod:`lightnets.fileio`); a corrupted or truncated file is a one-line
:class:`~lightnets.errors.CheckpointError`.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightnets.errors import CheckpointError
from lightnets.fileio import atomic_path
from lightnets.jsonio import dumps

MAGIC = b"\x89LNZ\r\n\x1a\n"
VERSION = 1
FORMAT = "lightnets-compressed"
_PREAMBLE = struct.Struct("<8sHII")  # magic, version, crc32, header length
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


@dataclass
class Payload:
    """Streams being appended; each ``add`` returns the record a header keeps for it."""

    chunks: list[bytes] = field(default_factory=list)
    size: int = 0

    def add(self, data: bytes, **record: Any) -> dict[str, Any]:
        self.chunks.append(data)
        record.update(offset=self.size, length=len(data))
        self.size += len(data)
        return record


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def tensor_from_bytes(data: bytes, dtype_name: str, shape: list[int]) -> torch.Tensor:
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


def write_file(path: str | os.PathLike[str], header: dict[str, Any], payload: Payload) -> int:
    """Write header and payload atomically; returns the file size in bytes."""
    head = dumps(header, separators=(",", ":")).encode("utf-8")
    body = struct.pack("<I", len(head)) + head + b"".join(payload.chunks)
    crc = zlib.crc32(body)
    data = MAGIC + struct.pack("<HI", VERSION, crc) + body
    path = Path(path)
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return len(data)


def is_compressed(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a file that starts with the compressed format's magic bytes."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], memoryview]:
    """Check magic, version, CRC and header; returns (header, payload)."""
    data = Path(path).read_bytes()
    if len(data) < _PREAMBLE.size or data[: len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path} is not a lightnets compressed model (or is truncated)")
    _, version, crc, head_len = _PREAMBLE.unpack_from(data)
    if version != VERSION:
        raise CheckpointError(
            f"{path}: compressed format version {version}; this lightnets reads version {VERSION}"
        )
    if zlib.crc32(data[_PREAMBLE.size - 4 :]) != crc:
        raise CheckpointError(f"{path} is corrupted or truncated (checksum mismatch)")
    start = _PREAMBLE.size
    try:
        header = json.loads(data[start : start + head_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable header: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: the header is not a lightnets compressed-model header")
    return header, memoryview(data)[start + head_len :]


def stream(payload: memoryview, record: dict[str, Any]) -> bytes:
    """The bytes of one stream, checked against the payload's bounds."""
    offset, length = int(record["offset"]), int(record["length"])
    if offset < 0 or length < 0 or offset + length > len(payload):
        raise CheckpointError("corrupted compressed file: a stream lies outside the file")
    return bytes(payload[offset : offset + length])
