"""int8 post-training static quantization for CPU, calibrated on real images.

Post-training static quantization (Jacob et al., 2018, "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", Section 2) stores weights as int8 and
runs convolutions on int8 activations whose ranges are fixed beforehand by feeding calibration
images through the network. Two maintained implementations are offered:

- ``openvino`` (default): NNCF's post-training quantization of the OpenVINO model (symmetric
  per-channel weights, activation ranges from calibration, fast bias correction), saved as
  OpenVINO IR and run by OpenVINO's int8 kernels (AVX-512 VNNI where the CPU has it).
- ``onnxruntime``: ONNX Runtime's ``quantize_static`` (QDQ format, per-channel int8 weights,
  uint8 activations, min-max calibration), saved as ONNX.
- ``executorch`` and ``litert``: PT2E with the device runtime's own quantizer
  (:mod:`lightnets.deploy.pt2e`; per-channel weights), lowered to an XNNPACK .pte / a .tflite
  and run by that runtime.
- ``coreml``: coremltools' own int8 weight compression (per-channel, weight-only: Core ML
  dequantizes weights and computes in float), measured with the package's own int8 weights
  run in PyTorch, since Core ML runs only on macOS (:mod:`lightnets.deploy.coreml`).

On the 2-core Zen 4 development machine the OpenVINO path was both faster and closer to fp32
(docs/deploy.md has the measurements), hence the default. Each method is a :class:`Method` in
:data:`METHODS`; the fp32 model is exported once and serves calibration, the fp32 timing and the
fp32 size. A network fine-tuned quantization-aware (``--qat``, :mod:`lightnets.deploy.qat`)
is written by :meth:`Method.from_converted` instead: lowered by the device runtimes, or for
``onnxruntime`` exported as QDQ ONNX (and for ``openvino`` converted to IR from that). Accuracy
is judged by :mod:`lightnets.deploy.accuracy`'s int8 rule (top-1 change on
held-out images within a budget), the same rule ``lightnets bench`` applies.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn

from lightnets.analysis.threads import default_threads
from lightnets.deploy import coreml, executorch_runtime, litert_runtime, pt2e
from lightnets.deploy import metadata as md
from lightnets.deploy.accuracy import DEFAULT_MAX_DROP, Top1Change, top1_change
from lightnets.deploy.exporters import (
    INPUT_NAME,
    ExportVerificationError,
    exported_onnx_bytes,
    format_metadata,
    onnx_bytes,
    openvino_model,
    size_bytes,
    verify_coreml,
    write_bytes,
)
from lightnets.deploy.fusion import fuse
from lightnets.deploy.openvino_runtime import (
    compile_model,
    ensure_signal_stack,
    latency_config,
    request_runner,
    save_ir,
)
from lightnets.deploy.qat import QatResult, check_qat_result
from lightnets.deploy.toolchains import quiet, require_mobile
from lightnets.errors import InvalidArgumentError, LightnetsError, require
from lightnets.fileio import atomic_path, check_writable
from lightnets.logging_state import kept_logging
from lightnets.train.qat import REDUCED_RANGE_NOTE, check_reduce_range

__all__ = [
    "CALIBRATION_SOURCES",
    "METHODS",
    "Method",
    "QuantizationAccuracyError",
    "QuantizationReport",
    "calibration_data",
    "calibration_source",
    "quantize",
    "quantize_onnxruntime",
    "quantize_openvino",
    "synthetic_batches",
]

CALIBRATION_SOURCES = ("fashion-mnist", "mnist", "cifar10", "cifar100", "folder", "synthetic")


class QuantizationAccuracyError(LightnetsError):
    """int8 lost more top-1 than the budget allows (``--max-drop``); nothing was written."""


@dataclass(frozen=True)
class QuantizationReport:
    """Size, speed and accuracy of the int8 model next to its fp32 original."""

    path: str
    method: str
    calibration: str
    calibration_images: int
    fp32_size_mb: float
    int8_size_mb: float
    fp32_latency_ms: float
    int8_latency_ms: float
    speedup: float
    eval_images: int
    #: "accuracy" (top-1 against labels) or "agreement" (top-1 equal to fp32's, no labels).
    eval_metric: str
    fp32_top1: float
    int8_top1: float
    top1_change: float
    max_abs_diff: float
    max_drop: float
    within_budget: bool
    #: How the method was measured where it differs from the rest (Core ML on Linux).
    note: str = ""
    #: The int8 scheme: "PTQ" or "QAT", the weights' and activations' quantization, and one
    #: line saying all of it with the data used (calibration images, or the QAT fine-tune).
    training: str = "PTQ"
    weights: str = ""
    activations: str = ""
    scheme: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def synthetic_batches(
    input_size: tuple[int, int, int], *, count: int = 64, batch_size: int = 8, seed: int = 0
) -> list[torch.Tensor]:
    """``count`` standard-normal images (already "normalised") in batches of ``batch_size``."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [batch_size] * (count // batch_size) + (
        [count % batch_size] if count % batch_size else []
    )
    return [torch.randn(n, *input_size, generator=generator) for n in sizes]


