"""Core ML: ML Program packages (.mlpackage) for iPhone, iPad and Mac, converted on any OS.

``coremltools.convert`` turns the ``torch.export`` program into an ML Program (minimum target
iOS 16, compute precision float32 so that outputs can equal PyTorch's; Core ML's default,
float16, moves logits by ~1e-3). The input is a ``ct.ImageType``: the app hands Core ML the
picture (after the crop, and for Fashion-MNIST the 2-pixel zero padding, at the model's input
size) and Core ML normalises it as ``scale * pixel + bias`` per channel. Our ``(pixel / 255 -
mean) / std`` folds into that exactly when every channel has the same std (grayscale data sets);
ImageType has one scale for all channels, so with per-channel std (ImageNet, CIFAR) it applies
``pixel / 255 - mean`` and a per-channel multiply by ``1 / std`` is the model's first operation
(:class:`PixelInput`, which also repeats a grayscale image to the network's three channels).

Core ML runs only on Apple platforms. On Linux an export is verified by its specification
(input image type, size and colour space, output shape, our metadata in
``user_defined_metadata``); on macOS the package is also run by Core ML and its logits compared
with PyTorch's. int8 is coremltools' own weight compression (``linear_quantize_weights``:
symmetric, per output channel); its accuracy is measured with the package's own int8 weights,
read back from the compressed program and run in PyTorch (weights dequantize to float32 in
Core ML too), and on macOS in Core ML itself.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightnets.deploy.toolchains import quiet, require_mobile
from lightnets.errors import CheckpointError, InvalidArgumentError, LightnetsError
from lightnets.formats import MLPACKAGE_FILES, is_mlpackage
from lightnets.jsonio import dumps

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "SUFFIX",
    "Converted",
    "PixelInput",
    "convert",
    "int8_weights_model",
    "is_mlpackage",
    "on_darwin",
    "quantize_weights",
    "read_metadata",
    "save_package",
    "spec_summary",
]

SUFFIX = ".mlpackage"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
METADATA_KEY = "lightnets"
_SPEC_FILE = Path(MLPACKAGE_FILES[1])


SPEC_ONLY_NOTE = (
    "verified its specification (image input, size, colour space, output shape, metadata); "
    "numerical verification needs macOS: Core ML runs only there"
)
VERIFIED_NOTE = "verified its specification, and its outputs in Core ML (macOS)"


class CoreMLError(LightnetsError):
    """A Core ML package could not be written, read or checked."""


def check_suffix(path: Path) -> None:
    """Core ML packages are ``NAME.mlpackage``; anything else is refused before work starts."""
    if Path(path).suffix != SUFFIX:
        raise InvalidArgumentError(
            f"Core ML is written as an ML Program package, NAME{SUFFIX}; got {path} "
            "(.mlmodel, the older neural-network format, is not supported)"
        )


def check_writable_package(path: str | Path) -> Path:
    """:func:`lightnets.fileio.check_writable` for a package folder (it may already exist)."""
    from lightnets.fileio import check_writable

    path = Path(path)
    check_suffix(path)
    if path.exists() and not is_mlpackage(path):
        raise InvalidArgumentError(f"cannot write {str(path)!r}: it exists and is not a package")
    check_writable(path.parent / f".{path.name}.probe")
    if path.exists() and not os.access(path, os.W_OK):
        raise InvalidArgumentError(f"cannot write {str(path)!r}: the package is read-only")
    return path


def on_darwin() -> bool:
    """Core ML predictions run only on macOS."""
    return sys.platform == "darwin"


class PixelInput(nn.Module):
    """The network as Core ML feeds it: ``ImageType`` has applied ``scale * pixel + bias``.

    Multiplies channel c by ``channel_scale[c]`` when the std could not be folded into the
    ImageType (one scale for every channel), and repeats a grayscale image to three channels.
    """

    channel_scale: torch.Tensor | None

    def __init__(self, model: nn.Module, channel_scale: list[float] | None, gray: bool) -> None:
        super().__init__()
        self.model = model
        self.gray = gray
        scale = torch.tensor(channel_scale or [1.0]).view(1, -1, 1, 1)
        self.register_buffer("channel_scale", scale if channel_scale else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_scale is not None:
            x = x * self.channel_scale
        if self.gray:
            x = torch.cat([x, x, x], dim=1)
        return self.model(x)


@dataclass(frozen=True)
class ImageNormalisation:
    """What ``ct.ImageType`` applies (``scale * pixel + bias``) and what the model still does."""

    gray: bool
    scale: float
    bias: list[float]
    channel_scale: list[float] | None  # per channel, inside the model; None: all folded

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ImageNormalisation:
        rule = meta["preprocessing"]
        mean, std = [float(v) for v in rule["mean"]], [float(v) for v in rule["std"]]
        gray = rule["mode"] == "L"
        if len(set(std)) == 1:
            return cls(gray, 1 / (255 * std[0]), [-m / std[0] for m in mean], None)
        return cls(gray, 1 / 255, [-m for m in mean], [1 / s for s in std])

    def from_normalised(self, x: torch.Tensor) -> torch.Tensor:
        """What ImageType hands the model for an image lightnets normalised to ``x``
        (N, 3, H, W): the first channel of a grayscale image, times std where not folded."""
        if self.gray:
            x = x[:, :1]
        if self.channel_scale is not None:
            x = x / torch.tensor(self.channel_scale, dtype=x.dtype).view(1, -1, 1, 1)
        return x

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """What Core ML computes from uint8 pixels (N, C, H, W) before the model."""
        bias = torch.tensor(self.bias, dtype=torch.float32).view(1, -1, 1, 1)
        return pixels.float() * self.scale + bias


@dataclass
class Converted:
    """A converted package and what it came from: the PyTorch module Core ML computes (pixels
    normalised by ImageType in, logits out) and its parameter names in the program."""

    mlmodel: Any
    module: nn.Module
    normalisation: ImageNormalisation
    parameter_names: dict[str, str]  # program input name -> module parameter name


def convert(model: nn.Module, input_size: tuple[int, int, int], meta: dict[str, Any]) -> Converted:
    """``model`` (eval mode) as an ML Program taking the image ``meta``'s preprocessing
    describes (:class:`ImageNormalisation`)."""
    ct = require_mobile("coremltools")
    norm = ImageNormalisation.from_metadata(meta)
    module = PixelInput(model.eval(), norm.channel_scale, norm.gray).eval()
    channels = 1 if norm.gray else 3
    _, height, width = input_size
    example = torch.zeros(1, channels, height, width)
    image = ct.ImageType(
        name=INPUT_NAME,
        shape=tuple(example.shape),
        scale=norm.scale,
        bias=norm.bias[0] if norm.gray else norm.bias,
        color_layout=ct.colorlayout.GRAYSCALE if norm.gray else ct.colorlayout.RGB,
    )
    with quiet(), torch.no_grad():
        program = torch.export.export(module, (example,)).run_decompositions({})
        mlmodel = ct.convert(
            program,
            inputs=[image],
            outputs=[ct.TensorType(name=OUTPUT_NAME)],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS16,
        )
    names = dict(program.graph_signature.inputs_to_parameters)
    set_metadata(mlmodel, meta)
    return Converted(mlmodel, module, norm, names)


def set_metadata(mlmodel: Any, meta: dict[str, Any]) -> None:
    """Store ``meta`` under ``lightnets`` in the package's user-defined metadata."""
    mlmodel.user_defined_metadata[METADATA_KEY] = dumps(meta)
    mlmodel.short_description = f"lightnets {meta.get('model', {}).get('name', 'model')}"


