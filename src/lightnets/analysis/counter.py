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
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lightnets.analysis.report import LayerRecord, Profile
from lightnets.errors import InvalidArgumentError

__all__ = ["profile"]

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
#: Operations costing one element-wise operation per output element, and the kind they report.
_PER_OUTPUT_ELEMENT = {
    op: kind
    for ops, kind in (
        (_BATCHNORM, "batchnorm"),
        (_NORM, "norm"),
        (_ACTIVATION, "activation"),
        (_ADD, "add"),
        (_MUL, "mul"),
        (_SOFTMAX, "softmax"),
    )
    for op in ops
}
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
    return (_storage_id(t), t.storage_offset(), t.numel())


def _is_channel_shuffle(t: torch.Tensor) -> bool:
    """True for the (N, g, C/g, H, W) -> (N, C/g, g, H, W) transposed view that
    ``channel_shuffle`` copies (ShuffleNet V1, Section 3.1)."""
    if t.dim() != 5:
        return False
    order = [d for d in sorted(range(5), key=lambda d: (-t.stride(d), d)) if t.shape[d] != 1]
    return order == [d for d in (0, 2, 1, 3, 4) if t.shape[d] != 1]


def _is_permuted(t: torch.Tensor) -> bool:
    order = [d for d in sorted(range(t.dim()), key=lambda d: (-t.stride(d), d)) if t.shape[d] != 1]
    return order != [d for d in range(t.dim()) if t.shape[d] != 1]