def calibration_data(
    source: str,
    *,
    input_size: tuple[int, int, int],
    data_dir: str | None = None,
    calibration_images: int = 300,
    eval_images: int = 1000,
    batch_size: int = 32,
    val_size: int | None = None,
    seed: int = 0,
) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor | None]], list[str] | None]:
    """Calibration batches (from the training split) and evaluation batches (test split).

    ``source`` is a data set name understood by :func:`lightnets.data.load_splits`
    (``fashion-mnist``, ``cifar10``, ``cifar100``, ``folder`` with ``data_dir``) or
    ``synthetic`` (random images, no labels: the evaluation then measures top-1 agreement with
    fp32). ``val_size`` and ``seed`` reproduce a training run's split (held-out images are the
    test split, else the validation split). Returns (calibration images, [(images, labels or
    None)], class names or None).
    """
    if source not in CALIBRATION_SOURCES:
        raise InvalidArgumentError(
            f"unknown calibration source {source!r}; allowed: {', '.join(CALIBRATION_SOURCES)}"
        )
    if calibration_images < 1 or eval_images < 0:
        raise InvalidArgumentError("--calibration-images must be >= 1 and --eval-images >= 0")
    if source == "synthetic":
        calib = synthetic_batches(input_size, count=calibration_images, batch_size=batch_size)
        unlabelled = synthetic_batches(input_size, count=eval_images, batch_size=batch_size, seed=1)
        return calib, [(x, None) for x in unlabelled], None
    from lightnets.data import load_splits, make_loader

    splits = load_splits(
        source, data_dir=data_dir, image_size=input_size[1], val_size=val_size, seed=seed
    )
    calib = [
        x
        for x, _ in _take(
            make_loader(splits.train, splits, batch_size=batch_size, train=False),
            calibration_images,
        )
    ]
    held_out = splits.test if splits.test is not None else splits.val
    loader = make_loader(held_out, splits, batch_size=batch_size, train=False)
    evals: list[tuple[torch.Tensor, torch.Tensor | None]] = [
        (x, y) for x, y in _take(loader, eval_images)
    ]
    return calib, evals, list(splits.classes)


def calibration_source(
    state: dict[str, Any] | None, source: str | None, data_dir: str | None
) -> tuple[str, dict[str, Any]]:
    """The calibration data set and its :func:`calibration_data` keyword arguments.

    ``source`` None -> the data set recorded in the checkpoint ``state`` (synthetic images for a
    bare model); the folder, validation size and seed of the run come with it unless
    ``source`` names another data set or ``data_dir`` is given.
    """
    stored = (state or {}).get("dataset") or {}
    config = (state or {}).get("config") or {}
    name = source or stored.get("name") or "synthetic"
    if name not in CALIBRATION_SOURCES:
        raise InvalidArgumentError(
            f"unknown calibration source {name!r}; allowed: {', '.join(CALIBRATION_SOURCES)}"
        )
    same = name == stored.get("name")
    kwargs: dict[str, Any] = {"data_dir": data_dir or (config.get("data_dir") if same else None)}
    if same and name != "synthetic":
        kwargs["val_size"] = config.get("val_size")
        kwargs["seed"] = int(config.get("seed", 0))
    if name == "folder" and kwargs["data_dir"] is None:
        raise InvalidArgumentError("--calibration folder needs --data-dir (none is recorded)")
    return name, kwargs


