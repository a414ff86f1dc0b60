"""Quantization-aware training: fake int8 in the forward pass, so the weights learn to live with it.

Jacob et al., 2018 ("Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
Only Inference"), Section 3: during training, weights and activations are rounded to the int8 grid
they will have at inference ("fake quantization": quantize then dequantize, float in between, the
gradient passed straight through the rounding), with BatchNorm folded into the convolution the way
inference folds it (Section 3.2), and the BatchNorm statistics frozen for the last part of the
fine-tune. Post-training quantization (PTQ) rounds a network that never saw the rounding; that
is what costs MobileNets their accuracy (MobileNet V2 on ImageNet: fp32 71.9%, per-tensor PTQ
56.7%, per-channel PTQ 67.3%, QAT above 71.5%; PyTorch's quantization tutorial).

Done in PyTorch 2 export form with the target runtime's own quantizer, so that training sees
exactly the int8 arithmetic the runtime will run: ``torch.export`` captures the network,
torchao's ``prepare_qat_pt2e`` inserts the fake-quantize modules the quantizer asks for, the
network trains as usual (its parameters and BatchNorm buffers are the very tensors of the fp32
model, so optimiser, schedule and checkpoint keep working on them), and ``convert_pt2e`` turns
it into quantize/dequantize pairs that the runtime lowers to int8 kernels
(``lightnets.deploy`` does that part). The quantizers are the device runtimes' (ExecuTorch's
``XNNPACKQuantizer``, litert-torch's ``PT2EQuantizer``: the same int8 scheme, symmetric
per-channel weights and asymmetric per-tensor activations). ONNX Runtime and OpenVINO have no
PT2E quantizer: for them the converted network is exported as QDQ ONNX (QuantizeLinear/
DequantizeLinear pairs, which ONNX Runtime fuses into QLinearConv and OpenVINO reads as
FakeQuantize), annotated by ``XNNPACKQuantizer`` with uint8 activations (see
:attr:`QatBackend.unsigned_activations`). Their x86 kernels saturate with 8-bit weights on CPUs
without VNNI (:func:`lightnets.analysis.machine.int8_pairs_saturate`): there the weights train
on a 7-bit grid (``reduce_range``, :func:`default_reduce_range`), as ONNX Runtime's own
quantizer does for such CPUs.

Train/eval switching: an exported graph ignores ``module.train()``; :class:`QatNetwork` rewrites
its BatchNorm and dropout calls instead (one argument each, no pattern matching), and turns the
range observers off for evaluation, so that evaluating never moves the quantization ranges.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from lightnets.errors import InvalidArgumentError, first_line, require
from lightnets.logging_state import kept_logging

__all__ = [
    "QAT_BACKENDS",
    "REDUCED_RANGE_NOTE",
    "REDUCED_WEIGHT_RANGE",
    "QatBackend",
    "QatNetwork",
    "backend_quantizer",
    "check_reduce_range",
    "default_qat_epochs",
    "default_reduce_range",
    "fake_quant_modules",
    "int8_from_checkpoint",
]

MOBILE_EXTRA = "mobile"
#: Symmetric weights on a 7-bit grid: with uint8 activations, two products sum to at most
#: 255 x 63 x 2 = 32,130, within int16 (:func:`lightnets.analysis.machine.int8_pairs_saturate`).
REDUCED_WEIGHT_RANGE = (-63, 63)
#: Why the weights are 7-bit when nobody asked (``flag``: the option that keeps 8 bits).
REDUCED_RANGE_NOTE = (
    "7-bit weights: this CPU has no VNNI, and the u8 x s8 int8 kernels of ONNX Runtime and "
    "OpenVINO saturate with 8-bit ones here ({flag} for a CPU with VNNI)"
)


@dataclass(frozen=True)
class QatBackend:
    """A runtime whose PT2E quantizer QAT can train against."""

    name: str
    module: str  # where the quantizer and its configuration live
    quantizer_class: str
    #: The int8 scheme its symmetric configuration gives (the same for PTQ and QAT).
    weights: str = "int8 symmetric per-channel"
    activations: str = "int8 asymmetric per-tensor"
    #: Activations uint8 (0..255) instead of int8: ONNX Runtime's own choice (``quantize_static``
    #: defaults to it) and the form its optimiser fuses. With int8 activations the QDQ export of a
    #: MobileNet V2 kept 15 of its 52 convolutions in float in ONNX Runtime 1.23; with uint8 all
    #: 52 became QLinearConv and every residual add QLinearAdd (OpenVINO runs both as u8).
    unsigned_activations: bool = False
    #: Its x86 int8 kernels multiply uint8 activations by int8 weights with ``VPMADDUBSW``
    #: (ONNX Runtime's, and oneDNN's under OpenVINO), which saturates without VNNI;
    #: XNNPACK (ExecuTorch, LiteRT) widens to 16 bits first and does not.
    u8s8_kernels: bool = False

    def weights_scheme(self, reduce_range: bool) -> str:
        """Its weights' int8 scheme, with the 7-bit range when ``reduce_range``."""
        low, high = REDUCED_WEIGHT_RANGE
        return f"{self.weights}, 7-bit range ({low}..{high})" if reduce_range else self.weights

    def quantizes_like(self, other: QatBackend) -> bool:
        """Whether a network trained against ``other``'s quantizer is this runtime's int8 too
        (onnxruntime and openvino share one; executorch and litert each have their own)."""
        return dataclasses.replace(other, name=self.name) == self


