"""The device formats' runtimes as data: how each loads, reads its metadata, checks operators.

How a file is recognised and whether its loading runs code is :mod:`lightnets.formats`' table,
one rule for every format (a format that runs code, ``pt2``, is refused unless the user trusts
it: ``--trust-code``, ``trust_code=True``). This table adds what only the runtime knows: a
format whose operators are fixed by the runtime but can name ones outside a pure-tensor
allowlist has an ``unknown`` check, and a file naming any is refused the same way.

- ``pt2``: runs in ``torch.export.load`` (only when trusted).
- ``executorch``: operator namespaces and delegates checked against the allowlist before
  loading; runs in ``executorch.runtime`` (XNNPACK).
- ``litert``: custom operators, external buffers and builtins outside the allowlist are checked
  for; runs in ``ai_edge_litert``'s Interpreter (XNNPACK).
- ``coreml``: runs only in Core ML on Apple platforms (its metadata is read here, it is not run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightnets.deploy import coreml, executorch_runtime, litert_runtime, pt2
from lightnets.errors import UntrustedCodeError
from lightnets.formats import FORMATS, TRUST_FLAG, identify
from lightnets.formats import check_trusted as check_runs_code

__all__ = ["DEVICE_FORMATS", "DeviceRuntime", "check_trusted", "recognise"]


@dataclass(frozen=True)
class DeviceRuntime:
    """What the runtime of one device format (a :data:`lightnets.formats.FORMATS` name) does."""

    name: str
    unknown: Callable[[Path], list[str]] | None  # what it names outside the allowlist
    load: Callable[[Path], tuple[Callable, list]] | None  # (runner, runtime input shape)
    read_metadata: Callable[[Path], str | None]
    runtime: str


def _load_pte(path: Path) -> tuple[executorch_runtime.Runner, list[int]]:
    return executorch_runtime.runner(path)


def _load_tflite(path: Path) -> tuple[litert_runtime.Runner, list[int]]:
    return litert_runtime.runner(path)


DEVICE_FORMATS: dict[str, DeviceRuntime] = {
    f.name: f
    for f in (
        DeviceRuntime(
            "pt2",
            unknown=None,
            load=pt2.runner,
            read_metadata=pt2.read_metadata,
            runtime="torch.export.load",
        ),
        DeviceRuntime(
            "executorch",
            unknown=executorch_runtime.unknown_operators,
            load=_load_pte,
            read_metadata=executorch_runtime.read_metadata,
            runtime="executorch.runtime (XNNPACK)",
        ),
        DeviceRuntime(
            "litert",
            unknown=litert_runtime.unknown_operators,
            load=_load_tflite,
            read_metadata=litert_runtime.read_metadata,
            runtime="ai_edge_litert Interpreter (XNNPACK)",
        ),
        DeviceRuntime(
            "coreml",
            unknown=None,
            load=None,
            read_metadata=coreml.read_metadata,
            runtime="Core ML (macOS and iOS only)",
        ),
    )
}


def recognise(path: str | Path) -> str | None:
    """The device format of ``path`` from its content (a .mlpackage is a folder); else None."""
    fmt = identify(path)
    return fmt.name if fmt is not None and fmt.name in DEVICE_FORMATS else None


def check_trusted(path: str | Path, kind: str, *, trust_code: bool) -> None:
    """Refuse ``path`` (of device format ``kind``) before loading when it may run code or names
    operators outside the allowlist, unless ``trust_code``."""
    check_runs_code(path, FORMATS[kind], trust_code)
    runtime = DEVICE_FORMATS[kind]
    if trust_code or runtime.unknown is None:
        return
    found = runtime.unknown(Path(path))
    if found:
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        listed = ", ".join(found[:5]) + more
        raise UntrustedCodeError(
            f"{path}: uses {listed}, outside what lightnets' {kind} exports use; "
            f"run it only if you trust where it came from: {TRUST_FLAG}"
        )


def describe() -> list[dict[str, Any]]:
    """The table as plain data (for docs and tests)."""
    return [
        {
            "format": f.name,
            "suffix": FORMATS[f.name].suffix,
            "recognised_by": FORMATS[f.name].recognised_by,
            "runs_code": FORMATS[f.name].runs_code,
            "operator_check": f.unknown is not None,
            "runtime": f.runtime,
        }
        for f in DEVICE_FORMATS.values()
    ]
