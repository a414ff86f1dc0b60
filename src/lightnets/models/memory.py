"""Memory a model needs, estimated before anything is allocated.

A width multiplier of 1e9, 10^12 classes, a 100,000-pixel input or a batch of 10^8 would make
PyTorch try to allocate terabytes and the process die (or the machine swap) instead of saying
what was wrong. :func:`check_memory` builds the network on the meta device (shapes, no storage),
runs one meta forward pass to see every layer's output, and refuses with the estimate and the
machine's memory when the total cannot fit.

The estimate, in float32 bytes:

- parameters and buffers;
- inference: the largest input + output of one layer (what must be live at once);
  training: every layer's output (kept for the backward pass), plus gradients and one optimiser
  state per parameter (SGD momentum; Adam's second moment makes it a little more).

It is a lower bound of what PyTorch will use, good to within a small factor: enough to refuse
sizes that are wrong by orders of magnitude, which is what it is for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightnets.errors import InvalidArgumentError, first_line
from lightnets.models.registry import create_model

BYTES_PER_ELEMENT = 4  # float32
#: Copies of the parameters a training step holds: weights, gradients, one optimiser state.
TRAINING_PARAMETER_COPIES = 3


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes of one model at one input size and batch (see the module docstring)."""

    parameter_bytes: int
    activation_bytes: int
    batch_size: int
    input_size: tuple[int, int, int]
    training: bool

    @property
    def total_bytes(self) -> int:
        copies = TRAINING_PARAMETER_COPIES if self.training else 1
        return copies * self.parameter_bytes + self.activation_bytes


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units: '512 B', '3.2 GiB', '1.1e+06 TiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB" if n < 1e4 else f"{n:.1e} TiB"


def available_memory() -> tuple[int, int]:
    """(available, total) bytes of this machine's memory (``MemAvailable`` where Linux has it)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, total
    except OSError:
        pass
    return total, total


def _activation_bytes(model: nn.Module, x: torch.Tensor, training: bool) -> int:
    """Bytes of activations of one meta forward pass (see the module docstring)."""
    stored = x.numel()
    peak = 0

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal stored, peak
        if not isinstance(output, torch.Tensor):
            return
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        stored += output.numel()
        peak = max(peak, output.numel() + (first.numel() if first is not None else 0))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return BYTES_PER_ELEMENT * (stored if training else max(peak, x.numel()))


def estimate_memory(
    hparams: Mapping[str, Any],
    input_size: tuple[int, int, int] | None = None,
    batch_size: int = 1,
    *,
    training: bool = False,
) -> MemoryEstimate:
    """Estimate the memory of ``create_model(**hparams)`` on (batch, *input_size) inputs.

    ``hparams`` is a model's ``hparams`` dict (``name``, ``num_classes``, ``variant``, ...);
    ``input_size`` defaults to the model's ``default_input_size``. Nothing real is allocated.
    Raises InvalidArgumentError for bad hparams, as ``create_model`` does.
    """
    kwargs = dict(hparams)
    name = kwargs.pop("name")
    with torch.device("meta"):
        model = create_model(name, **kwargs)
        size = tuple(input_size) if input_size is not None else model.default_input_size
        parameters = sum(
            t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())
        )
        model.train(training)
        x = torch.empty(batch_size, *size)
        activations = _activation_bytes(model, x, training)
    return MemoryEstimate(parameters, activations, batch_size, size, training)


def _describe(hparams: Mapping[str, Any]) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in hparams.items() if k != "name")
    return f"{hparams.get('name')} ({settings})"


def check_memory(
    hparams: Mapping[str, Any],
    input_size: tuple[int, int, int] | None = None,
    batch_size: int = 1,
    *,
    training: bool = False,
) -> MemoryEstimate:
    """:func:`estimate_memory`, refused with InvalidArgumentError when it exceeds the memory
    this machine has available. Call it before building or loading a model of untrusted size."""
    what = _describe(hparams)
    try:
        estimate = estimate_memory(hparams, input_size, batch_size, training=training)
    except (RuntimeError, OverflowError, MemoryError) as exc:
        reason = first_line(exc)
        if "overflow" in reason.lower() or not isinstance(exc, RuntimeError):
            # Shapes beyond what PyTorch can even describe (more than 2^63 bytes).
            raise InvalidArgumentError(
                f"{what} at batch {batch_size} is too large for any machine: one of its "
                f"tensors would exceed 2^63 bytes ({reason})"
            ) from exc
        size = "x".join(map(str, input_size)) if input_size is not None else "default"
        raise InvalidArgumentError(
            f"{what} cannot run on {size} inputs at batch {batch_size}: {reason}"
        ) from exc
    available, total = available_memory()
    if estimate.total_bytes > available:
        c, h, w = estimate.input_size
        mode = "training" if training else "inference"
        raise InvalidArgumentError(
            f"{what} at batch {batch_size}, {c}x{h}x{w} input needs about "
            f"{format_bytes(estimate.total_bytes)} for {mode} (parameters "
            f"{format_bytes(estimate.parameter_bytes)}, activations "
            f"{format_bytes(estimate.activation_bytes)}); this machine has "
            f"{format_bytes(total)} of memory, {format_bytes(available)} available"
        )
    return estimate