def quantize_weights(mlmodel: Any) -> Any:
    """coremltools' int8 weight compression: symmetric, one scale per output channel."""
    optimize = require_mobile("coremltools.optimize.coreml")
    config = optimize.OptimizationConfig(
        global_config=optimize.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
        )
    )
    with quiet():
        quantized = optimize.linear_quantize_weights(mlmodel, config=config)
    quantized.user_defined_metadata[METADATA_KEY] = mlmodel.user_defined_metadata[METADATA_KEY]
    return quantized


def int8_weights_model(converted: Converted, quantized: Any) -> tuple[nn.Module, int]:
    """(a copy of the PyTorch module carrying the package's dequantized int8 weights, how many
    weight tensors were quantized), read from ``quantized``'s program (its
    ``constexpr_affine_dequantize`` operations: ``(q - zero_point) * scale`` along ``axis``)."""
    import copy

    program = getattr(quantized, "_mil_program", None)
    if program is None:
        raise CoreMLError("coremltools did not keep the compressed program to read weights from")
    state = copy.deepcopy(converted.module).eval()
    params = dict(state.named_parameters())
    count = 0
    for op in program.functions["main"].operations:
        if op.op_type != "constexpr_affine_dequantize":
            continue
        source = op.name.removesuffix("_quantized")
        target = converted.parameter_names.get(source)
        if target is None or target not in params:
            raise CoreMLError(f"compressed weight {op.name} matches no parameter of the network")
        data = np.asarray(op.quantized_data.val, dtype=np.float32)
        axis = int(op.axis.val)
        shape = [1] * data.ndim
        shape[axis] = -1
        zero = np.asarray(op.zero_point.val, dtype=np.float32).reshape(shape)
        scale = np.asarray(op.scale.val, dtype=np.float32).reshape(shape)
        with torch.no_grad():
            params[target].copy_(torch.from_numpy((data - zero) * scale))
        count += 1
    return state, count


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            with open(Path(root, name), "rb") as handle:
                os.fsync(handle.fileno())


