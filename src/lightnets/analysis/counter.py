"""The profiler: one forward pass, one row per executed ATen operation.

The forward pass runs under a :class:`~torch.utils._python_dispatch.TorchDispatchMode` (the
mechanism of PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``), so every operation is
seen exactly as PyTorch executes it, whatever Python code produced it. Global module hooks (the
technique of ``torch.utils.module_tracker.ModuleTracker``), removed afterwards, attribute each
operation to the innermost module that ran it. Composite operations are decomposed exactly as
``FlopCounterMode`` decomposes them, so both see the same leaf operations and
``Profile.macs == FlopCounterMode total / 2`` holds for every model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lightnets.analysis.kinds import OpKind
from lightnets.analysis.report import LayerRecord, Profile
from lightnets.errors import InvalidArgumentError, check_int, first_line

__all__ = ["HANDLERS", "OpCall", "profile", "register_op"]

# ATen operation names (overload packet names, in-place "_" suffix stripped) by kind.
_CONV = {
    "convolution",
    "_convolution",
    "cudnn_convolution",
    "convolution_overrideable",
    "_slow_conv2d_forward",
}
_MATMUL = {"mm", "addmm", "bmm", "baddbmm"}
_BATCHNORM = {
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training",
    "cudnn_batch_norm",
    "miopen_batch_norm",
}
_NORM = {"native_layer_norm", "native_group_norm"}
_ACTIVATION = {
    "relu",
    "relu6",
    "hardtanh",
    "clamp",
    "clamp_min",
    "clamp_max",
    "threshold",
    "sigmoid",
    "tanh",
    "silu",
    "gelu",
    "hardswish",
    "hardsigmoid",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "mish",
    "softplus",
    "_prelu_kernel",
    "exp",
    "neg",
    "abs",
}
_ADD = {"add", "sub", "rsub"}
_MUL = {"mul", "div"}
_MAXPOOL = {
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
}
_AVGPOOL = {"avg_pool1d", "avg_pool2d", "avg_pool3d"}
_ADAPTIVE_POOL = {
    "_adaptive_avg_pool2d",
    "_adaptive_avg_pool3d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min"}
_SOFTMAX = {"_softmax", "_log_softmax"}
_CONCAT = {"cat", "stack"}
_COPY = {"clone", "_to_copy", "copy", "contiguous"}
_ALLOC_EMPTY = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
_ALLOC_FILL = {
    "zeros",
    "ones",
    "full",
    "zeros_like",
    "ones_like",
    "full_like",
    "new_zeros",
    "new_ones",
    "new_full",
    "scalar_tensor",
    "lift_fresh",
    "lift_fresh_copy",
    "fill",
    "zero",
}
# Views that the schema does not mark as views (their output still aliases the input).
_EXTRA_VIEWS = {"_unsafe_view", "lift_fresh"}
_DROPOUT = {"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout"}


def _op_name(func: torch._ops.OpOverload) -> str:
    """The operation's name without namespace, overload and in-place suffix: aten.relu_ -> relu."""
    name = func._overloadpacket.__name__
    if name.endswith("_") and not name.endswith("__"):
        return name[:-1]
    return name


def _unique_elements(t: torch.Tensor) -> int:
    """Elements a kernel actually touches: broadcast (stride-0) dimensions count once."""
    if t.numel() == 0:
        return 0
    return math.prod(size for size, stride in zip(t.shape, t.stride(), strict=True) if stride)


def _nbytes(t: torch.Tensor) -> int:
    return _unique_elements(t) * t.element_size()


def _storage_id(t: torch.Tensor) -> int:
    """Identity of the storage behind ``t`` (its StorageImpl address: unique among live
    storages, shared by views, and defined on every device, the meta device included)."""
    return t.untyped_storage()._cdata


def _key(t: torch.Tensor) -> tuple[int, int, int]:
    """Identity of the elements ``t`` covers: a parameter and its transposed view share it."""
    return (_storage_id(t), int(t.storage_offset()), t.numel())