def _take(loader: Iterable, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    taken: list[tuple[torch.Tensor, torch.Tensor]] = []
    remaining = count
    for images, labels in loader:
        if remaining <= 0:
            break
        taken.append((images[:remaining], labels[:remaining]))
        remaining -= len(taken[-1][0])
    return taken


class Method:
    """One int8 quantization method: export fp32 once, quantize, run, save."""

    name: str = ""
    suffix: str = ""
    #: The modules it needs and the pip extra that installs them.
    modules: tuple[str, ...] = ()
    extra: str = ""
    #: False for weight-only methods: calibration images are not used.
    calibrated: bool = True
    #: False where the runner is not the target runtime (Core ML off macOS): no latency.
    timed: bool = True
    note: str = ""
    #: The int8 scheme, per-channel weights (the default) and, with ``per_channel=False``,
    #: per-tensor; activations.
    weights: str = "int8 symmetric per-channel"
    weights_per_tensor: str = "int8 symmetric per-tensor"
    #: What ``reduce_range`` makes of the weights, appended to their scheme.
    reduced_weights: str = "7-bit range (-64..64)"
    activations: str = ""

    def __init__(self) -> None:
        self.per_channel = True
        self.reduce_range = False

    def with_options(self, *, per_channel: bool, reduce_range: bool) -> Method:
        """This method with per-channel (default) or per-tensor weight scales, and weights in
        8 bits (default) or 7 (``reduce_range``: :func:`lightnets.analysis.machine.
        int8_pairs_saturate`)."""
        method = copy.copy(self)
        method.per_channel, method.reduce_range = per_channel, reduce_range
        return method

    def weights_scheme(self) -> str:
        weights = self.weights if self.per_channel else self.weights_per_tensor
        return f"{weights}, {self.reduced_weights}" if self.reduce_range else weights

    def fp32(self, folded: nn.Module, input_size: tuple[int, int, int], meta: dict) -> Any:
        """The fp32 model in this method's format, exported once (``meta``: its metadata)."""
        raise NotImplementedError

    def quantize(self, fp32: Any, batches: Sequence[np.ndarray]) -> Any:
        raise NotImplementedError

    def runner(self, model: Any) -> Callable[[torch.Tensor], np.ndarray]:
        raise NotImplementedError

    def size_mb(self, model: Any) -> float:
        raise NotImplementedError

    def save(self, quantized: Any, path: Path, meta: dict[str, Any]) -> tuple[Path, ...]:
        raise NotImplementedError

    def from_converted(
        self,
        converted: nn.Module,
        fp32: Any,
        quantizer: Any,
        input_size: tuple[int, int, int],
    ) -> Any:
        """The int8 model of a network already converted to int8 (by QAT) with ``quantizer``:
        only the methods quantization-aware training supports (``deploy/qat.py``) have it."""
        raise NotImplementedError


class OpenVinoMethod(Method):
    """NNCF post-training quantization of the OpenVINO model; run by OpenVINO's int8 kernels."""

    name, suffix = "openvino", ".xml"
    modules, extra = ("openvino", "nncf"), "openvino"
    activations = "int8 symmetric per-tensor (NNCF performance preset, min-max calibration)"
    # NNCF's overflow fix spares depthwise convolutions: their kernels add no product pairs.
    reduced_weights = "7-bit range (-64..64) but depthwise convolutions (NNCF's overflow fix)"

    def fp32(self, folded, input_size, meta):
        return openvino_model(folded, torch.zeros(1, *input_size))

    def quantize(self, fp32, batches):
        nncf = require("nncf", "openvino")
        # NNCF draws rich progress bars on stdout, which must stay clean for --json; its log
        # level is lowered for the call only.
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            kept_logging("nncf"),
        ):
            warnings.simplefilter("ignore")
            nncf.set_log_level(logging.ERROR)
            advanced = {}
            if not self.per_channel or self.reduce_range:
                from nncf.quantization.advanced_parameters import (
                    AdvancedQuantizationParameters,
                    OverflowFix,
                    QuantizationParameters,
                )

                options: dict[str, Any] = {}
                if not self.per_channel:
                    options["weights_quantization_params"] = QuantizationParameters(
                        per_channel=False
                    )
                if self.reduce_range:  # NNCF's name for 7-bit weights, in every dense layer
                    options["overflow_fix"] = OverflowFix.ENABLE
                advanced["advanced_parameters"] = AdvancedQuantizationParameters(**options)
            quantized = nncf.quantize(
                fp32,
                nncf.Dataset(list(batches)),
                preset=nncf.QuantizationPreset.PERFORMANCE,
                subset_size=sum(len(b) for b in batches),
                **advanced,
            )
        ensure_signal_stack()  # NNCF compiles with OpenVINO while calibrating
        return quantized

    def from_converted(self, converted, fp32, quantizer, input_size):
        """OpenVINO's model of the QAT network's QDQ ONNX (:meth:`OnnxRuntimeMethod.
        from_converted`): each QuantizeLinear/DequantizeLinear pair becomes a FakeQuantize,
        which OpenVINO runs as u8 convolutions, with the ranges learned in training."""
        ov = require("openvino", "openvino")
        qdq = METHODS["onnxruntime"].from_converted(converted, fp32, quantizer, input_size)
        with tempfile.TemporaryDirectory() as folder, kept_logging():
            source = Path(folder, "qat.onnx")
            source.write_bytes(qdq)
            return ov.convert_model(str(source))

    def runner(self, model):
        run = request_runner(compile_model(model, latency_config()))
        return lambda x: run(x.numpy())

    def size_mb(self, model):
        with tempfile.TemporaryDirectory() as folder:
            xml, bin_ = save_ir(model, Path(folder, "m.xml"))
            return (xml.stat().st_size + bin_.stat().st_size) / 1e6

    def save(self, quantized, path, meta):
        return save_ir(md.attach_openvino(quantized, meta), path)


