"""Exported files (ONNX, OpenVINO IR, TorchScript, pt2, ExecuTorch, LiteRT; fp32 or int8) as
models, in their runtime.

``lightnets predict`` and ``lightnets bench`` accept such a file where they accept a
checkpoint: :func:`open_exported` recognises it by content (:mod:`lightnets.formats`), reads its
metadata (preprocessing, class names, hparams) and runs it in the runtime it was written for:
ONNX Runtime, OpenVINO (fp32 precision hint, so the answer is the checkpoint's),
``torch.jit.load``, and for the device formats the runtime their table names
(:mod:`lightnets.deploy.device_formats`). Before its runtime sees it, a format that runs code
the file carries (TorchScript, .pt2) is refused unless ``trust_code=True``
(:func:`lightnets.formats.check_trusted`), and so is a .pte or .tflite naming an operator
outside the allowlist. A Core ML package runs only on Apple platforms. A file the runtime
itself refuses (a custom operator, external data outside the model's folder) or whose weights
are not finite is a one-line :class:`~lightnets.errors.CheckpointError`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightnets.analysis.threads import default_threads
from lightnets.deploy.metadata import read_metadata
from lightnets.deploy.openvino_runtime import compile_model, latency_config
from lightnets.errors import CheckpointError, LightnetsError, first_line, require
from lightnets.formats import FORMATS, check_trusted, identify, misnamed

__all__ = ["ExportedModel", "open_exported"]


Runner = Callable[[np.ndarray], np.ndarray]


def _refused(path: Path, runtime: str, exc: BaseException) -> CheckpointError:
    """A runtime's own refusal of a file (or failure to run it) as one line naming the file."""
    return CheckpointError(f"{path}: {runtime} refused it: {first_line(exc)}")


def _check_finite(path: Path, arrays: Any) -> None:
    """Refuse a file whose weights (``(name, array)`` pairs) hold NaN or infinity."""
    for name, array in arrays:
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise CheckpointError(
                f"{path}: weight {name} holds NaN or infinite values; its answers would be NaN "
                "(a diverged or damaged model)"
            )


def _onnx_runner(path: Path) -> tuple[Runner, list]:
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnx")
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    _check_finite(
        path,
        ((t.name, numpy_helper.to_array(t)) for t in graph.initializer if not t.external_data),
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = default_threads()
    try:  # ONNX Runtime's exceptions derive from Exception only: every refusal lands here
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise _refused(path, "ONNX Runtime", exc) from exc
    first = session.get_inputs()[0]

    def run(x: np.ndarray) -> np.ndarray:
        try:
            return session.run(None, {first.name: x})[0]
        except Exception as exc:
            raise _refused(path, "ONNX Runtime", exc) from exc

    return run, list(first.shape)


def _openvino_runner(path: Path) -> tuple[Runner, list]:
    from lightnets.deploy.openvino_runtime import read_model

    model = read_model(path)
    _check_finite(
        path,
        (
            (op.get_friendly_name(), op.get_data())
            for op in model.get_ops()
            if op.get_type_name() == "Constant"
        ),
    )
    compiled = compile_model(model, latency_config())
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

    def __init__(
        self,
        path: Path,
        format: str,
        metadata: dict[str, Any] | None,
        *,
        trust_code: bool = False,
    ) -> None:
        super().__init__()
        check_trusted(path, FORMATS[format], trust_code)  # before the runtime loads anything
        self.path, self.format, self.metadata = path, format, metadata
        self._run, runtime_shape = _runner(format, path)
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
            first = first_line(exc)
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


def open_exported(path: str | Path, *, trust_code: bool = False) -> ExportedModel | None:
    """The exported model at ``path``, or None when ``path`` is not an exported file.

    A recognised file is loaded in its runtime; a missing runtime is a one-line error naming
    the extra to install. A format that runs code the file carries (TorchScript, .pt2) is
    refused before it is loaded unless ``trust_code=True``: only for files you made or trust
    (:mod:`lightnets.formats`); so is a .pte or .tflite naming operators outside the allowlist
    (:func:`lightnets.deploy.device_formats.check_trusted`). A file named like a device format
    whose content is not that format is an error saying what the content should be.
    """
    from lightnets.deploy.device_formats import DEVICE_FORMATS
    from lightnets.deploy.device_formats import check_trusted as check_device_trusted

    path = Path(path)
    if not path.exists():
        return None
    fmt = identify(path)
    if fmt is None:
        wrong = misnamed(path)
        if wrong is not None:
            raise CheckpointError(wrong)
        return None
    if fmt.name in DEVICE_FORMATS:  # runs_code, then the runtime's operator allowlist
        check_device_trusted(path, fmt.name, trust_code=trust_code)
    else:
        check_trusted(path, fmt, trust_code)
    try:
        return ExportedModel(path, fmt.name, read_metadata(path), trust_code=trust_code)
    except LightnetsError:
        raise
    except Exception as exc:  # ONNX Runtime's and OpenVINO's refusals derive from Exception only
        raise CheckpointError(
            f"{path}: cannot load this {fmt.name} file: {first_line(exc)}"
        ) from exc