def _is_channel_shuffle(t: torch.Tensor) -> bool:
    """True for the (N, g, C/g, H, W) -> (N, C/g, g, H, W) transposed view that
    ``channel_shuffle`` copies (ShuffleNet V1, Section 3.1)."""
    if t.dim() != 5:
        return False
    strides = t.stride()
    order = [d for d in sorted(range(5), key=lambda d: (-strides[d], d)) if t.shape[d] != 1]
    return order == [d for d in (0, 2, 1, 3, 4) if t.shape[d] != 1]


def _is_permuted(t: torch.Tensor) -> bool:
    strides = t.stride()
    order = [d for d in sorted(range(t.dim()), key=lambda d: (-strides[d], d)) if t.shape[d] != 1]
    return order != [d for d in range(t.dim()) if t.shape[d] != 1]


def _ints(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


# -- the dispatch table: one small handler per family of ATen operations -------------------------
Key = tuple[int, int, int]


@dataclass
class OpCall:
    """One executed operation as a handler sees it.

    ``x`` is the first activation input (parameters and buffers skipped), ``y`` the first
    output; ``new_params`` the parameters this operation is the first to read; ``params`` every
    parameter of the model (by element identity, see :func:`_key`).
    """

    name: str
    args: tuple[Any, ...]
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    x: torch.Tensor | None
    y: torch.Tensor | None
    new_params: set[Key]
    params: set[Key]

    @property
    def activation(self) -> torch.Tensor:
        """``x``, for the handlers of operations that always read one."""
        if self.x is None:
            raise RuntimeError(f"aten.{self.name} was called without an input tensor")
        return self.x

    @property
    def output(self) -> torch.Tensor:
        """``y``, for the handlers of operations that always write one."""
        if self.y is None:
            raise RuntimeError(f"aten.{self.name} returned no tensor")
        return self.y


#: A handler fills the row's geometry and work for its operation and returns the row's kind.
OpHandler = Callable[[LayerRecord, OpCall], OpKind]

#: ATen operation name (overload packet, in-place suffix stripped) -> its handler.
HANDLERS: dict[str, OpHandler] = {}


def register_op(*names: str) -> Callable[[OpHandler], OpHandler]:
    """Register a handler for the ATen operations ``names``, as PyTorch's
    ``torch.utils.flop_counter.register_flop_formula`` registers a FLOP formula per operation."""

    def decorate(handler: OpHandler) -> OpHandler:
        for name in names:
            if name in HANDLERS:
                raise ValueError(f"ATen operation {name!r} already has a handler")
            HANDLERS[name] = handler
        return handler

    return decorate


@register_op(*_CONV)
def _conv(row: LayerRecord, call: OpCall) -> OpKind:
    args, y = call.args, call.outputs[0]
    x, w, b = args[0], args[1], args[2] if len(args) > 2 else None
    transposed = bool(args[6]) if len(args) > 6 else False
    if len(args) > 8 and isinstance(args[8], int):
        groups = args[8]
    else:
        groups = x.shape[1] // w.shape[1] if not transposed else x.shape[1] // w.shape[0]
    kernel = tuple(int(k) for k in w.shape[2:])
    row.kernel = kernel
    row.stride = _ints(args[3]) if len(args) > 3 else None
    row.padding = _ints(args[4]) if len(args) > 4 else None
    row.dilation = _ints(args[5]) if len(args) > 5 else None
    row.groups = int(groups)
    row.weight_shape = tuple(int(s) for s in w.shape)
    row.has_bias = b is not None
    row.weight_params = w.numel() if _key(w) in call.new_params else 0
    spatial = (x if transposed else y).shape[2:]
    # w is (c_out, c_in / g, k...) or, transposed, (c_in, c_out / g, k...).
    row.macs = x.shape[0] * math.prod(spatial) * math.prod(kernel) * w.shape[0] * w.shape[1]
    row.elementwise_ops = y.numel() if b is not None else 0
    if transposed:
        return OpKind.CONV_TRANSPOSE
    if groups == 1:
        return OpKind.POINTWISE_CONV if all(k == 1 for k in kernel) else OpKind.CONV
    return OpKind.DEPTHWISE_CONV if groups == int(x.shape[1]) else OpKind.GROUP_CONV


@register_op(*_MATMUL)
def _matmul(row: LayerRecord, call: OpCall) -> OpKind:
    args, y = call.args, call.outputs[0]
    if call.name in ("addmm", "baddbmm"):
        bias, a, b = args[0], args[1], args[2]
    else:
        bias, a, b = None, args[0], args[1]
    batch = a.shape[0] if call.name in ("bmm", "baddbmm") else 1
    m, k = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    row.macs = int(batch * m * k * n)
    row.in_channels = int(k)
    row.out_channels = int(n)
    row.has_bias = bias is not None
    row.elementwise_ops = y.numel() if bias is not None else 0
    weight_key = _key(b)
    if weight_key not in call.params:
        return OpKind.MATMUL
    # Stored as (out_features, in_features), as nn.Linear does; b is its transpose.
    row.weight_shape = (int(n), int(k))
    row.weight_params = b.numel() if weight_key in call.new_params else 0
    row.input_shape = tuple(a.shape)
    return OpKind.LINEAR


def _per_output_element(kind: OpKind) -> OpHandler:
    """Operations costing one element-wise operation per output element."""

    def handler(row: LayerRecord, call: OpCall) -> OpKind:
        row.elementwise_ops = call.output.numel()
        return kind

    return handler


def _window_pool(kind: OpKind) -> OpHandler:
    """Max and average pooling: the window's size of work per output element."""

    def handler(row: LayerRecord, call: OpCall) -> OpKind:
        args = call.args
        window = _ints(args[1])
        row.kernel = window
        row.stride = _ints(args[2]) if len(args) > 2 and args[2] else window
        row.padding = _ints(args[3]) if len(args) > 3 else None
        row.elementwise_ops = call.output.numel() * math.prod(window or (1,))
        return kind

    return handler


def _no_work(kind: OpKind) -> OpHandler:
    """Operations that move bytes (or allocate) but compute nothing."""
    return lambda row, call: kind


@register_op(*_ADAPTIVE_POOL, *_REDUCE)
def _reduce(row: LayerRecord, call: OpCall) -> OpKind:
    """Adaptive pooling and reductions: one operation per input element."""
    x, y = call.activation, call.output
    spatial_ones = y.dim() == x.dim() and all(s == 1 for s in y.shape[2:])
    row.elementwise_ops = x.numel()
    if spatial_ones or (x.dim() == 4 and y.dim() == 2):
        return OpKind.GLOBAL_POOL
    return OpKind.REDUCE


@register_op(*_COPY)
def _copy(row: LayerRecord, call: OpCall) -> OpKind:
    """A copy; ShuffleNet's channel shuffle is the copy of a transposed 5-d view."""
    source = call.inputs[-1] if call.name == "copy" else call.inputs[0]
    if _is_channel_shuffle(source):
        return OpKind.CHANNEL_SHUFFLE
    if _is_permuted(source):
        return OpKind.PERMUTE_COPY
    return OpKind.COPY


for _names, _handler in (
    (_BATCHNORM, _per_output_element(OpKind.BATCHNORM)),
    (_NORM, _per_output_element(OpKind.NORM)),
    (_ACTIVATION, _per_output_element(OpKind.ACTIVATION)),
    (_ADD, _per_output_element(OpKind.ADD)),
    (_MUL, _per_output_element(OpKind.MUL)),
    (_SOFTMAX, _per_output_element(OpKind.SOFTMAX)),
    (_MAXPOOL, _window_pool(OpKind.MAXPOOL)),
    (_AVGPOOL, _window_pool(OpKind.AVGPOOL)),
    (_CONCAT, _no_work(OpKind.CONCAT)),
    (_ALLOC_EMPTY | _ALLOC_FILL, _no_work(OpKind.ALLOC)),
):
    register_op(*sorted(_names))(_handler)


class _Counter:
    """Collects the rows of one forward pass; shared by the dispatch mode and the hooks."""

    def __init__(self, model: nn.Module) -> None:
        self.names: dict[int, str] = {}
        for name, module in model.named_modules():
            self.names.setdefault(id(module), name)
        # Parameters and buffers by element identity, and the storages that hold them.
        self.params: set[Key] = set()
        self.buffers: set[Key] = set()
        self.weight_storages: set[int] = set()
        for p in model.parameters():
            if p.numel():
                self.params.add(_key(p))
                self.weight_storages.add(_storage_id(p))
        for b in model.buffers():
            if b.numel():
                self.buffers.add(_key(b))
                self.weight_storages.add(_storage_id(b))
        self.seen_params: set[Key] = set()
        self.stack: list[tuple[str, str]] = [("", type(model).__name__)]
        self.rows: list[LayerRecord] = []
        self.unknown: dict[str, int] = {}
        # Liveness of activation storages: storage -> record; record = [first, last, bytes].
        self.current: dict[int, int] = {}
        self.lifetimes: list[list[int]] = []

    # -- module attribution -------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, _args: Any) -> None:
        name = self.names.get(id(module))
        if name is None:  # a module outside the model (built inside forward): keep the parent
            name = self.stack[-1][0]
        self.stack.append((name, type(module).__name__))

    def post_hook(self, _module: nn.Module, _args: Any, _out: Any) -> None:
        if len(self.stack) > 1:
            self.stack.pop()

    # -- liveness -----------------------------------------------------------------------------
    def add_storage(self, t: torch.Tensor, step: int) -> None:
        ptr = _storage_id(t)
        self.current[ptr] = len(self.lifetimes)
        self.lifetimes.append([step, step, t.untyped_storage().nbytes()])

    def touch(self, t: torch.Tensor, step: int) -> None:
        ptr = _storage_id(t)
        if ptr in self.weight_storages or t.untyped_storage().nbytes() == 0:
            return
        if ptr not in self.current:
            self.add_storage(t, step)
        self.lifetimes[self.current[ptr]][1] = step

    def track_liveness(
        self, inputs: list[torch.Tensor], written: list[torch.Tensor], step: int
    ) -> None:
        """Inputs are used at ``step``; outputs written into a new storage start living there."""
        input_ptrs = set()
        for t in inputs:
            self.touch(t, step)
            input_ptrs.add(_storage_id(t))
        for t in written:
            if t.untyped_storage().nbytes() == 0:
                continue
            if _storage_id(t) in input_ptrs:
                self.touch(t, step)
            else:
                self.add_storage(t, step)

    def peak_activation_bytes(self, outputs: Sequence[torch.Tensor]) -> int:
        end = len(self.rows)
        for t in outputs:
            self.touch(t, end)
        events: dict[int, int] = {}
        for first, last, nbytes in self.lifetimes:
            events[first] = events.get(first, 0) + nbytes
            events[last + 1] = events.get(last + 1, 0) - nbytes
        live = peak = 0
        for step in sorted(events):
            live += events[step]
            peak = max(peak, live)
        return peak

    # -- one operation ------------------------------------------------------------------------
    def first_reads(self, inputs: list[torch.Tensor]) -> set[Key]:
        """The parameters among ``inputs`` that no earlier operation read."""
        new: set[Key] = set()
        for t in inputs:
            key = _key(t)
            if key in self.params and key not in self.seen_params:
                self.seen_params.add(key)
                new.add(key)
        return new

    def record(
        self,
        func: torch._ops.OpOverload,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        out: Any,
    ) -> None:
        name = _op_name(func)
        step = len(self.rows)
        inputs = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        outputs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        is_view = func.is_view or name in _EXTRA_VIEWS
        new_params = set() if is_view else self.first_reads(inputs)
        # BatchNorm's saved mean and inverse std are empty in eval on most backends (not
        # on all): only the normalised tensor counts, for traffic and for liveness.
        written = outputs[:1] if name in _BATCHNORM else outputs
        self.track_liveness(inputs, written, step)
        weights = self.params | self.buffers
        activations = [t for t in inputs if _key(t) not in weights]
        call = OpCall(
            name=name,
            args=args,
            inputs=inputs,
            outputs=outputs,
            x=activations[0] if activations else (inputs[0] if inputs else None),
            y=outputs[0] if outputs else None,
            new_params=new_params,
            params=self.params,
        )
        row = self.new_row(func, step, call, written, moves_bytes=not is_view)
        row.kind = OpKind.VIEW if is_view else self.classify(func, row, call)
        self.rows.append(row)

    def new_row(
        self,
        func: torch._ops.OpOverload,
        step: int,
        call: OpCall,
        written: list[torch.Tensor],
        *,
        moves_bytes: bool,
    ) -> LayerRecord:
        """The row's attribution, shapes, parameters and memory traffic (kind still unknown)."""
        x, y = call.x, call.y
        written_bytes = memory = 0
        if moves_bytes and call.name not in _ALLOC_EMPTY:
            written_bytes = sum(_nbytes(t) for t in written)
            memory = sum(_nbytes(t) for t in call.inputs) + written_bytes
        module, module_type = self.stack[-1]
        return LayerRecord(
            index=step,
            module=module,
            module_type=module_type,
            op=str(func),
            kind=OpKind.OTHER,
            input_shape=tuple(x.shape) if x is not None else (),
            output_shape=tuple(y.shape) if y is not None else (),
            params=sum(key[2] for key in call.new_params),  # key[2]: the element count
            memory_access=memory,
            output_bytes=written_bytes,
            dtype=str(y.dtype).removeprefix("torch.") if y is not None else "",
            in_channels=int(x.shape[1]) if x is not None and x.dim() >= 2 else None,
            out_channels=int(y.shape[1]) if y is not None and y.dim() >= 2 else None,
        )

    def classify(self, func: torch._ops.OpOverload, row: LayerRecord, call: OpCall) -> OpKind:
        """Run the operation's registered handler; an operation without one is ``unknown``."""
        handler = HANDLERS.get(call.name)
        if handler is None:
            self.unknown[str(func)] = self.unknown.get(str(func), 0) + 1
            return OpKind.UNKNOWN
        return handler(row, call)


class _RecordingMode(TorchDispatchMode):
    def __init__(self, counter: _Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _op_name(func)
        if name in _DROPOUT and len(args) > 2 and args[2] is False:
            # Dropout in eval is the identity. Under torch.no_grad it never reaches the
            # dispatcher; under inference_mode it would show up as a copy. Same rows either way.
            return args[0]
        # Decompose composite operations exactly as FlopCounterMode does.
        with self:
            decomposed = func.decompose(*args, **kwargs)
        if decomposed is not NotImplemented:
            return decomposed
        out = func(*args, **kwargs)
        self.counter.record(func, args, kwargs, out)
        return out


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device, torch.float32
    return torch.device("cpu"), torch.float32


def _input_shape(input_size: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(input_size, bool):
        raise InvalidArgumentError(f"input_size must be (C, H, W) or an int, got {input_size!r}")
    if isinstance(input_size, int):
        shape: tuple[Any, ...] = (3, input_size, input_size)
    else:
        try:
            shape = tuple(input_size)
        except TypeError:
            raise InvalidArgumentError(
                f"input_size must be (C, H, W) or an int, got {input_size!r}"
            ) from None
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise InvalidArgumentError(f"input_size must be a tuple of ints, got {input_size!r}")
    if any(s < 1 for s in shape):
        raise InvalidArgumentError(
            f"input size {'x'.join(map(str, shape))} is empty: every dimension must be >= 1"
        )
    return shape


def total_stride(model: nn.Module) -> int | None:
    """Downsampling factor of a lightnets model's trunk (32 for the ImageNet variants).

    Found by running ``forward_features`` on one image of ``default_input_size``; ``None`` for
    models without those attributes.
    """
    features = getattr(model, "forward_features", None)
    default = getattr(model, "default_input_size", None)
    if features is None or default is None:
        return None
    device, dtype = _model_device_dtype(model)
    with _eval_no_grad(model):
        fmap = features(torch.zeros((1, *default), device=device, dtype=dtype))
    if fmap.dim() != 4 or fmap.shape[-1] == 0:
        return None
    return max(1, default[-1] // fmap.shape[-1])


class _eval_no_grad:
    """Eval mode and no_grad for the duration; every module's own training flag restored."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.grad = torch.no_grad()
        self.grad.__enter__()
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, training in self.modes:
            module.training = training
        self.grad.__exit__(*exc)


def _model_name(model: nn.Module) -> str:
    hparams = getattr(model, "hparams", None)
    if isinstance(hparams, dict) and isinstance(hparams.get("name"), str):
        return hparams["name"]
    return type(model).__name__


def _check_fits(model: nn.Module, shape: tuple[int, ...], name: str) -> None:
    """Refuse an input smaller than a lightnets model's total stride, naming the minimum."""
    default = getattr(model, "default_input_size", None)
    if default is None or len(shape) != 3 or min(shape[1:]) >= max(default[1:]):
        return
    stride = total_stride(model)
    if stride is not None and min(shape[1:]) < stride:
        variant = getattr(model, "hparams", {}).get("variant")
        which = f"{name} ({variant} variant)" if variant else name
        raise InvalidArgumentError(
            f"input size {'x'.join(map(str, shape))} is too small for {which}: it downsamples "
            f"by {stride}, so height and width must be >= {stride}"
        )


def _run_recorded(model: nn.Module, x: torch.Tensor, counter: _Counter, name: str) -> Any:
    """One forward pass in eval mode under the recording mode, the module hooks removed after."""
    counter.add_storage(x, -1)
    pre = register_module_forward_pre_hook(counter.pre_hook)
    post = register_module_forward_hook(counter.post_hook, always_call=True)
    try:
        with _eval_no_grad(model), _RecordingMode(counter):
            return model(x)
    except RuntimeError as exc:
        reason = first_line(exc)
        size = "x".join(map(str, x.shape))
        raise InvalidArgumentError(f"{name} cannot run on input {size}: {reason}") from exc
    finally:
        pre.remove()
        post.remove()


def profile(
    model: nn.Module,
    input_size: int | Sequence[int] = (3, 224, 224),
    *,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Profile:
    """Profile one forward pass of ``model`` on a random input of ``(batch_size, *input_size)``.

    Works for any ``nn.Module``. The model is left exactly as it was found: the pass runs in eval
    mode under ``torch.no_grad`` (so BatchNorm running statistics do not move), every module's
    training flag is restored, and the temporary hooks are removed.

    Args:
        model: the network.
        input_size: ``(C, H, W)``, or an int ``S`` for ``(3, S, S)``.
        batch_size: images per forward pass; every count scales with it.
        device: where the input is created; default: the device of the model's parameters.
        dtype: input dtype; default: the dtype of the model's floating-point parameters.

    Returns:
        A :class:`~lightnets.analysis.report.Profile`: one row per executed operation and totals.

    Raises:
        InvalidArgumentError: an empty input size, one smaller than a lightnets model's total
            stride, or any other input the forward pass rejects.
    """
    shape = _input_shape(input_size)
    check_int("batch_size", batch_size, minimum=1)
    model_device, model_dtype = _model_device_dtype(model)
    device = torch.device(device) if device is not None else model_device
    dtype = dtype if dtype is not None else model_dtype
    name = _model_name(model)
    _check_fits(model, shape, name)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, *shape), generator=generator, dtype=dtype).to(device)
    counter = _Counter(model)
    out = _run_recorded(model, x, counter, name)
    if counter.unknown:
        listed = ", ".join(f"{op} (x{n})" for op, n in sorted(counter.unknown.items()))
        warnings.warn(
            f"lightnets.profile: operations not counted (listed as kind 'unknown'): {listed}",
            stacklevel=2,
        )
    outputs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
    return Profile(
        model=name,
        input_shape=(batch_size, *shape),
        dtype=str(dtype).removeprefix("torch."),
        device=str(device),
        rows=counter.rows,
        params=sum(p.numel() for p in model.parameters()),
        peak_activation_bytes=counter.peak_activation_bytes(outputs),
        hparams=dict(getattr(model, "hparams", None) or {}),
    )