class OnnxRuntimeMethod(Method):
    """ONNX Runtime's ``quantize_static``: QDQ, per-channel int8 weights, uint8 activations."""

    name, suffix = "onnxruntime", ".onnx"
    modules, extra = ("onnx", "onnxruntime"), "onnx"
    activations = "uint8 asymmetric per-tensor (min-max calibration)"

    def fp32(self, folded, input_size, meta):
        require("onnx", "onnx")
        return onnx_bytes(folded, torch.zeros(1, *input_size))

    def quantize(self, fp32, batches):
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        with tempfile.TemporaryDirectory() as folder:
            source, target = Path(folder, "fp32.onnx"), Path(folder, "int8.onnx")
            source.write_bytes(fp32)
            require("onnxruntime", "onnx").set_default_logger_severity(3)  # no per-tensor warnings
            # The quantizer logs a generic pre-processing hint on the root logger itself.
            with kept_logging(root_level=logging.ERROR):
                quantize_static(
                    str(source),
                    str(target),
                    _reader(batches),
                    quant_format=QuantFormat.QDQ,
                    per_channel=self.per_channel,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    reduce_range=self.reduce_range,
                )
            return target.read_bytes()

    def from_converted(self, converted, fp32, quantizer, input_size):
        """The QAT network as QDQ ONNX: ``torch.onnx.export`` of the converted graph, whose
        quantize/dequantize pairs ONNX Runtime's optimiser fuses into QLinearConv. Exported
        once per network and input size: writing it for ``openvino`` too (whose IR is made
        from this ONNX) reuses the bytes, which for a full-size network took minutes."""
        require("onnx", "onnx")
        exports = _QDQ_EXPORTS.setdefault(converted, {})
        if input_size not in exports:
            exports[input_size] = exported_onnx_bytes(converted, torch.zeros(2, *input_size))
        return exports[input_size]

    def runner(self, model):
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = default_threads()
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {INPUT_NAME: np.ascontiguousarray(x.numpy())})[0]

    def size_mb(self, model):
        return len(model) / 1e6

    def save(self, quantized, path, meta):
        with atomic_path(path, ".onnx") as temp:
            write_bytes(temp, md.attach_onnx(quantized, meta), path)
        return (path,)


