"""ExecuTorch: .pte programs with the XNNPACK delegate, written, inspected and run.

ExecuTorch is PyTorch's on-device runtime (Android, iOS, embedded Linux). A network becomes a
program in three steps, each an ExecuTorch API: ``torch.export.export`` captures the graph,
``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` hands every part XNNPACK
supports (convolutions, pooling, element-wise, int8 kernels) to that delegate, and
``to_executorch().buffer`` is the .pte file. It runs in ``executorch.runtime``, the same C++
runtime an app links (here through its Python bindings, with the XNNPACK backend registered).

- **Shape**: static, batch 1 for files (what an app runs; XNNPACK plans its memory for it), the
  benchmark's batch for ``bench``; a larger batch runs in pieces (:func:`fixed_batch`).
- **Metadata**: a constant method ``lightnets_metadata`` returning the JSON document (ExecuTorch's
  place for configuration in a program, as its LLM exports use it), added to the serialised
  program after lowering; :func:`read_metadata` reads it by parsing the file, without running it.
- **What a .pte may run**: its operators are resolved against the kernels compiled into the
  runtime and its delegate calls against registered backends; a program cannot bring code of
  its own. Before a file is loaded, :func:`unknown_operators` lists every operator and delegate
  it names outside what lightnets' exports use (ExecuTorch's aten kernels, its quantize /
  dequantize, dim-order and prim ops, the XNNPACK delegate); anything else is refused unless
  the user trusts the file (``--trust-code``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightnets.deploy.toolchains import fixed_batch, quiet, require_mobile
from lightnets.errors import CheckpointError, first_line
from lightnets.formats import PTE_IDENTIFIER, is_pte
from lightnets.jsonio import dumps

__all__ = [
    "ALLOWED_DELEGATES",
    "ALLOWED_NAMESPACES",
    "METADATA_METHOD",
    "attach_metadata",
    "is_pte",
    "lower",
    "read_metadata",
    "runner",
    "unknown_operators",
]

#: The FlatBuffer file identifier of an ExecuTorch program, at bytes 4-8.
IDENTIFIER = PTE_IDENTIFIER
METADATA_METHOD = "lightnets_metadata"
#: Operator namespaces whose ExecuTorch kernels are pure tensor computations (the portable aten
#: kernels, quantize/dequantize, memory-format copies, the runtime's scalar prims).
ALLOWED_NAMESPACES = frozenset({"aten", "quantized_decomposed", "dim_order_ops", "executorch_prim"})
ALLOWED_DELEGATES = frozenset({"XnnpackBackend"})

Runner = Callable[[np.ndarray], np.ndarray]


def lower(model: nn.Module, example: torch.Tensor) -> bytes:
    """``model`` (in eval mode) as an ExecuTorch program for inputs shaped like ``example``,
    XNNPACK-delegated."""
    exir = require_mobile("executorch.exir")
    xnnpack = require_mobile("executorch.backends.xnnpack.partition.xnnpack_partitioner")
    with quiet(), torch.no_grad():
        program = torch.export.export(model, (example,))
        edge = exir.to_edge_transform_and_lower(program, partitioner=[xnnpack.XnnpackPartitioner()])
        return bytes(edge.to_executorch().buffer)


def attach_metadata(data: bytes, meta: dict[str, Any]) -> bytes:
    """``data`` (a .pte) with ``meta`` as its constant method ``lightnets_metadata``.

    The method is emitted as ExecuTorch's own ``constant_methods`` are: an execution plan with no
    instructions whose one output is a string value. An earlier lightnets_metadata is replaced.
    """
    serialize = require_mobile("executorch.exir._serialize._program")
    schema = require_mobile("executorch.exir.schema")
    pytree = require_mobile("executorch.extension.pytree")
    text = dumps(meta)
    with quiet():
        pte = serialize.deserialize_pte_binary(data)
        plans = [p for p in pte.program.execution_plan if p.name != METADATA_METHOD]
        plans.append(
            schema.ExecutionPlan(
                name=METADATA_METHOD,
                values=[schema.EValue(schema.String(text))],
                inputs=[],
                outputs=[0],
                chains=[schema.Chain(inputs=[], outputs=[], instructions=[], stacktrace=None)],
                operators=[],
                delegates=[],
                non_const_buffer_sizes=[0],
                container_meta_type=schema.ContainerMetadata(
                    "", pytree.tree_flatten(text)[1].to_str()
                ),
            )
        )
        pte.program.execution_plan = plans
        return bytes(serialize.serialize_pte_binary(pte, extract_delegate_segments=True))


def _plans(data: bytes, where: str) -> list[Any]:
    """The program's execution plans, parsed in Python (ExecuTorch's own deserialiser: it
    reads the FlatBuffer into dataclasses and runs nothing)."""
    serialize = require_mobile("executorch.exir._serialize._program")
    if not is_pte(data[:8]):
        raise CheckpointError(f"{where}: not an ExecuTorch program (no 'ET12' at bytes 4-8)")
    try:
        with quiet():
            return list(serialize.deserialize_pte_binary(data).program.execution_plan)
    except Exception as exc:  # a malformed FlatBuffer fails anywhere in the reader
        raise CheckpointError(
            f"{where}: not a valid ExecuTorch program (truncated or corrupt: {first_line(exc)})"
        ) from exc


def unknown_operators(path: str | Path) -> list[str]:
    """Operators and delegates ``path`` names outside :data:`ALLOWED_NAMESPACES` and
    :data:`ALLOWED_DELEGATES` (an empty list: lightnets' own kind of program)."""
    found: set[str] = set()
    for plan in _plans(Path(path).read_bytes(), str(path)):
        for operator in plan.operators:
            if operator.name.split("::", 1)[0] not in ALLOWED_NAMESPACES:
                found.add(f"operator {operator.name}")
        for delegate in plan.delegates:
            if delegate.id not in ALLOWED_DELEGATES:
                found.add(f"delegate {delegate.id}")
    return sorted(found)


def read_metadata(path: str | Path) -> str | None:
    """The JSON text of ``path``'s ``lightnets_metadata`` method (None when it has none)."""
    for plan in _plans(Path(path).read_bytes(), str(path)):
        if plan.name == METADATA_METHOD and len(plan.values) == 1:
            value = plan.values[0].val
            return value.string_val if hasattr(value, "string_val") else None
    return None


def set_threads(threads: int | None) -> None:
    """Size ExecuTorch's thread pool (XNNPACK's threads); None leaves the runtime's default
    (one thread per core)."""
    if threads:
        runtime = require_mobile("executorch.runtime").Runtime.get()
        runtime._legacy_module._unsafe_reset_threadpool(int(threads))


def runner(data: bytes | Path, *, threads: int | None = None) -> tuple[Runner, list[int]]:
    """(run any batch, the program's input shape) for a program in ``data`` (bytes or a path).

    The program is verified by the runtime as it loads (its internal-consistency check); a
    file that does not load is a one-line :class:`CheckpointError`.
    """
    runtime_module = require_mobile("executorch.runtime")
    where = str(data) if isinstance(data, Path) else "ExecuTorch program"
    content = data.read_bytes() if isinstance(data, Path) else data
    try:
        with quiet():
            runtime = runtime_module.Runtime.get()
            set_threads(threads)
            program = runtime.load_program(content)
            method = program.load_method("forward")
            shape = [int(v) for v in method.metadata.input_tensor_meta(0).sizes()]
    except (RuntimeError, ValueError) as exc:
        first = first_line(exc)
        raise CheckpointError(f"{where}: ExecuTorch cannot load this program: {first}") from exc

    loaded = (program, method)  # the method needs its program alive

    def run(x: np.ndarray) -> np.ndarray:
        outputs = loaded[1].execute([torch.from_numpy(x)])
        return outputs[0].numpy().copy()  # the runtime reuses its output memory

    return fixed_batch(run, shape[0]), shape