def _ints(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


class _Counter:
    """Collects the rows of one forward pass; shared by the dispatch mode and the hooks."""

    def __init__(self, model: nn.Module) -> None:
        self.names: dict[int, str] = {}
        for name, module in model.named_modules():
            self.names.setdefault(id(module), name)
        # Parameters and buffers by element identity, and the storages that hold them.
        self.params: set[tuple[int, int, int]] = set()
        self.buffers: set[tuple[int, int, int]] = set()
        self.weight_storages: set[int] = set()
        for p in model.parameters():
            if p.numel():
                self.params.add(_key(p))
                self.weight_storages.add(_storage_id(p))
        for b in model.buffers():
            if b.numel():
                self.buffers.add(_key(b))
                self.weight_storages.add(_storage_id(b))
        self.seen_params: set[tuple[int, int, int]] = set()
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

        params = 0
        new_params: set[tuple[int, int, int]] = set()
        if not is_view:
            for t in inputs:
                key = _key(t)
                if key in self.params and key not in self.seen_params:
                    self.seen_params.add(key)
                    new_params.add(key)
                    params += t.numel()

        # BatchNorm's saved mean and inverse std are empty in eval on most backends (not
        # on all): only the normalised tensor counts, for traffic and for liveness.
        written_outputs = outputs[:1] if name in _BATCHNORM else outputs
        input_ptrs = set()
        for t in inputs:
            self.touch(t, step)
            input_ptrs.add(_storage_id(t))
        for t in written_outputs:
            if t.untyped_storage().nbytes() == 0:
                continue
            if _storage_id(t) in input_ptrs:
                self.touch(t, step)
            else:
                self.add_storage(t, step)

        activations = [
            t for t in inputs if _key(t) not in self.params and _key(t) not in self.buffers
        ]
        x = activations[0] if activations else (inputs[0] if inputs else None)
        y = outputs[0] if outputs else None
        if is_view or name in _ALLOC_EMPTY:
            memory = 0
            written = 0
        else:
            written = sum(_nbytes(t) for t in written_outputs)
            memory = sum(_nbytes(t) for t in inputs) + written

        module, module_type = self.stack[-1]
        row = LayerRecord(
            index=step,
            module=module,
            module_type=module_type,
            op=str(func),
            kind="other",
            input_shape=tuple(x.shape) if x is not None else (),
            output_shape=tuple(y.shape) if y is not None else (),
            params=params,
            memory_access=memory,
            output_bytes=written,
            dtype=str(y.dtype).removeprefix("torch.") if y is not None else "",
        )
        if x is not None and x.dim() >= 2:
            row.in_channels = int(x.shape[1])
        if y is not None and y.dim() >= 2:
            row.out_channels = int(y.shape[1])

        if is_view:
            row.kind = "view"
        elif name in _CONV:
            self._conv(row, args, outputs[0], new_params)
        elif name in _MATMUL:
            self._matmul(row, name, args, outputs[0], new_params)
        elif name in _PER_OUTPUT_ELEMENT:
            row.kind = _PER_OUTPUT_ELEMENT[name]
            row.elementwise_ops = y.numel()
        elif name in _MAXPOOL or name in _AVGPOOL:
            row.kind = "maxpool" if name in _MAXPOOL else "avgpool"
            window = _ints(args[1])
            row.kernel = window
            row.stride = _ints(args[2]) if len(args) > 2 and args[2] else window
            row.padding = _ints(args[3]) if len(args) > 3 else None
            row.elementwise_ops = y.numel() * math.prod(window or (1,))
        elif name in _ADAPTIVE_POOL or name in _REDUCE:
            spatial_ones = y.dim() == x.dim() and all(s == 1 for s in y.shape[2:])
            global_pool = spatial_ones or (x.dim() == 4 and y.dim() == 2)
            row.kind = "global_pool" if global_pool else "reduce"
            row.elementwise_ops = x.numel()
        elif name in _CONCAT:
            row.kind = "concat"
        elif name in _COPY:
            source = inputs[-1] if name == "copy" else inputs[0]
            if _is_channel_shuffle(source):
                row.kind = "channel_shuffle"
            elif _is_permuted(source):
                row.kind = "permute_copy"
            else:
                row.kind = "copy"
        elif name in _ALLOC_EMPTY or name in _ALLOC_FILL:
            row.kind = "alloc"
        else:
            row.kind = "unknown"
            self.unknown[str(func)] = self.unknown.get(str(func), 0) + 1
        self.rows.append(row)

    def _conv(
        self,
        row: LayerRecord,
        args: tuple[Any, ...],
        y: torch.Tensor,
        new_params: set[tuple[int, int, int]],
    ) -> None:
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
        row.weight_params = w.numel() if _key(w) in new_params else 0
        spatial = (x if transposed else y).shape[2:]
        # w is (c_out, c_in / g, k...) or, transposed, (c_in, c_out / g, k...).
        row.macs = x.shape[0] * math.prod(spatial) * math.prod(kernel) * w.shape[0] * w.shape[1]
        row.elementwise_ops = y.numel() if b is not None else 0
        c_in = int(x.shape[1])
        if transposed:
            row.kind = "conv_transpose"
        elif groups == 1:
            row.kind = "pointwise_conv" if all(k == 1 for k in kernel) else "conv"
        elif groups == c_in:
            row.kind = "depthwise_conv"
        else:
            row.kind = "group_conv"

    def _matmul(
        self,
        row: LayerRecord,
        name: str,
        args: tuple[Any, ...],
        y: torch.Tensor,
        new_params: set[tuple[int, int, int]],
    ) -> None:
        if name in ("addmm", "baddbmm"):
            bias, a, b = args[0], args[1], args[2]
        else:
            bias, a, b = None, args[0], args[1]
        batch = a.shape[0] if name in ("bmm", "baddbmm") else 1
        m, k = a.shape[-2], a.shape[-1]
        n = b.shape[-1]
        row.macs = int(batch * m * k * n)
        row.in_channels = int(k)
        row.out_channels = int(n)
        row.has_bias = bias is not None
        row.elementwise_ops = y.numel() if bias is not None else 0
        weight_key = _key(b)
        if weight_key in self.params:
            row.kind = "linear"
            # Stored as (out_features, in_features), as nn.Linear does; b is its transpose.
            row.weight_shape = (int(n), int(k))
            row.weight_params = b.numel() if weight_key in new_params else 0
            row.input_shape = tuple(a.shape)
        else:
            row.kind = "matmul"


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    model_device, model_dtype = _model_device_dtype(model)
    device = torch.device(device) if device is not None else model_device
    dtype = dtype if dtype is not None else model_dtype
    name = _model_name(model)
    size = "x".join(map(str, shape))

    default = getattr(model, "default_input_size", None)
    if default is not None and len(shape) == 3 and min(shape[1:]) < max(default[1:]):
        stride = total_stride(model)
        if stride is not None and min(shape[1:]) < stride:
            variant = getattr(model, "hparams", {}).get("variant")
            which = f"{name} ({variant} variant)" if variant else name
            raise InvalidArgumentError(
                f"input size {size} is too small for {which}: it downsamples by {stride}, "
                f"so height and width must be >= {stride}"
            )

    generator = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, *shape), generator=generator, dtype=dtype).to(device)
    counter = _Counter(model)
    counter.add_storage(x, -1)
    pre = register_module_forward_pre_hook(counter.pre_hook)
    post = register_module_forward_hook(counter.post_hook, always_call=True)
    try:
        with _eval_no_grad(model), _RecordingMode(counter):
            out = model(x)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidArgumentError(
            f"{name} cannot run on input {batch_size}x{size}: {reason}"
        ) from exc
    finally:
        pre.remove()
        post.remove()

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
    )