#: QDQ ONNX bytes of converted QAT networks, by input size; an entry goes with its network.
_QDQ_EXPORTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], bytes]] = (
    weakref.WeakKeyDictionary()
)


def _reader(batches: Sequence[np.ndarray]) -> Any:  # an onnxruntime CalibrationDataReader
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else {INPUT_NAME: item}

    return Reader()


@dataclass(frozen=True)
class DeviceProgram:
    """A program for a fixed-batch device runtime: its bytes, and the PyTorch module and example
    input it was lowered from (kept for the fp32 model, which is quantized next)."""

    data: bytes
    module: nn.Module | None = None
    example: torch.Tensor | None = None


class _DeviceMethod(Method):
    """PT2E with the runtime's own quantizer, lowered, run in that runtime, saved verified."""

    extra = "mobile"
    runtime: Any = None  # executorch_runtime or litert_runtime
    activations = "int8 asymmetric per-tensor (histogram calibration)"

    def lower(self, module: nn.Module, example: torch.Tensor, quantizer: Any = None) -> bytes:
        """The program for ``module``; ``quantizer``: the one a quantized module was made with."""
        raise NotImplementedError

    def quantizer(self) -> Any:
        raise NotImplementedError

    def fp32(self, folded, input_size, meta):
        example = torch.zeros(1, *input_size)
        return DeviceProgram(self.lower(folded, example), folded, example)

    def quantize(self, fp32, batches):
        quantizer = self.quantizer()
        converted = pt2e.quantize_pt2e(
            fp32.module,
            quantizer,
            batches,
            tuple(fp32.example.shape[1:]),
            fold_quantize=self.name != "litert",  # litert-torch lowers the weights' quantize ops
        )
        return DeviceProgram(self.lower(converted, fp32.example, quantizer))

    def from_converted(
        self,
        converted: nn.Module,
        fp32: DeviceProgram,
        quantizer: Any,
        input_size: tuple[int, int, int],
    ) -> DeviceProgram:
        """The program of a network already converted to int8 (by QAT) with ``quantizer``."""
        if fp32.example is None:
            raise ValueError("from_converted needs the fp32 program made by fp32()")
        return DeviceProgram(self.lower(converted, fp32.example, quantizer))

    def runner(self, model):
        run, _ = self.runtime.runner(model.data)
        return lambda x: run(np.ascontiguousarray(x.numpy()))

    def size_mb(self, model):
        return len(model.data) / 1e6

    def metadata(self, quantized: DeviceProgram, meta: dict[str, Any]) -> dict[str, Any]:
        return meta

    def save(self, quantized, path, meta):
        data = self.runtime.attach_metadata(quantized.data, self.metadata(quantized, meta))
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn(2, *meta["input"]["shape"][1:], generator=generator)
        expected = self.runner(quantized)(probe)
        with atomic_path(path, self.suffix) as temp:
            write_bytes(temp, data, path)
            run, _ = self.runtime.runner(temp)
            if not np.array_equal(run(probe.numpy()), expected):
                raise ExportVerificationError(f"{path}: the saved program computes differently")
        return (path,)


