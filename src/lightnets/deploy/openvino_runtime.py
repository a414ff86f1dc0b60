"""OpenVINO in one place: compiling safely, the tuned CPU settings, running, saving IR.

Every module that runs or writes an OpenVINO model goes through here (the backends, export,
quantization, exported-file loading), so the settings measured to win are written once.

Compiling without leaving the process fragile:

OpenVINO's CPU plugin, when it compiles a model, installs an alternate signal stack of about
11 KiB on the calling thread. CPython runs its signal handlers with ``SA_ONSTACK``, so every later
Python-level handler (PyTorch's DataLoader installs one for SIGCHLD) then runs on that small
stack; on CPUs with a large AVX-512 register state, the dynamic linker's first symbol lookup
inside the handler overflows it and the process dies with SIGSEGV when a child process exits.
:func:`compile_model` compiles, then makes sure the alternate stack is at least
:data:`MIN_SIGNAL_STACK_BYTES` large.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lightnets.analysis.machine import physical_cores as physical_cores  # backends import it here
from lightnets.analysis.threads import default_threads
from lightnets.errors import QUOTE_LIMIT, SaveError, require
from lightnets.fileio import atomic_path, commit

#: Size of the alternate signal stack kept after OpenVINO compiles (glibc's SIGSTKSZ is 8 KiB;
#: the x86-64 XSAVE area alone can take 11 KiB with AMX).
MIN_SIGNAL_STACK_BYTES = 256 * 1024

_SS_DISABLE = 2
_stack_buffers: list[ctypes.Array] = []  # installed stacks must never be freed


class _StackT(ctypes.Structure):
    _fields_ = [
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    ]


def signal_stack_size() -> int | None:
    """Bytes of this thread's alternate signal stack; None when there is none (or not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    current = _StackT()
    if libc.sigaltstack(None, ctypes.byref(current)) != 0 or current.ss_flags & _SS_DISABLE:
        return None
    return int(current.ss_size)


def ensure_signal_stack(min_bytes: int = MIN_SIGNAL_STACK_BYTES) -> None:
    """Replace this thread's alternate signal stack by a larger one if it is smaller."""
    size = signal_stack_size()
    if size is None or size >= min_bytes:
        return
    buffer = ctypes.create_string_buffer(min_bytes)
    stack = _StackT(ctypes.cast(buffer, ctypes.c_void_p), 0, min_bytes)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.sigaltstack(ctypes.byref(stack), None) == 0:
        _stack_buffers.append(buffer)


def compile_model(model: Any, config: dict[str, Any] | None = None) -> Any:
    """``openvino.Core().compile_model(model, "CPU", config)``, leaving a safe signal stack."""
    ov = require("openvino", "openvino")
    compiled = ov.Core().compile_model(model, "CPU", config or {})
    ensure_signal_stack()
    return compiled


def latency_config(threads: int | None = None, precision: str = "f32") -> dict[str, Any]:
    """lightnets' tuned CPU settings for batch-1 latency (measured in docs/deploy.md).

    One stream with ``threads`` threads (default: the count the thread policy chose in this
    process, else the physical cores: :func:`lightnets.analysis.threads.default_threads`) and
    the LATENCY hint; ``precision`` is
    OpenVINO's ``INFERENCE_PRECISION_HINT`` (``f32`` keeps fp32 exact: OpenVINO computes in
    bf16 by default on CPUs with bf16 instructions).
    """
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": threads or default_threads(),
        "ENABLE_HYPER_THREADING": False,
        "INFERENCE_PRECISION_HINT": precision,
    }


def request_runner(compiled: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``run(x) -> logits`` through one reused infer request with shared input memory."""
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer([np.ascontiguousarray(x)], share_inputs=True, share_outputs=True)
        return request.get_output_tensor(0).data.copy()

    return run


def read_model(path: str | Path) -> Any:
    """``openvino.Core().read_model(path)`` (the ``.bin`` beside the ``.xml``)."""
    ov = require("openvino", "openvino")
    return ov.Core().read_model(str(path))


def save_ir(
    ov_model: Any, path: str | Path, *, check: Callable[[Path], None] | None = None
) -> tuple[Path, Path]:
    """Write ``ov_model`` as ``path`` (.xml) + .bin atomically, weights kept in fp32.

    Both files are written to temporary names beside ``path``; ``check(temp_xml)`` (when given)
    may verify them before they are renamed into place, the .bin first and the .xml last. On
    any failure the temporary files are removed and ``path`` is left as it was; a failed write
    (OpenVINO reports a full disk as a generic iostream error) is a one-line :class:`SaveError`.
    """
    ov = require("openvino", "openvino")
    path = Path(path)
    with atomic_path(path, ".xml") as temp_xml:
        temp_bin = temp_xml.with_suffix(".bin")
        try:
            try:
                ov.save_model(ov_model, str(temp_xml), compress_to_fp16=False)
            except (RuntimeError, OSError) as exc:
                raise SaveError(f"cannot write {path}: {_reason(exc)}") from exc
            if check is not None:
                check(temp_xml)
            commit(temp_bin, path.with_suffix(".bin"))
        finally:
            temp_bin.unlink(missing_ok=True)
    return (path, path.with_suffix(".bin"))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    # OpenVINO's messages end with the cause (after the C++ file and check that failed).
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    return f"{text[:QUOTE_LIMIT]} (is the disk full?)"
