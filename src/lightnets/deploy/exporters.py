"""Export to ONNX, TorchScript and OpenVINO IR, each verified in its own runtime before success.

Every exported file has a dynamic batch axis. After writing, the file is loaded back with the
runtime that will serve it (ONNX Runtime, ``torch.jit.load``, OpenVINO) and its outputs at batch
sizes 1 and 3 are compared with PyTorch's; only then is it moved into place (temp file + rename,
so an existing file at the destination is never half-overwritten).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightnets.deploy.fusion import fuse as fuse_batchnorm
from lightnets.deploy.openvino_runtime import compile_model
from lightnets.errors import InvalidArgumentError, LightnetsError, require
from lightnets.fileio import atomic_path, check_writable, commit

__all__ = [
    "FORMATS",
    "ExportResult",
    "ExportVerificationError",
    "export",
    "onnx_bytes",
    "openvino_model",
]

#: Export formats and the suffix of the file each writes.
FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "openvino": ".xml"}
ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
VERIFY_BATCH_SIZES = (1, 3)


class ExportVerificationError(LightnetsError):
    """The exported file, run in its own runtime, does not reproduce PyTorch's outputs."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and how closely the runtime reproduced PyTorch."""

    path: Path
    format: str
    files: tuple[Path, ...]
    size_mb: float
    max_abs_diff: float
    batch_sizes: tuple[int, ...]
    fused: bool


def tolerance(reference: torch.Tensor) -> float:
    """fp32 agreement threshold: 1e-4 of the output's scale (at least 1e-4 absolute)."""
    return 1e-4 * max(1.0, float(reference.abs().max()))


def onnx_bytes(model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool = True) -> bytes:
    """Serialise ``model`` to ONNX (opset 17) with input ``input`` and output ``logits``.

    Uses the TorchScript-based exporter: it is quick (about a second for these networks) and
    marks the batch axis dynamic directly. Where a future PyTorch drops it, falls back to the
    ``torch.export``-based exporter with a symbolic batch dimension.
    """
    model = model.eval()
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
            )
            return buffer.getvalue()
        except (TypeError, RuntimeError, NotImplementedError):
            buffer = io.BytesIO()
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=max(ONNX_OPSET, 18),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes,
        )
    program.save(buffer)
    return buffer.getvalue()


def openvino_model(
    model: nn.Module, example: torch.Tensor, *, static_shape: bool = False
):  # -> openvino.Model
    """Convert ``model`` to an ``openvino.Model`` (dynamic batch unless ``static_shape``)."""
    ov = require("openvino", "openvino")
    _, channels, height, width = example.shape
    shape = list(example.shape) if static_shape else [-1, channels, height, width]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = ov.convert_model(model.eval(), example_input=example, input=[shape])
    return converted


def _compare(
    run: Callable[[np.ndarray], np.ndarray], model: nn.Module, input_size: tuple[int, int, int]
) -> float:
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in VERIFY_BATCH_SIZES:
        x = torch.randn(batch, *input_size, generator=generator)
        with torch.inference_mode():
            reference = model(x)
        got = np.asarray(run(x.numpy()))
        if got.shape != tuple(reference.shape):
            raise ExportVerificationError(
                f"exported model returns shape {got.shape} at batch {batch}, "
                f"PyTorch {tuple(reference.shape)}"
            )
        diff = float(np.abs(got - reference.numpy()).max())
        if not diff <= tolerance(reference):
            raise ExportVerificationError(
                f"exported model disagrees with PyTorch at batch {batch}: max |diff| {diff:.3g}"
            )
        worst = max(worst, diff)
    return worst


def _export_onnx(model: nn.Module, example: torch.Tensor, temp: Path) -> Callable:
    require("onnx", "onnx")
    ort = require("onnxruntime", "onnx")
    temp.write_bytes(onnx_bytes(model, example, dynamic_batch=True))
    session = ort.InferenceSession(str(temp), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {INPUT_NAME: x})[0]


def _export_torchscript(model: nn.Module, example: torch.Tensor, temp: Path) -> Callable:
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        frozen = torch.jit.freeze(traced)
    frozen.save(str(temp))
    loaded = torch.jit.load(str(temp), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return loaded(torch.from_numpy(x)).numpy()

    return run


def export(
    model: nn.Module,
    path: str | Path,
    format: str,
    input_size: tuple[int, int, int],
    *,
    fuse: bool = True,
) -> ExportResult:
    """Export ``model`` to ``path`` in ``format`` (onnx, torchscript, openvino), verified.

    ``fuse`` folds BatchNorm into the convolutions first (:func:`lightnets.deploy.fuse`). For
    OpenVINO, ``path`` is the ``.xml`` file and its weights go to the ``.bin`` beside it; the
    weights stay float32 (OpenVINO's ``save_model`` would halve them to fp16 by default).
    """
    if format not in FORMATS:
        raise InvalidArgumentError(
            f"unknown export format {format!r}; allowed: {', '.join(FORMATS)}"
        )
    path = check_writable(path)
    if format == "openvino" and path.suffix != ".xml":
        raise InvalidArgumentError(f"OpenVINO IR is written as NAME.xml + NAME.bin; got {path}")
    model = model.eval()
    reference = model
    exported = fuse_batchnorm(model) if fuse else model
    example = torch.zeros(1, *input_size)
    if format == "openvino":
        ov = require("openvino", "openvino")
        bin_path = path.with_suffix(".bin")
        check_writable(bin_path)
        # The .bin is renamed into place first, the .xml last, when the block succeeds.
        with atomic_path(path, ".xml") as temp_xml:
            temp_bin = temp_xml.with_suffix(".bin")
            try:
                ov.save_model(
                    openvino_model(exported, example), str(temp_xml), compress_to_fp16=False
                )
                compiled = compile_model(str(temp_xml), {"INFERENCE_PRECISION_HINT": "f32"})
                diff = _compare(lambda x: compiled(x)[0], reference, input_size)
                del compiled
                commit(temp_bin, bin_path)
            finally:
                temp_bin.unlink(missing_ok=True)
        files: tuple[Path, ...] = (path, bin_path)
    else:
        writer = _export_onnx if format == "onnx" else _export_torchscript
        with atomic_path(path, FORMATS[format]) as temp:
            run = writer(exported, example, temp)
            diff = _compare(run, reference, input_size)
        files = (path,)
    size = sum(f.stat().st_size for f in files) / 1e6
    return ExportResult(path, format, files, size, diff, VERIFY_BATCH_SIZES, fuse)