class ExecuTorchMethod(_DeviceMethod):
    """PT2E with ExecuTorch's XNNPACKQuantizer, lowered to the XNNPACK delegate (.pte)."""

    name, suffix = "executorch", ".pte"
    modules = ("executorch", "torchao")
    runtime = executorch_runtime

    def lower(self, module, example, quantizer=None):
        return executorch_runtime.lower(module, example)

    def quantizer(self):
        return pt2e.executorch_quantizer(per_channel=self.per_channel)


class LiteRTMethod(_DeviceMethod):
    """PT2E with litert-torch's PT2EQuantizer, converted in static int8 mode (.tflite)."""

    name, suffix = "litert", ".tflite"
    modules = ("litert_torch", "ai_edge_litert", "torchao")
    runtime = litert_runtime

    def lower(self, module, example, quantizer=None):
        return litert_runtime.convert(module, example, quantizer=quantizer)

    def quantizer(self):
        return pt2e.litert_quantizer(per_channel=self.per_channel)

    def metadata(self, quantized, meta):
        quantization = litert_runtime.input_quantization(quantized.data)
        if quantization is None:
            return meta
        return {**meta, "input": {**meta["input"], **quantization}}


@dataclass
class _CoreMLInt8:
    mlmodel: Any
    module: nn.Module  # PyTorch with the package's dequantized int8 weights
    converted: Any  # coreml.Converted of the fp32 model


class CoreMLMethod(Method):
    """coremltools' int8 weight compression (``linear_quantize_weights``, per channel)."""

    name, suffix = "coreml", coreml.SUFFIX
    modules, extra = ("coremltools",), "mobile"
    calibrated = False
    timed = False  # the runner is PyTorch with the package's weights, not Core ML
    weights = "int8 symmetric per-channel, weight-only"
    activations = "float32 (weight-only)"
    note = (
        "weight-only int8 (Core ML dequantizes the weights and computes in float32); top-1 "
        "measured with the package's own int8 weights run in PyTorch; latency not measured "
        "(Core ML runs only on Apple platforms)"
    )

    def fp32(self, folded, input_size, meta):
        self._size, self._meta = input_size, meta
        return coreml.convert(folded, input_size, meta)

    def quantize(self, fp32, batches):
        quantized = coreml.quantize_weights(fp32.mlmodel)
        module, count = coreml.int8_weights_model(fp32, quantized)
        if count == 0:
            raise ExportVerificationError("coremltools quantized no weight of this network")
        return _CoreMLInt8(quantized, module, fp32)

    def runner(self, model):
        # The fp32 Converted or the int8 result: both compute from normalised images.
        converted = model.converted if isinstance(model, _CoreMLInt8) else model
        module = model.module
        to_image = converted.normalisation.from_normalised

        def run(x: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return module(to_image(x)).numpy()

        return run

    def size_mb(self, model):
        mlmodel = model.mlmodel
        with tempfile.TemporaryDirectory() as folder:
            with quiet():
                mlmodel.save(str(Path(folder, "m.mlpackage")))
            return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 1e6

    def save(self, quantized, path, meta):
        coreml.set_metadata(quantized.mlmodel, meta)
        reference = coreml.Converted(
            quantized.mlmodel,
            quantized.module,
            quantized.converted.normalisation,
            quantized.converted.parameter_names,
        )
        check = lambda temp: verify_coreml(temp, reference, self._size, meta)  # noqa: E731
        coreml.save_package(quantized.mlmodel, path, check=check)
        return (path,)


#: Quantization methods by name; the first is the default.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        OpenVinoMethod(),
        OnnxRuntimeMethod(),
        ExecuTorchMethod(),
        LiteRTMethod(),
        CoreMLMethod(),
    )
}


def get_method(name: str, *, per_channel: bool = True, reduce_range: bool | None = None) -> Method:
    """The quantization method ``name`` with per-channel or per-tensor weights, in 7 bits with
    ``reduce_range`` (None: where this CPU's int8 kernels for it would saturate,
    :func:`lightnets.train.qat.default_reduce_range`)."""
    if name not in METHODS:
        raise InvalidArgumentError(
            f"unknown quantization method {name!r}; allowed: {', '.join(METHODS)}"
        )
    method = METHODS[name]
    if not per_channel and name == "coreml":
        raise InvalidArgumentError("--method coreml quantizes weights per channel only")
    reduce_range = check_reduce_range(name, reduce_range, "--reduce-range")
    if not per_channel or reduce_range:
        method = method.with_options(per_channel=per_channel, reduce_range=reduce_range)
    for module in method.modules:
        if method.extra == "mobile":
            require_mobile(module)
        else:
            require(module, method.extra)
    return method


