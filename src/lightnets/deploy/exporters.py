"""Export to ONNX, TorchScript, OpenVINO IR and the device formats, each verified before success.

Server formats (ONNX, OpenVINO, TorchScript) and pt2 have a dynamic batch axis; the mobile
formats (ExecuTorch .pte, LiteRT .tflite, Core ML .mlpackage) take one image per call, as an app
runs them. Every file carries its metadata (class names, preprocessing, hparams:
:mod:`lightnets.deploy.metadata`). After writing, the file is loaded back with the runtime that
will serve it (ONNX Runtime, ``torch.jit.load``, OpenVINO, ``torch.export.load``,
``executorch.runtime``, ``ai_edge_litert``) and its outputs at batch sizes 1 and 3 are compared
with PyTorch's (:mod:`lightnets.deploy.accuracy`'s fp32 rule); a Core ML package's
specification is checked instead, and on macOS its outputs too (Core ML runs only there). Only
then is it moved into place (temp file + rename, so an existing file at the destination is
never half-overwritten). A failed write (full disk) removes the temporary files and is a
one-line :class:`~lightnets.errors.SaveError`.

TorchScript is kept, but PyTorch deprecates it (``torch.jit.save`` warns): ``pt2`` is its
PyTorch-native successor and ``executorch`` its successor on devices (:data:`TORCHSCRIPT_NOTE`).
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightnets.deploy import coreml, executorch_runtime, litert_runtime, pt2
from lightnets.deploy import metadata as md
from lightnets.deploy.accuracy import max_abs_diff, tolerance
from lightnets.deploy.fusion import fuse as fuse_batchnorm
from lightnets.deploy.openvino_runtime import compile_model, save_ir
from lightnets.errors import InvalidArgumentError, LightnetsError, require
from lightnets.fileio import atomic_path, check_writable, saving
from lightnets.logging_state import kept_logging

__all__ = [
    "FORMATS",
    "ExportResult",
    "ExportVerificationError",
    "export",
    "exported_onnx_bytes",
    "onnx_bytes",
    "openvino_model",
    "write_bytes",
]

ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
VERIFY_BATCH_SIZES = (1, 3)
TORCHSCRIPT_NOTE = (
    "PyTorch deprecates TorchScript (torch.jit.save warns); --format pt2 (torch.export) "
    "replaces it, and --format executorch on devices"
)


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
    metadata: dict[str, Any] | None = None
    #: A line for the user: the deprecation of TorchScript, or how a Core ML package was
    #: verified (``max_abs_diff`` is NaN and ``batch_sizes`` empty when it was not run).
    note: str = ""


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
            # The TorchScript-based exporter writes to a file object too (typed as a path only).
            torch.onnx.export(
                model,
                (example,),
                buffer,  # type: ignore[arg-type]
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
            )
            return buffer.getvalue()
        except (TypeError, RuntimeError, NotImplementedError):
            pass
    return exported_onnx_bytes(model, example, dynamic_batch=dynamic_batch)


def exported_onnx_bytes(
    model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool = True
) -> bytes:
    """Serialise ``model`` to ONNX (opset 18) through the ``torch.export``-based exporter.

    The one that takes an int8 network converted by PT2E (``convert_pt2e``): its quantize and
    dequantize ops become QuantizeLinear/DequantizeLinear (QDQ ONNX), int8 weights stored as
    int8. Input ``input``, output ``logits``, batch axis symbolic unless ``dynamic_batch`` is
    False.
    """
    buffer = io.BytesIO()
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        kept_logging(quiet=("torch.onnx",)),  # "torchvision is not installed. Skipping ..."
    ):
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
    if program is None:  # dynamo=True always returns the program
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    program.save(buffer)  # type: ignore[arg-type]  # onnx.save takes a file object as well
    return buffer.getvalue()


def openvino_model(
    model: nn.Module, example: torch.Tensor, *, static_shape: bool = False
) -> Any:  # an openvino.Model
    """Convert ``model`` to an ``openvino.Model`` (dynamic batch unless ``static_shape``)."""
    ov = require("openvino", "openvino")
    _, channels, height, width = example.shape
    shape = list(example.shape) if static_shape else [-1, channels, height, width]
    # convert_model leaves the root logger at ERROR when it fails: kept_logging undoes that.
    with warnings.catch_warnings(), kept_logging():
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
        diff = max_abs_diff(reference, got)
        if not diff <= tolerance(reference, "fp32"):
            raise ExportVerificationError(
                f"exported model disagrees with PyTorch at batch {batch}: max |diff| {diff:.3g}"
            )
        worst = max(worst, diff)
    return worst


def write_bytes(temp: Path, data: bytes, final: Path) -> None:
    """Write ``data`` to ``temp``; a failed write (full disk) is a one-line SaveError."""
    with saving(final):
        temp.write_bytes(data)


Verify = Callable[[Callable[[np.ndarray], np.ndarray]], float]
#: What a writer returns: the files it wrote and the largest output difference (NaN: not run).
Written = tuple[tuple[Path, ...], float]
#: A format's writer: (model, example input, path, metadata, verify) -> what it wrote.
Writer = Callable[[nn.Module, torch.Tensor, Path, dict[str, Any], Verify], Written]


def _save_onnx(
    model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any], verify: Verify
) -> Written:
    require("onnx", "onnx")
    ort = require("onnxruntime", "onnx")
    data = md.attach_onnx(onnx_bytes(model, example, dynamic_batch=True), meta)
    with atomic_path(path, ".onnx") as temp:
        write_bytes(temp, data, path)
        session = ort.InferenceSession(str(temp), providers=["CPUExecutionProvider"])
        diff = verify(lambda x: session.run(None, {INPUT_NAME: x})[0])
    return (path,), diff


def _save_torchscript(
    model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any], verify: Verify
) -> Written:
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
    buffer = io.BytesIO()  # serialise in memory: PyTorch's own writer aborts on a full disk
    torch.jit.save(frozen, buffer, _extra_files=md.torchscript_extra_files(meta))
    with atomic_path(path, ".pt") as temp:
        write_bytes(temp, buffer.getvalue(), path)
        loaded = torch.jit.load(str(temp), map_location="cpu")

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return loaded(torch.from_numpy(x)).numpy()

        diff = verify(run)
    return (path,), diff


def _save_openvino(
    model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any], verify: Verify
) -> Written:
    if path.suffix != ".xml":
        raise InvalidArgumentError(f"OpenVINO IR is written as NAME.xml + NAME.bin; got {path}")
    check_writable(path.with_suffix(".bin"))
    ov_model = md.attach_openvino(openvino_model(model, example), meta)
    diffs: list[float] = []

    def check(temp_xml: Path) -> None:
        compiled = compile_model(str(temp_xml), {"INFERENCE_PRECISION_HINT": "f32"})
        diffs.append(verify(lambda x: compiled(x)[0]))

    return save_ir(ov_model, path, check=check), diffs[0]


def _save_pt2(
    model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any], verify: Verify
) -> Written:
    data = pt2.serialize(model, example, meta)
    with atomic_path(path, ".pt2") as temp:
        write_bytes(temp, data, path)
        run, _ = pt2.runner(temp)  # the file lightnets just wrote: trusted
        diff = verify(run)
    return (path,), diff


def _save_program(
    lower: Callable[[nn.Module, torch.Tensor], bytes],
    attach: Callable[[bytes, dict[str, Any]], bytes],
    runner: Callable[[Path], tuple[Callable[[np.ndarray], np.ndarray], list[int]]],
    suffix: str,
) -> Writer:
    """The writer of a fixed-batch device program: lower, attach metadata, verify, rename."""

    def save(
        model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any], verify: Verify
    ) -> Written:
        data = attach(lower(model, example), meta)
        with atomic_path(path, suffix) as temp:
            write_bytes(temp, data, path)
            run, _ = runner(temp)
            diff = verify(run)
        return (path,), diff

    return save


_save_executorch = _save_program(
    executorch_runtime.lower, executorch_runtime.attach_metadata, executorch_runtime.runner, ".pte"
)
_save_litert = _save_program(
    litert_runtime.convert, litert_runtime.attach_metadata, litert_runtime.runner, ".tflite"
)


def _save_coreml(
    model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any], verify: Verify
) -> Written:
    """Core ML: the package's spec is checked (and on macOS its outputs); see coreml."""
    coreml.check_suffix(path)
    channels, height, width = (int(v) for v in example.shape[1:])
    size = (channels, height, width)
    converted = coreml.convert(model, size, meta)
    diffs: list[float] = []

    def check(temp: Path) -> None:
        diffs.append(verify_coreml(temp, converted, size, meta))

    coreml.save_package(converted.mlmodel, path, check=check)
    return (path,), diffs[0]