def save_package(mlmodel: Any, path: Path, check: Callable[[Path], object] | None = None) -> Path:
    """Write ``mlmodel`` to ``path`` (.mlpackage, a folder) so that nothing is half-written.

    The package is written into a temporary folder beside ``path``, flushed, checked with
    ``check(temp_package)`` when given, and renamed into place; an existing package is first
    renamed aside and removed only once the new one is in place (restored if that fails).
    """
    check_suffix(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        temp = staging / path.name
        try:
            with quiet():
                mlmodel.save(str(temp))
            _fsync_tree(temp)
        except (OSError, RuntimeError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CoreMLError(f"cannot write {path}: {reason.strip()[:120]}") from exc
        if check is not None:
            check(temp)
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
        if path.exists():
            os.replace(path, aside)
        try:
            os.replace(temp, path)
        except OSError:
            if aside.exists():
                os.replace(aside, path)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _spec(path: Path) -> Any:
    ct = require_mobile("coremltools")
    if not is_mlpackage(path):
        raise CheckpointError(f"{path}: not a Core ML package (no Manifest.json and model spec)")
    try:
        with quiet():
            return ct.utils.load_spec(str(path))
    except Exception as exc:  # protobuf and coremltools fail in many ways on a damaged spec
        raise CheckpointError(f"{path}: not a readable Core ML package: {exc}") from exc


def spec_summary(path: str | Path) -> dict[str, Any]:
    """What the package's specification declares: input image, output shape, metadata."""
    spec = _spec(Path(path))
    ct = require_mobile("coremltools")
    color_spaces = ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace
    first_in, first_out = spec.description.input[0], spec.description.output[0]
    image = first_in.type.imageType if first_in.type.HasField("imageType") else None
    return {
        "input_name": first_in.name,
        "image": None
        if image is None
        else {
            "width": int(image.width),
            "height": int(image.height),
            "color_space": color_spaces.Name(image.colorSpace),
        },
        "output_name": first_out.name,
        "output_shape": [int(v) for v in first_out.type.multiArrayType.shape],
        "metadata": dict(spec.description.metadata.userDefined).get(METADATA_KEY),
        "spec_version": int(spec.specificationVersion),
    }


def read_metadata(path: str | Path) -> str | None:
    """The JSON text stored under ``lightnets`` in the package's user-defined metadata."""
    return spec_summary(path)["metadata"]


def expected_spec(
    converted: Converted, input_size: tuple[int, int, int], meta: dict[str, Any]
) -> dict[str, Any]:
    """The :func:`spec_summary` a correct export of ``converted`` has."""
    with torch.no_grad():
        channels = 1 if converted.normalisation.gray else 3
        logits = converted.module(torch.zeros(1, channels, *input_size[1:]))
    return {
        "input_name": INPUT_NAME,
        "image": {
            "width": int(input_size[2]),
            "height": int(input_size[1]),
            "color_space": "GRAYSCALE" if converted.normalisation.gray else "RGB",
        },
        "output_name": OUTPUT_NAME,
        "output_shape": list(logits.shape),
        "metadata": json.loads(dumps(meta)),
    }


def check_spec(
    path: Path, converted: Converted, input_size: tuple[int, int, int], meta: dict[str, Any]
) -> list[str]:
    """The differences between the written package's spec and what it must declare."""
    got = spec_summary(path)
    got["metadata"] = json.loads(got["metadata"]) if got["metadata"] else None
    want = expected_spec(converted, input_size, meta)
    return [
        f"{key}: {got.get(key)!r}, expected {value!r}"
        for key, value in want.items()
        if got.get(key) != value
    ]


def run_on_darwin(
    path: Path,
    module: nn.Module,
    norm: ImageNormalisation,
    size: tuple[int, int, int],
    count: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """(Core ML logits, PyTorch logits) for ``count`` random images, through Core ML (macOS)."""
    from PIL import Image

    ct = require_mobile("coremltools")
    with quiet():
        mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    generator = torch.Generator().manual_seed(0)
    channels = 1 if norm.gray else 3
    pixels = torch.randint(0, 256, (count, channels, *size[1:]), generator=generator)
    got = []
    for image in pixels:
        array = image.numpy().astype(np.uint8)
        picture = Image.fromarray(array[0] if norm.gray else array.transpose(1, 2, 0))
        got.append(np.asarray(mlmodel.predict({INPUT_NAME: picture})[OUTPUT_NAME]).reshape(-1))
    with torch.no_grad():
        want = module(norm.apply(pixels)).numpy()
    return np.stack(got), want