#: Runtimes QAT can train for, by the name of their ``lightnets quantize --method``.
QAT_BACKENDS: dict[str, QatBackend] = {
    b.name: b
    for b in (
        QatBackend(
            "executorch",
            "executorch.backends.xnnpack.quantizer.xnnpack_quantizer",
            "XNNPACKQuantizer",
        ),
        QatBackend("litert", "litert_torch.quantize.pt2e_quantizer", "PT2EQuantizer"),
        *(
            QatBackend(
                name,
                "executorch.backends.xnnpack.quantizer.xnnpack_quantizer",
                "XNNPACKQuantizer",
                activations="uint8 asymmetric per-tensor",
                unsigned_activations=True,
                u8s8_kernels=True,
            )
            for name in ("onnxruntime", "openvino")  # both through one QDQ ONNX export
        ),
    )
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantization packages print warnings and notices on import and while tracing."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        kept_logging(quiet=("torch.utils._pytree",)),  # torchao's register_constant() notice
    ):
        warnings.simplefilter("ignore")
        yield


def _backend(name: str) -> QatBackend:
    if name not in QAT_BACKENDS:
        raise InvalidArgumentError(
            f"quantization-aware training supports {', '.join(QAT_BACKENDS)}; got {name!r}"
        )
    return QAT_BACKENDS[name]


def _u8s8_kernels(name: str) -> bool:
    backend = QAT_BACKENDS.get(name)
    return backend is not None and backend.u8s8_kernels


def default_reduce_range(name: str) -> bool:
    """Whether int8 weights for runtime ``name`` (a ``quantize --method``) default to the 7-bit
    range on this machine: for u8 x s8 kernels (onnxruntime, openvino) on an x86 CPU without
    VNNI or AMX."""
    from lightnets.analysis.machine import int8_pairs_saturate

    return _u8s8_kernels(name) and int8_pairs_saturate()


def check_reduce_range(name: str, reduce_range: bool | None, flag: str) -> bool:
    """``reduce_range`` for runtime ``name`` (None: :func:`default_reduce_range`); a one-line
    error when it is asked for a runtime whose kernels do not saturate."""
    if reduce_range is None:
        return default_reduce_range(name)
    if reduce_range and not _u8s8_kernels(name):
        names = " or ".join(b.name for b in QAT_BACKENDS.values() if b.u8s8_kernels)
        raise InvalidArgumentError(
            f"{flag} applies to {names} (u8 x s8 kernels that saturate without VNNI); {name}'s "
            "int8 kernels do not saturate"
        )
    return reduce_range


