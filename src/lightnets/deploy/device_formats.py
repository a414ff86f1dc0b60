"""The device formats as data: how each is recognised, what it may run, how it loads.

Every file ``predict``, ``bench`` and ``export --print-metadata`` accept is recognised by its
content, never by its name alone. A format whose loading may run code from the file
(``runs_code``) is refused unless the user trusts it (``--trust-code``, ``trust_code=True``);
a format whose operators are fixed by the runtime but can name ones outside a pure-tensor
allowlist has an ``unknown`` check, and a file naming any is refused the same way.

- ``pt2``: a zip archive whose ``*/archive_format`` reads ``pt2``; **runs code** when loaded
  (``torch.export.load`` unpickles, evaluates shape expressions, calls any torch function the
  graph names): refused unless trusted; runs in ``torch.export.load``.
- ``executorch``: a FlatBuffer with the identifier ``ET12`` at bytes 4-8; operators resolve to
  the runtime's kernels: its operator namespaces and delegates are checked against the
  allowlist before loading; runs in ``executorch.runtime`` (XNNPACK).
- ``litert``: a FlatBuffer with the identifier ``TFL3`` at bytes 4-8; custom operators,
  external buffers and builtins outside the allowlist are checked for; runs in
  ``ai_edge_litert``'s Interpreter (XNNPACK).
- ``coreml``: a folder holding ``Manifest.json`` and ``Data/com.apple.CoreML/model.mlmodel``;
  runs only in Core ML on Apple platforms (its metadata is read here, it is not run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightnets.deploy import coreml, executorch_runtime, litert_runtime, pt2
from lightnets.errors import CheckpointError

__all__ = [
    "DEVICE_FORMATS",
    "FileFormat",
    "UntrustedFileError",
    "check_trusted",
    "expected_content",
    "recognise",
]


class UntrustedFileError(CheckpointError):
    """The file may run code (or operators outside the allowlist) and was not trusted."""


@dataclass(frozen=True)
class FileFormat:
    """One content-recognised exported format."""

    name: str
    title: str  # what a file of this format is called in messages, with its article
    suffix: str
    recognised_by: str
    recognise: Callable[[Path, bytes], bool]  # (path, its first bytes) -> is this format
    runs_code: bool  # loading may run code the file carries: refused unless trusted
    unknown: Callable[[Path], list[str]] | None  # what it names outside the allowlist
    load: Callable[[Path], tuple[Callable, list]] | None  # (runner, runtime input shape)
    read_metadata: Callable[[Path], str | None]
    runtime: str


def _load_pte(path: Path):
    return executorch_runtime.runner(path)


def _load_tflite(path: Path):
    return litert_runtime.runner(path)


DEVICE_FORMATS: dict[str, FileFormat] = {
    f.name: f
    for f in (
        FileFormat(
            "pt2",
            "a torch.export archive",
            ".pt2",
            "a zip archive whose */archive_format reads 'pt2'",
            lambda path, head: head.startswith(b"PK\x03\x04") and pt2.is_pt2(path),
            runs_code=True,
            unknown=None,
            load=pt2.runner,
            read_metadata=pt2.read_metadata,
            runtime="torch.export.load",
        ),
        FileFormat(
            "executorch",
            "an ExecuTorch program",
            ".pte",
            "a FlatBuffer with the identifier 'ET12' at bytes 4-8",
            lambda path, head: executorch_runtime.is_pte(head),
            runs_code=False,
            unknown=executorch_runtime.unknown_operators,
            load=_load_pte,
            read_metadata=executorch_runtime.read_metadata,
            runtime="executorch.runtime (XNNPACK)",
        ),
        FileFormat(
            "litert",
            "a TFLite model",
            ".tflite",
            "a FlatBuffer with the identifier 'TFL3' at bytes 4-8",
            lambda path, head: litert_runtime.is_tflite(head),
            runs_code=False,
            unknown=litert_runtime.unknown_operators,
            load=_load_tflite,
            read_metadata=litert_runtime.read_metadata,
            runtime="ai_edge_litert Interpreter (XNNPACK)",
        ),
        FileFormat(
            "coreml",
            "a Core ML package",
            ".mlpackage",
            "a folder holding Manifest.json and Data/com.apple.CoreML/model.mlmodel",
            lambda path, head: coreml.is_mlpackage(path),
            runs_code=False,
            unknown=None,
            load=None,
            read_metadata=coreml.read_metadata,
            runtime="Core ML (macOS and iOS only)",
        ),
    )
}


def recognise(path: str | Path) -> str | None:
    """The device format of ``path`` from its content (a .mlpackage is a folder); else None."""
    path = Path(path)
    head = b""
    if path.is_file():
        try:
            with open(path, "rb") as handle:
                head = handle.read(16)
        except OSError:
            return None
    elif not path.is_dir():
        return None
    for fmt in DEVICE_FORMATS.values():
        if fmt.recognise(path, head):
            return fmt.name
    return None


def expected_content(path: str | Path) -> str | None:
    """For a file named like a device format but not recognised: what its content should be."""
    suffix = Path(path).suffix.lower()
    for fmt in DEVICE_FORMATS.values():
        if fmt.suffix == suffix:
            return f"{path}: not {fmt.title}: expected {fmt.recognised_by}"
    return None


def check_trusted(path: str | Path, kind: str, *, trust_code: bool) -> None:
    """Refuse ``path`` (of device format ``kind``) before loading when it may run code or names
    operators outside the allowlist, unless ``trust_code``."""
    fmt = DEVICE_FORMATS[kind]
    if trust_code:
        return
    if fmt.runs_code:
        raise UntrustedFileError(
            f"{path}: a {fmt.suffix} file runs code from the file when it is loaded "
            f"({fmt.runtime} unpickles objects and calls functions it names); load it only "
            "if you trust where it came from: --trust-code"
        )
    if fmt.unknown is not None:
        found = fmt.unknown(Path(path))
        if found:
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            listed = ", ".join(found[:5]) + more
            raise UntrustedFileError(
                f"{path}: uses {listed}, outside what lightnets' {fmt.name} exports use; "
                "run it only if you trust where it came from: --trust-code"
            )


def describe() -> list[dict[str, Any]]:
    """The table as plain data (for docs and tests)."""
    return [
        {
            "format": f.name,
            "suffix": f.suffix,
            "recognised_by": f.recognised_by,
            "runs_code": f.runs_code,
            "operator_check": f.unknown is not None,
            "runtime": f.runtime,
        }
        for f in DEVICE_FORMATS.values()
    ]
