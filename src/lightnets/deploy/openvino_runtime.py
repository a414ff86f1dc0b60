"""Compiling for OpenVINO without leaving the process fragile.

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
from typing import Any

from lightnets.errors import require

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