def _arrays(batches: Iterable[torch.Tensor]) -> list[np.ndarray]:
    items = [np.ascontiguousarray(b.numpy(), dtype=np.float32) for b in batches]
    if not items:
        raise InvalidArgumentError("quantization needs at least one calibration image")
    return items


def quantize_openvino(
    model: nn.Module, batches: Iterable[torch.Tensor], input_size: tuple[int, int, int]
) -> Any:  # an openvino.Model
    """NNCF post-training int8 quantization of the BN-folded model, as an ``openvino.Model``."""
    method = get_method("openvino")
    return method.quantize(method.fp32(fuse(model), input_size, {}), _arrays(batches))


def quantize_onnxruntime(
    model: nn.Module, batches: Iterable[torch.Tensor], input_size: tuple[int, int, int]
) -> bytes:
    """ONNX Runtime static quantization (QDQ, per-channel int8 weights) of the folded model."""
    method = get_method("onnxruntime")
    return method.quantize(method.fp32(fuse(model), input_size, {}), _arrays(batches))


def _latency_ms(run: Callable[[torch.Tensor], Any], input_size: tuple[int, int, int]) -> float:
    from lightnets.analysis.timing import measure_latency

    x = torch.randn(1, *input_size)
    return measure_latency(lambda: run(x), warmup=5, min_iters=20, min_seconds=1.0).median_ms


