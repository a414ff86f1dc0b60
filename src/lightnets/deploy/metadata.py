"""What every exported file carries so that it can be used without its checkpoint.

One JSON document under the key ``lightnets``, stored where each format keeps user metadata:
ONNX ``metadata_props``, OpenVINO ``rt_info`` (``<rt_info><lightnets><metadata value=...>``),
TorchScript ``_extra_files`` (``extra/lightnets.json`` in the archive), and for the device
formats the .pt2 extra file ``lightnets.json``, the .pte constant method
``lightnets_metadata``, the .tflite metadata entry ``lightnets`` and the Core ML package's
``user_defined_metadata["lightnets"]``. It holds the class
names, the input size, the preprocessing rule with its resize filter, mean/std and channel
order (:meth:`lightnets.deploy.prediction.Preprocessing.rule`), the model's hparams, the
numeric precision and the lightnets version. docs/deploy.md shows a 10-line ONNX Runtime
script that reproduces ``lightnets predict`` from it.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightnets.errors import (
    CheckpointError,
    InvalidArgumentError,
    LightnetsError,
    require,
)
from lightnets.fileio import open_regular
from lightnets.formats import identify
from lightnets.jsonio import dumps
from lightnets.stored import validate_metadata

__all__ = [
    "KEY",
    "attach_onnx",
    "attach_openvino",
    "build_metadata",
    "detect_format",
    "metadata_for",
    "read_metadata",
    "torchscript_extra_files",
    "validate_metadata",
]

KEY = "lightnets"
TORCHSCRIPT_FILE = "lightnets.json"
OPENVINO_PATH = [KEY, "metadata"]
FORMAT_VERSION = 1


def build_metadata(
    hparams: dict[str, Any],
    pre: Any,
    *,
    precision: str = "fp32",
    fused: bool = True,
    dataset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata document for a model with ``hparams`` preprocessed by ``pre``."""
    from lightnets.version import __version__

    data = {k: dataset[k] for k in ("name", "mean", "std") if k in dataset} if dataset else None
    return {
        "format_version": FORMAT_VERSION,
        "lightnets_version": __version__,
        "model": dict(hparams),
        "precision": precision,
        "batchnorm_folded": fused,
        "dataset": data,
        "classes": list(pre.classes) if pre.classes else None,
        "input": {"name": "input", "dtype": "float32", "shape": ["batch", *pre.input_size]},
        "output": {"name": "logits", "softmax": "not applied: apply it for probabilities"},
        "preprocessing": pre.rule(),
    }


def metadata_for(
    model: Any,
    state: dict[str, Any] | None,
    input_size: tuple[int, int, int],
    *,
    fused: bool = True,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The metadata of ``model`` loaded from checkpoint ``state`` (None: a bare zoo model,
    preprocessed as ``lightnets predict`` does it: ImageNet statistics, no class names)."""
    from lightnets.deploy.prediction import preprocessing_from_checkpoint

    pre = preprocessing_from_checkpoint(state, input_size)
    hparams = dict(getattr(model, "hparams", {}) or {})
    dataset = (state or {}).get("dataset")
    return build_metadata(
        hparams, pre, precision=precision, fused=fused, dataset=dataset if dataset else None
    )


def attach_onnx(data: bytes, meta: dict[str, Any]) -> bytes:
    """``data`` (a serialised ONNX model) with ``meta`` in its ``metadata_props``."""
    onnx = require("onnx", "onnx")
    model = onnx.load_from_string(data)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {KEY: dumps(meta)})
    return model.SerializeToString()


def attach_openvino(ov_model: Any, meta: dict[str, Any]) -> Any:
    """Store ``meta`` in ``ov_model``'s rt_info (kept by ``save_model``); returns the model."""
    ov_model.set_rt_info(dumps(meta), OPENVINO_PATH)
    return ov_model


def torchscript_extra_files(meta: dict[str, Any]) -> dict[str, str]:
    """The ``_extra_files`` argument of ``torch.jit.save`` that stores ``meta``."""
    return {TORCHSCRIPT_FILE: dumps(meta)}


def detect_format(path: str | Path) -> str | None:
    """``"onnx"``, ``"openvino"``, ``"torchscript"``, ``"pt2"``, ``"executorch"``,
    ``"litert"``, ``"coreml"`` (any format of :data:`lightnets.formats.FORMATS`) from the file's
    content (a Core ML package is a folder); else None. Nothing in the file is run to find out."""
    fmt = identify(path)
    return fmt.name if fmt is not None else None


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The lightnets metadata of an exported file (None when it has none)."""
    path = Path(path)
    kind = detect_format(path)
    if kind is None:
        raise InvalidArgumentError(
            f"{path}: not an exported model (ONNX, OpenVINO .xml, TorchScript, .pt2, .pte, "
            ".tflite or .mlpackage)"
        )
    text = _reader(kind)(path)
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{path}: its lightnets metadata is not valid JSON") from exc
    try:
        validate_metadata(meta)
    except LightnetsError as exc:
        raise CheckpointError(f"{path}: its lightnets metadata is malformed: {exc}") from exc
    return meta


def _read_onnx(path: Path) -> str | None:
    onnx = require("onnx", "onnx")
    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == KEY), None)


def _read_openvino(path: Path) -> str | None:
    from lightnets.deploy.openvino_runtime import read_model

    model = read_model(path)
    return (
        model.get_rt_info(OPENVINO_PATH).astype(str) if model.has_rt_info(OPENVINO_PATH) else None
    )


def _read_torchscript(path: Path) -> str | None:
    # The archive is read as a zip: torch.jit.load (which would run its code) is not called.
    with open_regular(path) as handle, zipfile.ZipFile(handle) as archive:
        name = next(
            (n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_FILE}")), None
        )
        return archive.read(name).decode("utf-8") if name else None


_READERS = {"onnx": _read_onnx, "openvino": _read_openvino, "torchscript": _read_torchscript}


def _reader(kind: str) -> Callable[[Path], str | None]:
    if kind in _READERS:
        return _READERS[kind]
    from lightnets.deploy.device_formats import DEVICE_FORMATS

    return DEVICE_FORMATS[kind].read_metadata