def backend_quantizer(
    name: str, *, per_channel: bool = True, qat: bool = False, reduce_range: bool = False
) -> Any:
    """The runtime ``name``'s PT2E quantizer with its symmetric int8 configuration: weights
    symmetric (per channel or per tensor), activations asymmetric per tensor; ``qat`` selects
    fake-quantize modules (moving-average min/max ranges) instead of calibration observers;
    ``reduce_range`` puts the weights on the 7-bit grid :data:`REDUCED_WEIGHT_RANGE`."""
    backend = _backend(name)
    with _quiet():
        require(backend.module.split(".", 1)[0], MOBILE_EXTRA)
        module = require(backend.module, MOBILE_EXTRA)
    config = module.get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat)
    if backend.unsigned_activations:
        # The same observers and fake-quantizers, on the uint8 grid (zero point in 0..255).
        activation = dataclasses.replace(
            config.input_activation, dtype=torch.uint8, quant_min=0, quant_max=255
        )
        config = dataclasses.replace(
            config, input_activation=activation, output_activation=activation
        )
    if reduce_range:
        low, high = REDUCED_WEIGHT_RANGE
        weight = dataclasses.replace(config.weight, quant_min=low, quant_max=high)
        config = dataclasses.replace(config, weight=weight)
    return getattr(module, backend.quantizer_class)().set_global(config)


def default_qat_epochs(run_epochs: int | None) -> int:
    """The default QAT fine-tune: 10% of the original run, at least one epoch."""
    return max(1, math.ceil(0.1 * (run_epochs or 0)))


def fake_quant_modules(module: nn.Module) -> list[nn.Module]:
    """The fake-quantize modules of a (prepared) network."""
    base = _pt2e().FakeQuantizeBase
    return [m for m in module.modules() if isinstance(m, base)]


def _pt2e():
    with _quiet():
        require("torchao", MOBILE_EXTRA)
        return require("torchao.quantization.pt2e", MOBILE_EXTRA)


def _aten_names(graph_module: GraphModule) -> set[str]:
    """The aten operator names a graph calls (``conv2d`` for ``aten.conv2d.default``)."""
    return {
        str(n.target).split(".")[1]
        for n in graph_module.graph.nodes
        if n.op == "call_function" and str(n.target).startswith("aten.")
    }


@contextlib.contextmanager
def _conv_bn_rewrites_for_present_convolutions() -> Iterator[None]:
    """Speed up torchao's QAT conv-BN rewrites (``prepare_qat_pt2e`` fuses, ``convert_pt2e``
    folds) without changing what they do.

    Both try every convolution function (1-D, 2-D, transposed) in every variant, tracing each
    pattern with ``torch.export``: 102 traces in ``convert_pt2e``, about 40 s on the 2-core
    development machine for any network. Here a rewrite runs only for the convolution
    functions the graph contains (a pattern of an absent function matches nothing), and each
    traced pattern is kept for the rest of the process (a pattern is a fixed small graph).

    It also lets litert-torch 0.10's QAT annotation run with torchao 0.18: it hands the tracer
    plain pattern functions, which ``torch.export`` refuses ("Expected `mod` to be an instance of
    `torch.nn.Module`"); they are wrapped in torchao's ``WrapperModule``, as torchao wraps its own.
    """
    qat_utils = require("torchao.quantization.pt2e.qat_utils", MOBILE_EXTRA)

    def only_present(helper: Callable[..., GraphModule]) -> Callable[..., GraphModule]:
        def run(
            m: GraphModule, conv_fn: Callable, example_inputs: tuple[Any, ...], is_cuda: bool
        ) -> GraphModule:
            if getattr(conv_fn, "__name__", None) not in _aten_names(m):
                return m
            return helper(m, conv_fn, example_inputs, is_cuda)

        return run

    trace = qat_utils._get_aten_graph_module_for_pattern
    wrapper = require("torchao.quantization.pt2e.export_utils", MOBILE_EXTRA).WrapperModule

    def cached_trace(
        pattern: Callable, example_inputs: tuple[Any, ...], is_cuda: bool = False, **kwargs: Any
    ) -> GraphModule:
        if not isinstance(pattern, nn.Module):
            pattern = wrapper(pattern)
        key = _pattern_key(pattern, example_inputs, is_cuda, kwargs)
        if key is None:
            return trace(pattern, example_inputs, is_cuda, **kwargs)
        if key not in _PATTERNS:
            _PATTERNS[key] = trace(pattern, example_inputs, is_cuda, **kwargs)
        return copy.deepcopy(_PATTERNS[key])

    # (module, attribute, replacement): set with setattr, as a module's attributes are not
    # declared to the type checker.
    fuse, fold = qat_utils._fuse_conv_bn_qat_helper, qat_utils._fold_conv_bn_qat_helper
    patches: list[tuple[types.ModuleType, str, Any]] = [
        (qat_utils, "_fuse_conv_bn_qat_helper", only_present(fuse)),
        (qat_utils, "_fold_conv_bn_qat_helper", only_present(fold)),
        (qat_utils, "_get_aten_graph_module_for_pattern", cached_trace),
    ]
    litert_utils = sys.modules.get("litert_torch.quantize.pt2e_quantizer_utils")
    if litert_utils is not None and hasattr(litert_utils, "_get_aten_graph_module_for_pattern"):
        patches.append((litert_utils, "_get_aten_graph_module_for_pattern", cached_trace))
    originals = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, replacement in patches:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


