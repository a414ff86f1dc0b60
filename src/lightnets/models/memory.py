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

import math
import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightnets.errors import InvalidArgumentError, first_line
from lightnets.models.base import LightweightNet
from lightnets.models.registry import create_model, get_model_entry

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
    """(available, total) bytes of memory this process may still use.

    ``MemAvailable`` of the machine (Linux; the physical memory elsewhere), lowered by what
    limits this process: its cgroup's memory limit (a container's; v2 and v1) and its
    address-space limit (``ulimit -v``), each less what is already in use.
    """
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = total
    meminfo = _read_text("/proc/meminfo")
    for line in (meminfo or "").splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    for limit_file, usage_file in _CGROUP_FILES:
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < total:
            available = min(available, max(0, limit - usage))
            total = min(total, limit)
    address_limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    statm = _read_text("/proc/self/statm")
    if address_limit != resource.RLIM_INFINITY and statm:
        in_use = int(statm.split()[0]) * os.sysconf("SC_PAGE_SIZE")
        available = min(available, max(0, address_limit - in_use))
        total = min(total, address_limit)
    return available, total


#: (limit, usage) files of the process's memory cgroup: v2, then v1.
_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def _read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = (_read_text(path) or "").strip()
    return int(text) if text.isdigit() else None  # "max" (no limit) and absent files: None


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
        c, h, w = input_size if input_size is not None else model.default_input_size
        size = (c, h, w)
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


def meta_model(hparams: Mapping[str, Any]) -> LightweightNet:
    """``create_model(**hparams)`` built on the meta device: shapes and ``hparams`` (defaults
    filled in), no storage allocated."""
    kwargs = dict(hparams)
    with torch.device("meta"):
        return create_model(kwargs.pop("name"), **kwargs)


def tensor_specs(hparams: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shape and dtype of every tensor of ``create_model(**hparams).state_dict()``, from the
    model built on the meta device (nothing allocated). What a file describing this model may
    hold, before the file's own sizes are believed."""
    return state_specs(meta_model(hparams))


def state_specs(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shape and dtype of every tensor of ``model.state_dict()``."""
    return {key: (tuple(t.shape), t.dtype) for key, t in model.state_dict().items()}


def state_bytes(specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> int:
    """Bytes of the tensors :func:`tensor_specs` describes."""
    return sum(math.prod(shape) * dtype.itemsize for shape, dtype in specs.values())


def check_stored_model(
    hparams: Any, input_size: Any = None, batch_size: int = 1
) -> tuple[dict[str, Any], tuple[int, int, int] | None]:
    """The model a file describes, checked before anything of it is built or decoded.

    ``hparams`` (a file's record: a dict naming a registered model, with its keyword arguments)
    and ``input_size`` (its data set's ``[channels, height, width]``, or None) are checked for
    type, then :func:`check_memory` refuses what this machine cannot hold, at that input size
    and ``batch_size``. Returns them as (dict, tuple); InvalidArgumentError names the first
    thing wrong.
    """
    if not isinstance(hparams, Mapping) or not isinstance(hparams.get("name"), str):
        raise InvalidArgumentError(
            f"hparams={_short(hparams)} is not allowed; use a dict naming its model (name=...)"
        )
    if "weights" in hparams:  # create_model(weights=PATH) would open whatever the file names
        raise InvalidArgumentError(
            f"hparams.weights={_short(hparams['weights'])} names a file to load; lightnets never "
            "opens a path that a file names: pass weights on the command line (--weights FILE)"
        )
    declared = get_model_entry(hparams["name"]).hparams
    unknown = [k for k in hparams if k not in ("name", "num_classes", "variant", *declared)]
    if unknown:
        raise InvalidArgumentError(
            f"hparams.{unknown[0]} is not a hyperparameter of {hparams['name']}; allowed: "
            f"num_classes, variant, {', '.join(declared)}"
        )
    size = None if input_size is None else _checked_size(input_size)
    check_memory(hparams, size, batch_size)
    return dict(hparams), size


def check_input_memory(input_size: Any, batch_size: int = 1) -> tuple[int, int, int]:
    """A batch of float32 inputs of ``input_size`` must fit in the memory available: the check
    left when no model is known (a foreign exported file). Returns the size as a tuple."""
    size = _checked_size(input_size)
    needed = BYTES_PER_ELEMENT * batch_size * math.prod(size)
    available, total = available_memory()
    if needed > available:
        c, h, w = size
        raise InvalidArgumentError(
            f"a batch of {batch_size} {c}x{h}x{w} inputs needs {format_bytes(needed)}; this "
            f"machine has {format_bytes(total)} of memory, {format_bytes(available)} available"
        )
    return size


def _checked_size(input_size: Any) -> tuple[int, int, int]:
    if (
        not isinstance(input_size, (list, tuple))
        or len(input_size) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in input_size)
    ):
        raise InvalidArgumentError(
            f"input_size={_short(input_size)} is not allowed; use [channels, height, width], "
            "positive integers"
        )
    return (input_size[0], input_size[1], input_size[2])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
