"""Inference backends behind one interface, so they can be checked and timed side by side.

The device runtimes are backends too: ``executorch`` (XNNPACK delegate) and ``litert``
(Interpreter with XNNPACK), fp32 and int8 (PT2E, each runtime's own quantizer), with a static
input shape (the benchmark's batch), BatchNorm folded.

Each backend turns an eval-mode PyTorch model and an example batch into a callable
``run(x: Tensor) -> Tensor`` for batches shaped like the example. ``*-opt`` backends are
lightnets' tuned settings of a runtime; the plain runtime names are that runtime's defaults, the
baseline a user gets by following its quick-start (ONNX Runtime's with its thread pools' spinning
off, which otherwise takes the cores of whatever runs next). Both race in ``bench --backend
best``, so the options kept are the ones measured fastest on the CPU at hand, not a fixed
choice. What was measured to win on a 2-core Zen 4 CPU (see docs/deploy.md): BatchNorm folded
before export, a static input shape, one inference stream with as many threads as physical
cores, and an infer request reused with its input memory shared (no copy), which matters at the
~1 ms scale of these networks.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lightnets.analysis.timing import validate_threads
from lightnets.deploy import executorch_runtime, litert_runtime, pt2e
from lightnets.deploy.accuracy import DEFAULT_MAX_DROP, Top1Change, top1_change
from lightnets.deploy.exporters import INPUT_NAME, onnx_bytes, openvino_model
from lightnets.deploy.fusion import fuse
from lightnets.deploy.openvino_runtime import (
    compile_model,
    latency_config,
    physical_cores,
    request_runner,
)
from lightnets.deploy.quantization import (
    describe_scheme,
    get_method,
    quantize_openvino,
    synthetic_batches,
)
from lightnets.deploy.toolchains import MOBILE_EXTRA, require_mobile
from lightnets.errors import InvalidArgumentError, require

__all__ = [
    "BACKENDS",
    "Backend",
    "backend_names",
    "get_backend",
    "physical_cores",
    "register_backend",
    "resolve_backends",
]

Runner = Callable[[torch.Tensor], torch.Tensor]
#: A device runtime's runner: NumPy batch in, NumPy logits out.
ArrayRunner = Callable[[np.ndarray], np.ndarray]


class Backend:
    """An inference path: ``prepare(model, example)`` returns ``run(x) -> logits``.

    Attributes:
        name: the name used on the command line.
        description: one line for tables and ``--help``.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``; each is held to its own tolerance and
            only fp32 is a candidate for ``--backend best`` by default. A backend that runs at
            the runtime's default precision sets it in :meth:`prepare` (OpenVINO's is bf16 on
            CPUs with bf16 instructions).
        extra: the pip extra that installs the runtime (``None`` when PyTorch suffices).
        modules: importable modules the backend needs.
    """

    name: str = ""
    description: str = ""
    precision: str = "fp32"
    extra: str | None = None
    modules: tuple[str, ...] = ()
    #: Slow to prepare (tens of seconds); left out of ``best``'s candidates.
    slow_to_prepare: bool = False

    def __init__(self, threads: int | None = None) -> None:
        validate_threads(threads)
        self.threads = threads

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def require(self) -> None:
        """Raise :class:`MissingDependencyError` naming the extra when the runtime is missing."""
        for module in self.modules:
            require(module, self.extra or "deploy")

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        raise NotImplementedError

    def top1_change(self, model: nn.Module) -> Top1Change:
        """An ``int8`` backend's judgement after :meth:`prepare`: the int8 rule
        (:mod:`lightnets.deploy.accuracy`), which int8 backends implement; others have none."""
        raise NotImplementedError(f"{self.name} is {self.precision}, not judged by top-1 change")

    def scheme(self) -> str:
        """How an int8 backend quantized, after :meth:`prepare` ("" for other precisions)."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads})"


def _image_size(example: torch.Tensor) -> tuple[int, int, int]:
    """(C, H, W) of an NCHW example batch."""
    channels, height, width = (int(v) for v in example.shape[1:])
    return channels, height, width


def _inference(fn: Callable[[torch.Tensor], torch.Tensor]) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(x)

    return run


class EagerBackend(Backend):
    name = "eager"
    description = "PyTorch eager, NCHW (the baseline)"

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        return _inference(model.eval())


class ChannelsLastBackend(Backend):
    name = "channels_last"
    description = "PyTorch eager, NHWC memory format"

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        # A copy: Module.to converts in place, and the next backend must get the model as given.
        # Module.to takes memory_format at run time; torch's overloads leave it out.
        model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return _inference(lambda x: model(x.contiguous(memory_format=torch.channels_last)))