def _eager(model: nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return model(x).numpy()

    return run


def quantize(
    model: nn.Module,
    path: str | Path,
    calibration: Sequence[torch.Tensor],
    evaluation: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    input_size: tuple[int, int, int],
    *,
    method: str = "openvino",
    calibration_name: str = "synthetic",
    max_drop: float = DEFAULT_MAX_DROP,
    strict: bool = False,
    metadata: dict[str, Any] | None = None,
    per_channel: bool = True,
    qat: QatResult | None = None,
    reduce_range: bool | None = None,
) -> QuantizationReport:
    """Quantize ``model`` to int8, measure what changed, and write it to ``path``.

    ``path`` ends in ``.xml`` (OpenVINO IR, with ``.bin`` beside it) for ``openvino`` and in
    ``.onnx`` for ``onnxruntime``. ``evaluation`` batches with labels give top-1 accuracy of
    fp32 and int8; without labels, the share of images whose int8 top-1 equals fp32's. A drop
    beyond ``max_drop`` points is reported (``within_budget`` False); with ``strict`` it raises
    :class:`QuantizationAccuracyError` and nothing is written. ``metadata`` (the fp32 export's,
    :func:`lightnets.deploy.metadata.build_metadata`) is stored in the file with the int8 result.
    ``per_channel`` False: one weight scale per tensor instead of per output channel. ``qat``: the
    network fine-tuned quantization-aware for ``method`` (:func:`lightnets.deploy.qat.
    finetune_qat`), written instead of a post-training quantization of ``model`` (which stays
    the fp32 reference); ``calibration`` is then unused. ``reduce_range``: weights in 7 bits
    (None: where this CPU's kernels for ``method`` need it, said in the report's note); a QAT
    network keeps the grid it trained on.
    """
    if qat is not None:
        check_qat_result(qat, method)
        quant = get_method(method, reduce_range=qat.reduce_range)
    else:
        quant = get_method(method, per_channel=per_channel, reduce_range=reduce_range)
    notes = [quant.note] if quant.note else []
    if quant.reduce_range and reduce_range is None:
        notes.append(REDUCED_RANGE_NOTE.format(flag="--no-reduce-range"))
    note = "; ".join(notes)
    path = coreml.check_writable_package(path) if method == "coreml" else check_writable(path)
    if path.suffix != quant.suffix:
        raise InvalidArgumentError(f"--method {method} writes a {quant.suffix} file; got {path}")
    model = model.eval()
    if metadata is None:
        metadata = md.metadata_for(model, None, input_size)
    metadata = format_metadata(method, metadata, input_size)
    fp32 = quant.fp32(fuse(model), input_size, metadata)  # the one fp32 export
    fp32_run, fp32_size = quant.runner(fp32), quant.size_mb(fp32)
    if qat is not None:
        quantized = quant.from_converted(qat.converted, fp32, qat.quantizer, input_size)
        calibration, calibration_name = [], qat.dataset
    else:
        quantized = quant.quantize(fp32, _arrays(calibration) if quant.calibrated else [])
    int8_run = quant.runner(quantized)
    change = top1_change(_eager(model), int8_run, evaluation, max_drop=max_drop)
    if strict and not change.within_budget:
        raise QuantizationAccuracyError(
            f"int8 not written: {change.describe()} is beyond --max-drop {max_drop:g}"
        )
    scheme = describe_scheme(quant, qat, calibration_name, calibration)
    int8 = {
        "method": method,
        **change.as_dict(),
        **scheme,
        **({"note": note} if note else {}),
    }
    metadata = {**metadata, "precision": "int8", "int8": int8}
    files = quant.save(quantized, path, metadata)
    fp32_ms = int8_ms = math.nan
    if quant.timed:
        fp32_ms, int8_ms = _latency_ms(fp32_run, input_size), _latency_ms(int8_run, input_size)
    if not quant.calibrated:
        calibration, calibration_name = [], "none (weight-only)"
    report = _report(
        path, method, calibration_name, calibration, change, files, fp32_size, fp32_ms, int8_ms
    )
    return replace(report, note=note, **scheme)


class _Scheme(TypedDict):
    """The int8 scheme's fields of :class:`QuantizationReport`."""

    training: str
    weights: str
    activations: str
    scheme: str


def describe_scheme(
    quant: Method, qat: QatResult | None, calibration_name: str, calibration: Sequence
) -> _Scheme:
    """How the int8 model was made, in the report's words (``training``, ``weights``,
    ``activations``, and ``scheme``: all of it and the data it used, in one line). The one
    wording of every int8 result: ``quantize``'s report and ``bench``'s int8 rows."""
    weights = quant.weights_scheme() if qat is None else qat.weights
    if qat is not None:
        activations = qat.activations + " (ranges learned in training)"
        data = qat.describe()
        training = "QAT"
    else:
        activations = quant.activations
        count = sum(len(b) for b in calibration)
        data = f"{count} {calibration_name} calibration images" if count else "no calibration"
        training = "PTQ"
    line = f"{training}: weights {weights}, activations {activations}; {data}"
    return {"training": training, "weights": weights, "activations": activations, "scheme": line}


def _report(
    path: str | Path,
    method: str,
    calibration_name: str,
    calibration: Sequence[torch.Tensor],
    change: Top1Change,
    files: Iterable[Path],
    fp32_size: float,
    fp32_ms: float,
    int8_ms: float,
) -> QuantizationReport:
    return QuantizationReport(
        path=str(path),
        method=method,
        calibration=calibration_name,
        calibration_images=sum(len(b) for b in calibration),
        fp32_size_mb=fp32_size,
        int8_size_mb=sum(size_bytes(f) for f in files) / 1e6,
        fp32_latency_ms=fp32_ms,
        int8_latency_ms=int8_ms,
        speedup=fp32_ms / int8_ms,
        eval_images=change.images,
        eval_metric=change.metric,
        fp32_top1=change.fp32_top1,
        int8_top1=change.int8_top1,
        top1_change=change.change,
        max_abs_diff=change.max_abs_diff,
        max_drop=change.max_drop,
        within_budget=change.within_budget,
    )
