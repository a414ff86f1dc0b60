"""LiteRT (formerly TensorFlow Lite): .tflite models, written, inspected and run.

LiteRT is the runtime Android (and many embedded Linux boards) ship. ``litert_torch.convert``
turns a PyTorch network into a .tflite FlatBuffer; ``ai_edge_litert``'s ``Interpreter`` runs it
with the XNNPACK delegate, the CPU path an app gets by default.

- **Shape**: static, batch 1 for files, the benchmark's batch for ``bench``; a larger batch runs
  in pieces (:func:`~lightnets.deploy.toolchains.fixed_batch`). The input stays NCHW, as the
  PyTorch network takes it (the converter adds the transpose to NHWC inside the model).
- **int8**: PT2E with litert-torch's own quantizer (:mod:`lightnets.deploy.pt2e`), converted in
  its static mode: int8 kernels throughout, and int8 input and output tensors whose scale and
  zero point the model carries; the runner quantizes the input and dequantizes the logits.
- **Metadata**: an entry ``lightnets`` in the model's ``metadata`` table (the place TFLite
  keeps named byte buffers), written by re-packing the FlatBuffer with the schema's object API.
- **What a .tflite may run**: builtin operators are implemented inside the runtime; a custom
  operator (including TensorFlow "Flex" ops, which can read and write files) runs code
  registered by whoever built the interpreter, and external buffers make it read other files.
  :func:`unknown_operators` lists every custom operator, external buffer and builtin outside
  :data:`ALLOWED_BUILTINS` (pure tensor arithmetic: no control flow, variables or hash
  tables); such a file is refused unless the user trusts it (``--trust-code``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightnets.analysis.threads import default_threads
from lightnets.deploy.toolchains import fixed_batch, quiet, require_mobile
from lightnets.errors import CheckpointError, first_line
from lightnets.formats import TFLITE_IDENTIFIER, is_tflite
from lightnets.jsonio import dumps

__all__ = [
    "ALLOWED_BUILTINS",
    "METADATA_NAME",
    "attach_metadata",
    "convert",
    "is_tflite",
    "read_metadata",
    "runner",
    "unknown_operators",
]

#: The FlatBuffer file identifier of a TFLite model, at bytes 4-8.
IDENTIFIER = TFLITE_IDENTIFIER
METADATA_NAME = "lightnets"
#: Builtin operators that only compute on tensors (what the zoo's fp32 and int8 conversions use,
#: and the common arithmetic around them).
ALLOWED_BUILTINS = frozenset(
    (
        "ABS",
        "ADD",
        "AVERAGE_POOL_2D",
        "BATCH_MATMUL",
        "BROADCAST_TO",
        "CAST",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "DEQUANTIZE",
        "DIV",
        "EXP",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "GATHER",
        "GELU",
        "HARD_SWISH",
        "LEAKY_RELU",
        "LOGISTIC",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "NEG",
        "PACK",
        "PAD",
        "PADV2",
        "QUANTIZE",
        "REDUCE_MAX",
        "RELU",
        "RELU6",
        "RELU_0_TO_1",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPLIT",
        "SPLIT_V",
        "SQRT",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE",
        "UNPACK",
    )
)

Runner = Callable[[np.ndarray], np.ndarray]


def convert(model: nn.Module, example: torch.Tensor, *, quantizer: Any = None) -> bytes:
    """``model`` (in eval mode) as a .tflite for inputs shaped like ``example``.

    With ``quantizer`` (the one ``model`` was quantized with by
    :func:`~lightnets.deploy.pt2e.quantize_pt2e`, ``fold_quantize=False``), the converter's
    static int8 mode.
    """
    litert_torch = require_mobile("litert_torch")
    config = None
    if quantizer is not None:
        quant_config = require_mobile("litert_torch.quantize.quant_config")
        config = quant_config.QuantConfig(pt2e_quantizer=quantizer)
    with quiet(), torch.no_grad():
        litert_torch.config.show_progress = False
        converted = litert_torch.convert(model, (example,), quant_config=config)
        return bytes(converted.model_content())


def _schema():
    return require_mobile("ai_edge_litert.schema_py_generated")


def attach_metadata(data: bytes, meta: dict[str, Any]) -> bytes:
    """``data`` (a .tflite) with ``meta`` as its metadata entry ``lightnets`` (replacing one)."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    if any(getattr(b, "offset", 0) > 1 for b in model.buffers or []):
        raise CheckpointError("this .tflite keeps its weights outside the FlatBuffer (> 2 GB)")
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(dumps(meta).encode("utf-8"), dtype=np.uint8)
    model.buffers = [*(model.buffers or []), buffer]
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if _text(m.name) != METADATA_NAME]
    model.metadata = [*kept, entry]
    flatbuffers = require_mobile("flatbuffers")
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=IDENTIFIER)
    return bytes(builder.Output())


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _model(data: bytes, where: str) -> Any:  # the flatbuffer schema's Model
    if not is_tflite(data[:8]):
        raise CheckpointError(f"{where}: not a TFLite model (no 'TFL3' at bytes 4-8)")
    return _schema().Model.GetRootAs(data, 0)


