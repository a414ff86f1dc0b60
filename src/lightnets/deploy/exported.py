"""Exported files (ONNX, OpenVINO IR, TorchScript, pt2, ExecuTorch, LiteRT; fp32 or int8) as
models, in their runtime.

``lightnets predict`` and ``lightnets bench`` accept such a file where they accept a
checkpoint: :func:`open_exported` recognises it by content (:func:`~lightnets.deploy.metadata.
detect_format`), reads its metadata (preprocessing, class names, hparams) and runs it in the
runtime it was written for: ONNX Runtime, OpenVINO (fp32 precision hint, so the answer is the
checkpoint's), ``torch.jit.load``, and for the device formats the runtime their table names
(:mod:`lightnets.deploy.device_formats`), after its trust check: a .pt2 only with
``trust_code=True``, a .pte or .tflite only when it names no operator outside the allowlist
(or with ``trust_code=True``). A Core ML package runs only on Apple platforms.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightnets.deploy.metadata import detect_format, read_metadata
from lightnets.deploy.openvino_runtime import compile_model, latency_config, physical_cores
from lightnets.errors import CheckpointError, require

__all__ = ["ExportedModel", "open_exported"]


Runner = Callable[[np.ndarray], np.ndarray]


def _onnx_runner(path: Path) -> tuple[Runner, list]:
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = physical_cores()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    return (lambda x: session.run(None, {first.name: x})[0]), list(first.shape)


def _openvino_runner(path: Path) -> tuple[Runner, list]:
    compiled = compile_model(str(path), latency_config())
    shape = [d.get_length() if d.is_static else None for d in compiled.input(0).get_partial_shape()]
    return (lambda x: compiled(x)[0]), shape


def _torchscript_runner(path: Path) -> tuple[Runner, list]:
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run, []


_RUNNERS = {"onnx": _onnx_runner, "openvino": _openvino_runner, "torchscript": _torchscript_runner}


def _runner(format: str, path: Path) -> tuple[Runner, list]:
    if format in _RUNNERS:
        return _RUNNERS[format](path)
    from lightnets.deploy.device_formats import DEVICE_FORMATS

    load = DEVICE_FORMATS[format].load
    if load is None:  # Core ML
        raise CheckpointError(
            f"{path}: a Core ML package runs only in Core ML on Apple platforms; lightnets "
            "predict and bench run .pte, .tflite, .pt2, ONNX, OpenVINO and TorchScript files"
        )
    return load(path)


class ExportedModel(nn.Module):
    """An exported file behind the ``nn.Module`` call interface: ``model(x) -> logits``.

    Attributes: ``path``, ``format`` (:func:`~lightnets.deploy.metadata.detect_format`'s
    names), ``metadata`` (None for a file not written by lightnets), ``precision``,
    ``hparams``, ``name``, ``input_size``.
    """

    def __init__(self, path: Path, format: str, metadata: dict[str, Any] | None) -> None:
        super().__init__()
        self.path, self.format, self.metadata = path, format, metadata
        self._run, runtime_shape = _runner(format, path)
        meta = metadata or {}
        self.hparams: dict[str, Any] = dict(meta.get("model") or {})
        self.precision = str(meta.get("precision", "fp32"))
        self.name = str(self.hparams.get("name", path.name))
        shape = (meta.get("input") or {}).get("shape") or runtime_shape
        if len(shape) != 4 or not all(isinstance(v, int) for v in shape[1:]):
            shape = [None, 3, 224, 224]  # no metadata, dynamic sizes: the ImageNet default
        self.input_size: tuple[int, int, int] = tuple(int(v) for v in shape[1:])  # type: ignore[assignment]
        self.default_input_size = self.input_size

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self._run(np.ascontiguousarray(x.numpy()))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def reference_model(self) -> nn.Module:
        """The architecture the metadata names (untrained), e.g. for counting FLOPs."""
        from lightnets.models import create_model

        hparams = dict(self.hparams)
        return create_model(hparams.pop("name"), **hparams)


def open_exported(path: str | Path, *, trust_code: bool = False) -> ExportedModel | None:
    """The exported model at ``path``, or None when ``path`` is not an exported file.

    A recognised file is loaded in its runtime; a missing runtime is a one-line error naming
    the extra to install. A device-format file that may run code, or names operators outside
    the allowlist, is refused before loading unless ``trust_code``
    (:func:`lightnets.deploy.device_formats.check_trusted`). A file named like a device format
    whose content is not that format is an error saying what the content should be.
    """
    from lightnets.deploy.device_formats import DEVICE_FORMATS, check_trusted, expected_content

    path = Path(path)
    if not path.exists():
        return None
    kind = detect_format(path)
    if kind is None:
        wrong = expected_content(path)
        if wrong is not None:
            raise CheckpointError(wrong)
        return None
    if kind in DEVICE_FORMATS:
        check_trusted(path, kind, trust_code=trust_code)
    try:
        return ExportedModel(path, kind, read_metadata(path))
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{path}: cannot load this {kind} file: {first}") from exc
