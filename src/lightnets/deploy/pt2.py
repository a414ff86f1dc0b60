"""pt2: ``torch.export`` ExportedPrograms, PyTorch's successor to TorchScript.

``torch.export.export`` captures the network as an ATen graph with a dynamic batch axis;
``torch.export.save`` writes it as a zip archive (``<name>/archive_format`` reads ``pt2``) with
our metadata as the extra file ``lightnets.json``; ``torch.export.load(...).module()`` runs it.

**Loading a .pt2 runs code from the file.** In torch 2.13, ``torch.export.load`` unpickles any
weight, constant or sample input the archive marks as pickled (``torch.load(weights_only=False)``,
``pickle.loads``), parses symbolic shapes with ``sympy.sympify`` (which evaluates its string),
resolves each node's target by walking attributes from the ``torch`` module (so a node may
call any function reachable from it, file and process functions included), and may load a
compiled AOTInductor library. Checking the graph's operators before loading cannot close the
first three, so a .pt2 is loaded only when the user says they trust it (``--trust-code``,
``trust_code=True``); lightnets' own export verification loads the file it just wrote.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightnets.deploy.toolchains import quiet
from lightnets.errors import CheckpointError, first_line
from lightnets.formats import is_pt2
from lightnets.jsonio import dumps

__all__ = ["METADATA_FILE", "is_pt2", "read_metadata", "runner", "serialize"]

METADATA_FILE = "lightnets.json"
Runner = Callable[[np.ndarray], np.ndarray]


def serialize(model: nn.Module, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    """``model`` exported with a dynamic batch axis and saved, with ``meta``, as .pt2 bytes."""
    example = example.expand(2, *example.shape[1:]).contiguous()  # batch 1 would be specialised
    with quiet(), torch.no_grad():
        program = torch.export.export(
            model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
        )
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={METADATA_FILE: dumps(meta)})
    return buffer.getvalue()


def read_metadata(path: str | Path) -> str | None:
    """The ``extra/lightnets.json`` member of the archive (read as a zip: nothing is loaded)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(
                (n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_FILE}")), None
            )
            return archive.read(name).decode("utf-8") if name else None
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable .pt2 archive: {exc}") from exc


def runner(path: str | Path) -> tuple[Runner, list[Any]]:
    """(run, input shape with None for the dynamic batch) of the .pt2 at ``path``.

    Runs code from the file (module docstring): call it only for a trusted file.
    """
    try:
        with quiet():
            module = torch.export.load(str(path)).module()
    except Exception as exc:  # the loader fails in many ways on a file it cannot read
        first = first_line(exc)
        raise CheckpointError(f"{path}: torch.export cannot load this program: {first}") from exc

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run, []
