"""Exported files (ONNX, OpenVINO IR, TorchScript; fp32 or int8) as models, in their runtime.

``lightnets predict`` and ``lightnets bench`` accept such a file where they accept a
checkpoint: :func:`open_exported` recognises it by content (:func:`~lightnets.deploy.metadata.
detect_format`), reads its metadata (preprocessing, class names, hparams) and runs it in the
runtime it was written for: ONNX Runtime, OpenVINO (fp32 precision hint, so the answer is the
checkpoint's), ``torch.jit.load``.
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
from lightnets.errors import CheckpointError, LightnetsError, require

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


class ExportedModel(nn.Module):
    """An exported file behind the ``nn.Module`` call interface: ``model(x) -> logits``.

    Attributes: ``path``, ``format`` (onnx, openvino, torchscript), ``metadata`` (None for a
    file not written by lightnets), ``precision``, ``hparams``, ``name``, ``input_size``.
    """

    def __init__(self, path: Path, format: str, metadata: dict[str, Any] | None) -> None:
        super().__init__()
        self.path, self.format, self.metadata = path, format, metadata
        self._run, runtime_shape = _RUNNERS[format](path)
        meta = metadata or {}
        model = meta.get("model")
        self.hparams: dict[str, Any] = dict(model) if isinstance(model, dict) else {}
        self.precision = str(meta.get("precision", "fp32"))
        self.name = str(self.hparams.get("name", path.name))
        declared = meta.get("input")
        shape = (declared.get("shape") if isinstance(declared, dict) else None) or runtime_shape
        if (
            not isinstance(shape, list)
            or len(shape) != 4
            or not all(type(v) is int and v >= 1 for v in shape[1:])
        ):
            shape = [None, 3, 224, 224]  # no metadata, dynamic sizes: the ImageNet default
        self.input_size: tuple[int, int, int] = tuple(int(v) for v in shape[1:])  # type: ignore[assignment]
        self.default_input_size = self.input_size

    def run(self, x: torch.Tensor) -> torch.Tensor:
        try:  # the runtime's own refusal of a malformed graph (its exceptions: Exception only)
            out = self._run(np.ascontiguousarray(x.numpy()))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CheckpointError(
                f"{self.path}: the {self.format} runtime failed: {first}"
            ) from exc
        return torch.from_numpy(np.asarray(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def reference_model(self) -> nn.Module:
        """The architecture the metadata names (untrained), e.g. for counting FLOPs."""
        from lightnets.models import create_model

        hparams = dict(self.hparams)
        return create_model(hparams.pop("name"), **hparams)


def open_exported(path: str | Path) -> ExportedModel | None:
    """The exported model at ``path``, or None when ``path`` is not an exported file.

    A file recognised as ONNX / OpenVINO IR / TorchScript is loaded in its runtime; a missing
    runtime is a one-line error naming the extra to install.
    """
    path = Path(path)
    if not path.is_file():
        return None
    kind = detect_format(path)
    if kind is None:
        return None
    try:
        return ExportedModel(path, kind, read_metadata(path))
    except LightnetsError:
        raise
    except Exception as exc:  # ONNX Runtime's and OpenVINO's refusals derive from Exception only
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{path}: cannot load this {kind} file: {first}") from exc
