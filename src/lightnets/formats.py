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
- pt2 (``torch.export``): also code. ``torch.export.load`` unpickles objects, evaluates shape
  expressions and calls any torch function the graph names.
- ExecuTorch (.pte) and LiteRT (.tflite): FlatBuffers naming operators from the runtime's
  kernel library; no code of the file's own runs, but an operator outside what lightnets'
  exports use (a custom op, an external buffer) is refused unless trusted: the allowlist is the
  runtime's own knowledge (:mod:`lightnets.deploy.device_formats`).
- Core ML (.mlpackage, a folder): runs only in Core ML on Apple platforms; lightnets reads its
  metadata and specification, it never runs it.

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
    "is_mlpackage",
    "is_pt2",
    "is_pte",
    "is_tflite",
    "is_torchscript",
    "misnamed",
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
    it may do, in words), ``recognise(path, head)`` (``head``: the first bytes; empty for a
    folder), which must read data only, ``suffix`` (the usual file name ending) and
    ``recognised_by`` (what its content must be, for messages about a misnamed file)."""

    name: str
    label: str
    runs_code: bool
    may_do: str
    recognise: Callable[[Path, bytes], bool]
    suffix: str = ""
    recognised_by: str = ""
    folder: bool = False


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


#: An ExecuTorch program's and a TFLite model's FlatBuffer file identifiers (bytes 4-8).
PTE_IDENTIFIER, TFLITE_IDENTIFIER = b"ET12", b"TFL3"
#: Largest ``archive_format`` member of a .pt2 archive read to recognise it (it holds "pt2").
_PT2_FORMAT_MEMBER_LIMIT = 64


def is_pt2(path: str | os.PathLike[str], head: bytes | None = None) -> bool:
    """A ``torch.export`` archive: a zip whose ``*/archive_format`` member reads ``pt2``."""
    if head is not None and not head.startswith(b"PK\x03\x04"):
        return False
    try:
        with open_regular(Path(path)) as handle, zipfile.ZipFile(handle) as archive:
            for info in archive.infolist():
                if info.filename.endswith("/archive_format"):
                    if info.file_size > _PT2_FORMAT_MEMBER_LIMIT:
                        return False
                    return archive.read(info).strip() == b"pt2"
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return False


def _is_pt2(path: Path, head: bytes) -> bool:
    return is_pt2(path, head)


def is_pte(head: bytes) -> bool:
    """``head`` (a file's first bytes) starts an ExecuTorch program."""
    return len(head) >= 8 and head[4:8] == PTE_IDENTIFIER


def is_tflite(head: bytes) -> bool:
    """``head`` (a file's first bytes) starts a TFLite model."""
    return len(head) >= 8 and head[4:8] == TFLITE_IDENTIFIER


#: The files inside a Core ML package folder that make it one.
MLPACKAGE_FILES = ("Manifest.json", "Data/com.apple.CoreML/model.mlmodel")


def is_mlpackage(path: str | os.PathLike[str]) -> bool:
    """``path`` is a folder holding a Core ML package (its manifest and specification)."""
    return all((Path(path) / name).is_file() for name in MLPACKAGE_FILES)


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
        suffix=".xml",
        recognised_by="XML with a <net> root",
    )
)
register_format(
    FileFormat(
        "pt2",
        "a torch.export archive",
        runs_code=True,
        may_do="a program: torch.export.load unpickles objects and calls the functions the file "
        "names, with your permissions (it can read, overwrite or delete any file you can)",
        recognise=_is_pt2,
        suffix=".pt2",
        recognised_by="a zip archive whose */archive_format reads 'pt2'",
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
        suffix=".pt",
        recognised_by="a zip archive holding code/",
    )
)
register_format(
    FileFormat(
        "executorch",
        "an ExecuTorch program",
        runs_code=False,
        may_do="operators of the ExecuTorch runtime's kernels and the XNNPACK delegate; any "
        "other operator namespace or delegate is refused unless trusted",
        recognise=lambda path, head: is_pte(head),
        suffix=".pte",
        recognised_by="a FlatBuffer with the identifier 'ET12' at bytes 4-8",
    )
)
register_format(
    FileFormat(
        "litert",
        "a TFLite model",
        runs_code=False,
        may_do="LiteRT builtin operators; custom operators, external buffers and builtins "
        "outside lightnets' exports are refused unless trusted",
        recognise=lambda path, head: is_tflite(head),
        suffix=".tflite",
        recognised_by="a FlatBuffer with the identifier 'TFL3' at bytes 4-8",
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
        suffix=".onnx",
        recognised_by="an ONNX protobuf with a graph",
    )
)
register_format(
    FileFormat(
        "coreml",
        "a Core ML package",
        runs_code=False,
        may_do="runs only in Core ML on Apple platforms; lightnets reads its metadata and "
        "specification and never runs it",
        recognise=lambda path, head: is_mlpackage(path),
        suffix=".mlpackage",
        recognised_by="a folder holding " + " and ".join(MLPACKAGE_FILES),
        folder=True,
    )
)


def identify(path: str | os.PathLike[str]) -> FileFormat | None:
    """The format of the regular file (or package folder) ``path`` from its content (None:
    none of these)."""
    path = Path(path)
    if path.is_dir():
        return next((f for f in FORMATS.values() if f.folder and f.recognise(path, b"")), None)
    try:
        with open_regular(path) as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return None
    return next((f for f in FORMATS.values() if not f.folder and f.recognise(path, head)), None)


#: Endings other files share (a .pt checkpoint, any .xml, an .onnx that failed to parse is
#: reported by its loader): a name with them promises no format.
_SHARED_SUFFIXES = (".xml", ".pt", ".onnx")


def misnamed(path: str | os.PathLike[str]) -> str | None:
    """For a file named like one of the formats but not recognised as any: what its content
    should be (None: its name promises nothing)."""
    suffix = Path(path).suffix.lower()
    for fmt in FORMATS.values():
        if fmt.suffix == suffix and fmt.suffix not in _SHARED_SUFFIXES:
            return f"{path}: not {fmt.label}: expected {fmt.recognised_by}"
    return None


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