def _invalid(where: str, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{where}: not a valid TFLite model (truncated or corrupt: {first_line(exc)})"
    )


def unknown_operators(path: str | Path) -> list[str]:
    """Custom operators, external buffers and builtins outside :data:`ALLOWED_BUILTINS` that
    ``path`` uses (an empty list: lightnets' own kind of model)."""
    data = Path(path).read_bytes()
    names = {v: k for k, v in vars(_schema().BuiltinOperator).items() if not k.startswith("_")}
    found: set[str] = set()
    try:
        model = _model(data, str(path))
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = code.CustomCode()
            if custom or names.get(builtin) == "CUSTOM":
                found.add(f"custom operator {_text(custom or b'?')}")
            elif names.get(builtin) not in ALLOWED_BUILTINS:
                found.add(f"operator {names.get(builtin, builtin)}")
        if model.ExternalBuffersLength() or model.ExternalBufferGroupsLength():
            found.add("external buffers (weights read from other files)")
    except CheckpointError:
        raise
    except Exception as exc:  # a malformed FlatBuffer fails anywhere in the reader
        raise _invalid(str(path), exc) from exc
    return sorted(found)


def read_metadata(path: str | Path) -> str | None:
    """The JSON text stored under ``lightnets`` in ``path``'s metadata (None when absent)."""
    data = Path(path).read_bytes()
    try:
        model = _model(data, str(path))
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _text(entry.Name()) == METADATA_NAME:
                buffer = model.Buffers(entry.Buffer())
                return buffer.DataAsNumpy().tobytes().decode("utf-8")
    except CheckpointError:
        raise
    except Exception as exc:
        raise _invalid(str(path), exc) from exc
    return None


def _io_conversions(interpreter: Any) -> tuple[Callable, Callable]:
    """Quantize the float input / dequantize the output where the model's tensors are int8."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def to_input(x: np.ndarray) -> np.ndarray:
        if inp["dtype"] == np.float32:
            return x
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(inp["dtype"])

    def from_output(y: np.ndarray) -> np.ndarray:
        if out["dtype"] == np.float32:
            return y.copy()
        scale, zero = out["quantization"]
        return (y.astype(np.float32) - zero) * np.float32(scale)

    return to_input, from_output


def runner(data: bytes | Path, *, threads: int | None = None) -> tuple[Runner, list[int]]:
    """(run any batch, the model's input shape) for a .tflite in ``data`` (bytes or a path),
    run by ``Interpreter`` with the XNNPACK delegate and ``threads`` (default:
    :func:`lightnets.analysis.threads.default_threads`).

    The interpreter verifies the FlatBuffer as it loads; one that does not load is a one-line
    :class:`CheckpointError`.
    """
    interpreter_module = require_mobile("ai_edge_litert.interpreter")
    where = str(data) if isinstance(data, Path) else "TFLite model"
    content = data.read_bytes() if isinstance(data, Path) else data
    try:
        with quiet():
            interpreter = interpreter_module.Interpreter(
                model_content=content, num_threads=threads or default_threads()
            )
            interpreter.allocate_tensors()
            interpreter.invoke()  # the delegate is applied now, not inside a timed call
    except (RuntimeError, ValueError) as exc:
        first = first_line(exc)
        raise CheckpointError(f"{where}: LiteRT cannot load this model: {first}") from exc
    to_input, from_output = _io_conversions(interpreter)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    shape = [int(v) for v in interpreter.get_input_details()[0]["shape"]]

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(input_index, to_input(x))
        interpreter.invoke()
        return from_output(interpreter.get_tensor(output_index))

    return fixed_batch(run, shape[0]), shape


def input_quantization(data: bytes) -> dict[str, Any] | None:
    """The input tensor's int8 scale and zero point (None for a float input)."""
    interpreter_module = require_mobile("ai_edge_litert.interpreter")
    with quiet():
        interpreter = interpreter_module.Interpreter(model_content=data)
    detail = interpreter.get_input_details()[0]
    if detail["dtype"] == np.float32:
        return None
    scale, zero = detail["quantization"]
    return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}