class FusedBackend(Backend):
    name = "fused"
    description = "PyTorch eager, BatchNorm folded, NHWC"

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        # Module.to takes memory_format at run time; torch's overloads leave it out.
        fused = fuse(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return _inference(lambda x: fused(x.contiguous(memory_format=torch.channels_last)))


class CompileBackend(Backend):
    name = "compile"
    description = "torch.compile (inductor) of the fused model"
    slow_to_prepare = True

    def available(self) -> bool:
        return shutil.which(os.environ.get("CXX", "g++")) is not None

    def require(self) -> None:
        if not self.available():
            raise InvalidArgumentError("torch.compile on CPU needs a C++ compiler (g++) on PATH")

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        compiled = torch.compile(fuse(model), dynamic=False)
        run = _inference(compiled)
        run(example)  # compile now, not inside the timed loop
        return run


class TorchScriptBackend(Backend):
    name = "torchscript"
    description = "TorchScript: trace, freeze, optimize_for_inference"

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model.eval(), example, check_trace=False)
            optimized = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        return _inference(optimized)


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime with its default session options, except that its thread pools never spin.

    By default ONNX Runtime's worker threads spin (busy-wait) after each call, keeping cores
    that the next runtime timed, or another process, needs: measured on a shared 2-core VM
    (issue 22), ShuffleNet V2 0.5x ran 10.8 ms with spinning and 2.9 ms without, and PyTorch
    timed right after a spinning call 390 ms instead of 274 ms. ``spinning=True`` gives the
    runtime's plain default (benchmarks compare against it); ``threads`` sets the intra-op
    pool, ``None`` leaves ONNX Runtime's own default (one per physical core).
    """

    name = "onnxruntime"
    description = "ONNX Runtime, default session options (threads as asked, no spinning)"
    extra = "onnx"
    modules = ("onnx", "onnxruntime")

    def __init__(self, threads: int | None = None, spinning: bool = False) -> None:
        super().__init__(threads)
        self.spinning = spinning

    def session_options(self, ort: Any) -> Any:
        """The session options: ONNX Runtime's defaults, the threads and spinning set."""
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def _session(self, model: nn.Module, example: torch.Tensor) -> Any:
        ort = require("onnxruntime", "onnx")
        return ort.InferenceSession(
            onnx_bytes(model, example),
            self.session_options(ort),
            providers=["CPUExecutionProvider"],
        )

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        session = self._session(model, example)
        return lambda x: torch.from_numpy(session.run(None, {INPUT_NAME: x.numpy()})[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads}, spinning={self.spinning})"


class OnnxRuntimeOptBackend(OnnxRuntimeBackend):
    name = "onnxruntime-opt"
    description = (
        "ONNX Runtime: BN folded, static shape, all graph optimisations, tuned threads, no spinning"
    )

    def session_options(self, ort: Any) -> Any:
        options = super().session_options(ort)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads or physical_cores()
        options.inter_op_num_threads = 1
        return options

    def _session(self, model: nn.Module, example: torch.Tensor) -> Any:
        ort = require("onnxruntime", "onnx")
        data = onnx_bytes(fuse(model), example, dynamic_batch=False)
        return ort.InferenceSession(
            data, self.session_options(ort), providers=["CPUExecutionProvider"]
        )

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        session = self._session(model, example)
        binding = session.io_binding()
        output = session.get_outputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            array = x.numpy()
            binding.bind_cpu_input(INPUT_NAME, array)
            binding.bind_output(output, "cpu")
            session.run_with_iobinding(binding)
            return torch.from_numpy(binding.copy_outputs_to_cpu()[0])

        return run


class OpenVinoBackend(Backend):
    name = "openvino"
    description = "OpenVINO, default settings: compile_model(model, 'CPU')"
    extra = "openvino"
    modules = ("openvino",)

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        compiled = compile_model(openvino_model(model, example))
        # By default OpenVINO computes in bf16 on CPUs that have bf16 instructions (AVX-512
        # BF16, AMX): say so, and hold it to the bf16 tolerance.
        hint = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self.precision = "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"
        return lambda x: torch.from_numpy(compiled(x.numpy())[0])


class OpenVinoOptBackend(OpenVinoBackend):
    name = "openvino-opt"
    description = "OpenVINO: BN folded, static shape, latency hint, 1 stream, fp32, shared input"
    inference_precision = "f32"

    def compile(self, ov_model: Any) -> Any:
        return compile_model(ov_model, latency_config(self.threads, self.inference_precision))

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        compiled = self.compile(openvino_model(fuse(model), example, static_shape=True))
        return _request_runner(compiled)


class OpenVinoBf16Backend(OpenVinoOptBackend):
    name = "openvino-bf16"
    description = "openvino-opt with bfloat16 inference precision (changes outputs ~1e-2)"
    precision = "bf16"
    inference_precision = "bf16"