def verify_coreml(
    temp: Path, converted: Any, size: tuple[int, int, int], meta: dict[str, Any]
) -> float:
    """Spec check (everywhere) and, on macOS, Core ML's logits against PyTorch's (else NaN)."""
    problems = coreml.check_spec(temp, converted, size, meta)
    if problems:
        raise ExportVerificationError(f"the Core ML package declares {'; '.join(problems)}")
    if not coreml.on_darwin():
        return math.nan
    got, want = coreml.run_on_darwin(temp, converted.module, converted.normalisation, size)
    diff = max_abs_diff(want, got)
    if not diff <= tolerance(want, "fp32"):
        raise ExportVerificationError(f"Core ML disagrees with PyTorch: max |diff| {diff:.3g}")
    return diff


#: Export formats: the suffix of the file each writes, and its writer.
FORMATS = {
    "onnx": ".onnx",
    "torchscript": ".pt",
    "openvino": ".xml",
    "pt2": ".pt2",
    "executorch": ".pte",
    "litert": ".tflite",
    "coreml": ".mlpackage",
}
_WRITERS = {
    "onnx": _save_onnx,
    "torchscript": _save_torchscript,
    "openvino": _save_openvino,
    "pt2": _save_pt2,
    "executorch": _save_executorch,
    "litert": _save_litert,
    "coreml": _save_coreml,
}
#: Formats that take one image per call (an app's batch): their metadata says batch 1.
FIXED_BATCH = ("executorch", "litert", "coreml")


