"""Writing the compressed-model file (``.lnz``): its layout and reader are
:mod:`lightnets.models.weights.compressed.header`, beside the other weight formats.

The streams are appended to a :class:`Payload`, whose records go into the JSON header; the file
(magic bytes, version, CRC-32, header, payload) is written atomically (:mod:`lightnets.fileio`).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightnets.fileio import atomic_path
from lightnets.jsonio import dumps
from lightnets.models.weights.compressed.header import MAGIC, VERSION


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
    """A tensor's raw bytes, in C order (read back by ``tensor_from_bytes``)."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


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