def _request_runner(compiled: Any) -> Runner:
    run = request_runner(compiled)
    return lambda x: torch.from_numpy(run(x.numpy()))


class Int8Backend(Backend):
    name = "int8"
    description = "int8 post-training static quantization (OpenVINO + NNCF), calibrated"
    precision = "int8"
    extra = "openvino"
    modules: tuple[str, ...] = ("openvino", "nncf")
    #: The ``lightnets quantize --method`` that makes the same int8 model (its scheme).
    method = "openvino"

    def __init__(
        self,
        threads: int | None = None,
        calibration: Sequence[torch.Tensor] | None = None,
        evaluation: Sequence[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
        max_drop: float = DEFAULT_MAX_DROP,
        calibration_name: str = "synthetic",
    ) -> None:
        super().__init__(threads)
        self.calibration = calibration
        self.evaluation = evaluation
        self.max_drop = max_drop
        self.calibration_name = calibration_name if calibration is not None else "synthetic"
        #: For top1_change: a runner of any batch size, and the image size it was prepared for.
        self._prepared: tuple[Runner, tuple[int, int, int]] | None = None
        #: The calibration batches prepare() used (for scheme()).
        self._calibrated: Sequence[torch.Tensor] = ()

    def calibration_batches(self, size: tuple[int, int, int]) -> Sequence[torch.Tensor]:
        """The calibration images given, else 64 synthetic ones; remembered for :meth:`scheme`."""
        batches = self.calibration
        if batches is None:
            batches = synthetic_batches(size, count=64, batch_size=8)
        self._calibrated = batches
        return batches

    def scheme(self) -> str:
        """``quantize``'s one-line scheme: PTQ, weights and activations, calibration images."""
        method = get_method(self.method)  # with the weight range this machine gets
        return describe_scheme(method, None, self.calibration_name, self._calibrated)["scheme"]

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        size = _image_size(example)
        batches = self.calibration_batches(size)
        quantized = quantize_openvino(model, batches, size)
        compile = OpenVinoOptBackend(self.threads).compile
        self._prepared = _request_runner(compile(quantized)), size
        quantized.reshape(list(example.shape))
        return _request_runner(compile(quantized))

    def top1_change(self, model: nn.Module) -> Top1Change:
        """The int8 rule (:mod:`lightnets.deploy.accuracy`) on the held-out images.

        Without held-out images: top-1 agreement with fp32 on 256 synthetic images.
        """
        if self._prepared is None:
            raise RuntimeError("prepare() first")
        run, size = self._prepared
        evaluation = self.evaluation
        if not evaluation:
            evaluation = [(x, None) for x in synthetic_batches(size, count=256, seed=1)]

        def fp32(x: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return model(x).numpy()

        return top1_change(fp32, lambda x: run(x).numpy(), evaluation, max_drop=self.max_drop)


def _folded(model: nn.Module) -> nn.Module:
    """BatchNorm folded, weights in the default (NCHW) memory format the lowerings expect."""
    # Module.to takes memory_format at run time; torch's overloads leave it out.
    return fuse(model).to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


class ExecuTorchBackend(Backend):
    name = "executorch"
    description = "ExecuTorch, XNNPACK delegate: BN folded, static shape (a phone's runtime)"
    extra = MOBILE_EXTRA
    modules: tuple[str, ...] = ("executorch",)

    def require(self) -> None:
        for module in self.modules:
            require_mobile(module)

    def lower(self, model: nn.Module, example: torch.Tensor) -> bytes:
        return executorch_runtime.lower(_folded(model), example)

    #: Bytes of the program the last prepare() lowered (the file an app would ship).
    file_bytes: int | None = None

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        data = self.lower(model, example)
        self.file_bytes = len(data)
        run, _ = executorch_runtime.runner(data, threads=self.threads)
        return lambda x: torch.from_numpy(run(x.numpy()))


class LiteRTBackend(ExecuTorchBackend):
    name = "litert"
    description = "LiteRT Interpreter, XNNPACK delegate: BN folded, static shape (Android's)"
    modules = ("litert_torch", "ai_edge_litert")

    def lower(self, model: nn.Module, example: torch.Tensor) -> bytes:
        return litert_runtime.convert(_folded(model), example)

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        data = self.lower(model, example)
        self.file_bytes = len(data)
        run, _ = litert_runtime.runner(data, threads=self.threads)
        return lambda x: torch.from_numpy(run(x.numpy()))


class _DeviceRuntime(Protocol):
    """What a device backend uses of its runtime module (``executorch_runtime``,
    ``litert_runtime``)."""

    def runner(
        self, data: bytes | Path, *, threads: int | None = None
    ) -> tuple[ArrayRunner, list[int]]: ...


class _DeviceInt8Backend(Int8Backend):
    """PT2E int8 (per-channel weights, calibrated), lowered for a device runtime; judged by
    the int8 rule like ``int8``. The program has the example's static batch; held-out batches
    run through it in pieces."""

    extra = MOBILE_EXTRA
    require = ExecuTorchBackend.require
    file_bytes: int | None = None
    runtime: _DeviceRuntime

    def lower(
        self, model: nn.Module, example: torch.Tensor, batches: Sequence[torch.Tensor]
    ) -> bytes:
        raise NotImplementedError

    def program(
        self, model: nn.Module, example: torch.Tensor, batches: Sequence[torch.Tensor]
    ) -> tuple[ArrayRunner, list[int]]:
        data = self.lower(model, example, batches)
        self.file_bytes = len(data)
        return self.runtime.runner(data, threads=self.threads)

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        size = _image_size(example)
        batches = self.calibration_batches(size)
        run, _ = self.program(_folded(model), example, batches)
        runner = lambda x: torch.from_numpy(run(x.numpy()))  # noqa: E731
        self._prepared = runner, size
        return runner


class ExecuTorchInt8Backend(_DeviceInt8Backend):
    name = "executorch-int8"
    description = "ExecuTorch XNNPACK int8: PT2E with XNNPACKQuantizer, per-channel, calibrated"
    modules = ("executorch", "torchao")
    runtime = executorch_runtime
    method = "executorch"

    def lower(
        self, model: nn.Module, example: torch.Tensor, batches: Sequence[torch.Tensor]
    ) -> bytes:
        size = _image_size(example)
        quantized = pt2e.quantize_pt2e(model, pt2e.executorch_quantizer(), batches, size)
        return executorch_runtime.lower(quantized, example)


class LiteRTInt8Backend(_DeviceInt8Backend):
    name = "litert-int8"
    description = "LiteRT int8: PT2E with litert-torch's PT2EQuantizer, per-channel, calibrated"
    modules = ("litert_torch", "ai_edge_litert", "torchao")
    runtime = litert_runtime
    method = "litert"

    def lower(
        self, model: nn.Module, example: torch.Tensor, batches: Sequence[torch.Tensor]
    ) -> bytes:
        size = _image_size(example)
        quantizer = pt2e.litert_quantizer()
        quantized = pt2e.quantize_pt2e(model, quantizer, batches, size, fold_quantize=False)
        return litert_runtime.convert(quantized, example, quantizer=quantizer)


#: The registry: name -> backend class. A new runtime is one line, ``register_backend(Cls)``.
BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Add ``cls`` to :data:`BACKENDS` under ``cls.name`` (usable as a class decorator)."""
    BACKENDS[cls.name] = cls
    return cls


for _cls in (
    EagerBackend,
    ChannelsLastBackend,
    FusedBackend,
    CompileBackend,
    TorchScriptBackend,
    OnnxRuntimeBackend,
    OnnxRuntimeOptBackend,
    OpenVinoBackend,
    OpenVinoOptBackend,
    OpenVinoBf16Backend,
    Int8Backend,
    ExecuTorchBackend,
    LiteRTBackend,
    ExecuTorchInt8Backend,
    LiteRTInt8Backend,
):
    register_backend(_cls)


def get_backend(name: str, threads: int | None = None, **kwargs: Any) -> Backend:
    """The backend called ``name``; unknown names raise, listing the allowed ones."""
    if name not in BACKENDS:
        raise InvalidArgumentError(
            f"unknown backend {name!r}; allowed: {', '.join(BACKENDS)}, all, best"
        )
    cls = BACKENDS[name]
    return cls(threads, **kwargs) if kwargs else cls(threads)


def resolve_backends(spec: str | Sequence[str]) -> list[str]:
    """Parse ``--backend`` for the CPU: a comma-separated list of names, or ``all``, or ``best``."""
    return backend_names(spec, BACKENDS)


def backend_names(
    spec: str | Sequence[str], table: Mapping[str, type[Backend]], where: str = ""
) -> list[str]:
    """``spec`` (``"a,b"`` or a list of names) checked against a device's backend ``table``:
    the names once each in their order, or ``["all"]`` / ``["best"]``. ``where`` names the
    device in the errors (``"--device cuda"``); the CPU's own table needs none."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [part.strip() for part in parts if part.strip()]
    allowed = f"{', '.join(table)}, all, best"
    if not names:
        scope = f" with {where}" if where else ""
        raise InvalidArgumentError(f"--backend is empty; allowed{scope}: {allowed}")
    if names in (["all"], ["best"]):
        return names
    for name in names:
        if name in ("all", "best"):
            raise InvalidArgumentError(f"--backend {name} cannot be combined with other backends")
        if name not in table:
            scope = f" for {where}" if where else ""
            raise InvalidArgumentError(f"unknown backend {name!r}{scope}; allowed: {allowed}")
    return list(dict.fromkeys(names))