def format_metadata(
    format: str, meta: dict[str, Any], input_size: tuple[int, int, int]
) -> dict[str, Any]:
    """``meta`` with the input as ``format`` takes it: batch 1 for the mobile formats, and for
    Core ML the image and the normalisation its ImageType applies."""
    if format not in FIXED_BATCH:
        return meta
    meta = {**meta, "input": {**meta["input"], "shape": [1, *input_size]}}
    if format == "coreml":
        norm = coreml.ImageNormalisation.from_metadata(meta)
        channels = 1 if norm.gray else 3
        meta["input"] = {
            "name": coreml.INPUT_NAME,
            "type": "image",
            "color_layout": "GRAYSCALE" if norm.gray else "RGB",
            "shape": [1, channels, *input_size[1:]],
            "image_scale": norm.scale,
            "image_bias": norm.bias,
            "per_channel_scale_in_model": norm.channel_scale,
            "feeds": "the picture after crop and pad, at the input size; Core ML normalises it",
        }
    return meta


def size_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def export(
    model: nn.Module,
    path: str | Path,
    format: str,
    input_size: tuple[int, int, int],
    *,
    fuse: bool = True,
    metadata: dict[str, Any] | None = None,
) -> ExportResult:
    """Export ``model`` to ``path`` in ``format`` (:data:`FORMATS`), verified.

    ``fuse`` folds BatchNorm into the convolutions first (:func:`lightnets.deploy.fuse`). For
    OpenVINO, ``path`` is the ``.xml`` file and its weights go to the ``.bin`` beside it; the
    weights stay float32 (OpenVINO's ``save_model`` would halve them to fp16 by default). A
    Core ML ``path`` is a ``.mlpackage`` folder. ``metadata``
    (:func:`lightnets.deploy.metadata.build_metadata`; by default that of a bare model,
    :func:`~lightnets.deploy.metadata.metadata_for`) is stored in the file.
    """
    if format not in FORMATS:
        raise InvalidArgumentError(
            f"unknown export format {format!r}; allowed: {', '.join(FORMATS)}"
        )
    path = coreml.check_writable_package(path) if format == "coreml" else check_writable(path)
    model = model.eval()
    if metadata is None:
        metadata = md.metadata_for(model, None, input_size, fused=fuse)
    metadata = format_metadata(format, metadata, input_size)
    exported = fuse_batchnorm(model) if fuse else model
    example = torch.zeros(1, *input_size)
    files, diff = _WRITERS[format](
        exported, example, path, metadata, lambda run: _compare(run, model, input_size)
    )
    size = sum(size_bytes(f) for f in files) / 1e6
    run = not math.isnan(diff)
    note = TORCHSCRIPT_NOTE if format == "torchscript" else ""
    batch_sizes: tuple[int, ...] = VERIFY_BATCH_SIZES if run else ()
    if format == "coreml":  # on macOS: three images, one per call
        note = coreml.VERIFIED_NOTE if run else coreml.SPEC_ONLY_NOTE
        batch_sizes = (1,) if run else ()
    return ExportResult(
        path,
        format,
        tuple(files),
        size,
        diff,
        batch_sizes,
        fuse,
        metadata,
        note,
    )
