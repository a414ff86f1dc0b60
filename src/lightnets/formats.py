"""The model files lightnets runs in a runtime, recognised by content, and what each may do.

One table (:data:`FORMATS`), one rule (:func:`check_trusted`): a format whose loading runs code
the file carries (``runs_code``) is refused before it is opened by its runtime, unless the user
says that they trust the file (``--trust-code`` on the command line, ``trust_code=True`` in
Python). Recognising a format reads bytes only (the first bytes, a zip directory, a protobuf
parse); nothing in the file is executed.

What each format may do when loaded (docs/deploy.md has the same table, with the weights files):

- ONNX: a graph of ONNX operators that ONNX Runtime interprets; an operator from another domain
  (a custom op) needs a library registered with the session, which lightnets never does, so
  ONNX Runtime refuses it; external data files must lie inside the model's folder.
- OpenVINO IR: a graph of OpenVINO operations (XML) with weights (.bin); custom operations need
  an extension library, which lightnets never loads.
- TorchScript: a program. ``torch.jit.load`` runs code stored in the file (its ``__setstate__``
  while loading, its ``forward`` on every call), with every permission of the user: it can read,
  overwrite or delete any file the user can.

A new format (another runtime's file) is one :func:`register_format` call with its recogniser
and ``runs_code``; the rule then applies to it everywhere.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lightnets.errors import UntrustedCodeError, require
from lightnets.fileio import open_regular

__all__ = [
    "FORMATS",
    "FileFormat",
    "check_trusted",
    "identify",
    "is_torchscript",
    "not_weights",
    "register_format",
]

#: Bytes read from the start of a file to recognise it.
HEAD_BYTES = 512
#: The flag (and keyword) with which a user says that they trust a file that runs code.
TRUST_FLAG = "--trust-code"


@dataclass(frozen=True)
class FileFormat:
    """A model file format: ``name`` (``--format`` value), ``label`` for messages,
    ``runs_code`` (loading it runs code the file carries), ``may_do`` (what loading and running
    it may do, in words), and ``recognise(path, head)`` (``head``: the first bytes), which
    must read data only."""

    name: str
    label: str
    runs_code: bool
    may_do: str
    recognise: Callable[[Path, bytes], bool]


def _is_openvino(path: Path, head: bytes) -> bool:
    text = head.lstrip()
    return (text.startswith(b"<?xml") or text.startswith(b"<net")) and b"<net" in head


def _zip_names(path: Path) -> list[str]:
    try:
        with open_regular(path) as handle, zipfile.ZipFile(handle) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return []


def is_torchscript(path: str | os.PathLike[str], head: bytes | None = None) -> bool:
    """A TorchScript archive: a zip holding ``code/`` (the program) or ``constants.pkl``; a
    ``torch.save`` checkpoint is a zip without them."""
    path = Path(path)
    if head is not None and not head.startswith(b"PK\x03\x04"):
        return False
    return any("/code/" in name or name.endswith("/constants.pkl") for name in _zip_names(path))


def _is_torchscript(path: Path, head: bytes) -> bool:
    return is_torchscript(path, head)


def _is_onnx(path: Path, head: bytes) -> bool:
    if head[:1] != b"\x08":  # ONNX's first field: ir_version (field 1, varint)
        return False
    try:
        onnx = require("onnx", "onnx")
        with open_regular(path) as handle:
            model = onnx.load_from_string(handle.read())  # external data is not loaded
    except Exception:  # not parseable as ONNX: not an ONNX file
        return False
    return len(model.graph.node) > 0


#: Recognised formats, in the order they are tried (cheapest test first).
FORMATS: dict[str, FileFormat] = {}


def register_format(fmt: FileFormat) -> FileFormat:
    """Add ``fmt`` to :data:`FORMATS` (tried after those already there)."""
    if fmt.name in FORMATS:
        raise RuntimeError(f"file format {fmt.name!r} registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


register_format(
    FileFormat(
        "openvino",
        "an OpenVINO IR file",
        runs_code=False,
        may_do="a graph of OpenVINO operations; custom operations need an extension library, "
        "which lightnets never loads",
        recognise=_is_openvino,
    )
)
register_format(
    FileFormat(
        "torchscript",
        "a TorchScript file",
        runs_code=True,
        may_do="a program: torch.jit.load runs the code it carries, with your permissions "
        "(it can read, overwrite or delete any file you can)",
        recognise=_is_torchscript,
    )
)
register_format(
    FileFormat(
        "onnx",
        "an ONNX file",
        runs_code=False,
        may_do="a graph of ONNX operators interpreted by ONNX Runtime; custom operators are "
        "refused (lightnets registers no operator library), external data must lie beside it",
        recognise=_is_onnx,
    )
)


def identify(path: str | os.PathLike[str]) -> FileFormat | None:
    """The format of the regular file ``path`` from its content (None: none of these)."""
    path = Path(path)
    try:
        with open_regular(path) as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return None
    return next((fmt for fmt in FORMATS.values() if fmt.recognise(path, head)), None)


def not_weights(path: str | os.PathLike[str], fmt: FileFormat, expected: str = "weights") -> str:
    """Why a model file of format ``fmt`` cannot be read where ``expected`` (weights, a
    checkpoint) is: an exported model runs in its runtime (``predict``, ``bench``)."""
    where = "`lightnets predict` and `bench` run it"
    if fmt.runs_code:
        where += f" only with {TRUST_FLAG}: it is a program, which runs with your permissions"
    return f"{path} is {fmt.label}, not {expected}: an exported model; {where}"


def check_trusted(path: str | os.PathLike[str], fmt: FileFormat, trust_code: bool) -> None:
    """Refuse, before anything loads it, a file whose format runs code, unless trusted."""
    if fmt.runs_code and not trust_code:
        raise UntrustedCodeError(
            f"{path} is {fmt.label}, {fmt.may_do}; lightnets loads it only with {TRUST_FLAG} "
            "(trust_code=True in Python): use that only for files you made or trust"
        )