_PATTERNS: dict[tuple, GraphModule] = {}


def _pattern_key(pattern: Any, example_inputs: tuple, is_cuda: bool, kwargs: dict) -> tuple | None:
    """What a traced pattern depends on: its code, the values it closes over, the shapes and
    dtypes of its example inputs. None when a closed-over value cannot be compared."""

    def part(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), value.dtype)
        if isinstance(value, (bool, int, float, str, type(None))) or callable(value):
            return value
        raise TypeError

    pattern = getattr(pattern, "fn", pattern)  # a WrapperModule: its function
    code = getattr(pattern, "__code__", None)
    if code is None:
        return None
    try:
        cells = tuple(part(c.cell_contents) for c in pattern.__closure__ or ())
        inputs = tuple(part(x) for x in example_inputs)
        extra = tuple(sorted((k, part(v)) for k, v in kwargs.items()))
    except (TypeError, ValueError):
        return None
    return code, cells, inputs, extra, is_cuda


_BATCH_NORM = torch.ops.aten.batch_norm.default
#: The ``training`` argument's position in aten.batch_norm and aten.dropout.
_TRAINING_ARG = {_BATCH_NORM: 5, torch.ops.aten.dropout.default: 2}


class QatNetwork:
    """``model`` captured and prepared for quantization-aware training against ``backend``.

    ``module`` is the prepared graph (train it like the model: it shares the model's parameters
    and BatchNorm buffers); its ``train()``/``eval()`` switch BatchNorm, dropout and the range
    observers. :meth:`freeze_batchnorm` makes BatchNorm use and keep its running statistics from
    then on. :meth:`convert` gives the int8 network the runtime lowers. ``reduce_range``: the
    weights train on the 7-bit grid (:func:`default_reduce_range`).
    """

    def __init__(
        self,
        model: nn.Module,
        backend: str,
        input_size: tuple[int, int, int],
        *,
        reduce_range: bool = False,
    ):
        self.backend = _backend(backend)
        self.reduce_range = reduce_range
        self.weights = self.backend.weights_scheme(reduce_range)
        self.quantizer = backend_quantizer(backend, qat=True, reduce_range=reduce_range)
        pt2e = _pt2e()
        quantize = require("torchao.quantization.pt2e.quantize_pt2e", MOBILE_EXTRA)
        device = next(model.parameters()).device
        example = torch.zeros(2, *input_size, device=device)  # batch 2: 1 would be specialised
        was_training = model.training
        # The capture must leave the training's random stream untouched: a resumed run
        # captures at another point of it than the run it continues.
        with _quiet(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            captured = torch.export.export(
                model.train(),
                (example,),
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            ).module()
            with _conv_bn_rewrites_for_present_convolutions():
                self.module = quantize.prepare_qat_pt2e(captured, self.quantizer)
        model.train(was_training)
        self._pt2e = pt2e
        self._model_keys = frozenset(model.state_dict())
        self.bn_frozen = False
        self._graph_training: bool | None = None
        network = self

        def train(module: nn.Module, mode: bool = True) -> nn.Module:
            nn.Module.train(module, mode)
            network._set_mode(mode)
            return module

        def eval_(module: nn.Module) -> nn.Module:
            return module.train(False)

        self.module.train = types.MethodType(train, self.module)
        self.module.eval = types.MethodType(eval_, self.module)
        self.module.train(True)

    @property
    def training(self) -> bool:
        return bool(self._graph_training)

    def _set_mode(self, training: bool) -> None:
        """Rewrite the graph's BatchNorm and dropout ``training`` arguments; observers follow."""
        bn_training = training and not self.bn_frozen
        changed = False
        for node in self.module.graph.nodes:
            index = _TRAINING_ARG.get(node.target)
            if index is None:
                continue
            value = bn_training if node.target is _BATCH_NORM else training
            if node.args[index] != value:
                args = list(node.args)
                args[index] = value
                node.args = tuple(args)
                changed = True
        if changed:
            self.module.recompile()
        self.module.apply(self._pt2e.enable_observer if training else self._pt2e.disable_observer)
        self._graph_training = training

    def freeze_batchnorm(self) -> None:
        """From now on BatchNorm normalises with, and no longer updates, its running
        statistics (Jacob et al., Section 3.2; the PyTorch and TensorFlow QAT recipes)."""
        if not self.bn_frozen:
            self.bn_frozen = True
            self._set_mode(self.training)

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The fake-quantize state (ranges, scales, flags): the prepared graph's state that the
        fp32 model does not have."""
        return {
            k: v.detach().clone()
            for k, v in self.module.state_dict().items()
            if k not in self._model_keys
        }

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`extra_state` (the fp32 weights are the model's, loaded with it)."""
        full = {**self.module.state_dict(), **state}
        self.module.load_state_dict(full)  # sizes the per-channel ranges and scales
        # ... but leaves some observers' ``eps`` (their smallest scale) at its default: every
        # stored buffer is copied again, so a resumed run continues with the very same ranges.
        buffers = dict(self.module.named_buffers())
        with torch.no_grad():
            for name, value in state.items():
                if name in buffers and buffers[name].shape == value.shape:
                    buffers[name].copy_(value)
        self._set_mode(self.training)  # the observers' flags follow the mode, not the file

    def convert(self, *, fold_quantize: bool = True) -> nn.Module:
        """The int8 network (quantize/dequantize pairs around int8 weights), in eval mode; the
        QAT network itself is left as it is. ``fold_quantize`` False keeps the weights' quantize
        ops (litert-torch lowers them itself)."""
        quantize = require("torchao.quantization.pt2e.quantize_pt2e", MOBILE_EXTRA)
        with _quiet():
            prepared = copy.deepcopy(self.module)
        prepared.apply(self._pt2e.disable_observer)  # on its fake-quantize modules
        # convert_pt2e folds the QAT conv-BN pattern as traced in training mode.
        bn_nodes = [n for n in prepared.graph.nodes if n.target is _BATCH_NORM]
        for node in bn_nodes:
            args = list(node.args)
            args[5] = True
            node.args = tuple(args)
        prepared.recompile()
        with _quiet():
            with _conv_bn_rewrites_for_present_convolutions():
                converted = quantize.convert_pt2e(prepared, fold_quantize=fold_quantize)
            self._pt2e.move_exported_model_to_eval(converted)
            self._pt2e.allow_exported_model_train_eval(converted)  # evaluate() calls .eval()
        return converted


def int8_from_checkpoint(model: nn.Module, state: dict[str, Any], where: str) -> nn.Module:
    """The int8 network of a checkpoint trained with ``--qat-epochs`` (its fp32 weights already
    in ``model``): the recorded fake-quantize state, converted as the runtime will run it."""
    from lightnets.errors import CheckpointError

    record = state.get("qat")
    if not isinstance(record, dict) or not isinstance(record.get("state"), dict):
        raise InvalidArgumentError(
            f"{where} was not trained quantization-aware (no --qat-epochs): its int8 accuracy "
            "is measured by `lightnets quantize`"
        )
    if record.get("backend") not in QAT_BACKENDS:
        raise CheckpointError(f"{where}: unknown QAT backend {record.get('backend')!r}")
    input_size = tuple(int(v) for v in (state.get("dataset") or {}).get("input_size", ()))
    if len(input_size) != 3:
        raise CheckpointError(f"{where}: a QAT record needs the data set's input size")
    reduce_range = bool(record.get("reduce_range", False))
    network = QatNetwork(model, record["backend"], input_size, reduce_range=reduce_range)
    try:
        network.load_extra_state(record["state"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{where}: its QAT state does not fit the model ({first_line(exc)})"
        ) from exc
    return network.convert()
