"""What :func:`lightnets.profile` returns: per-operation rows and totals.

Counting only: the tables, CSV, Markdown and JSON text made from them are in
:mod:`lightnets.analysis.render`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lightnets.analysis.kinds import MAC_KINDS, OpKind

__all__ = [
    "CONVENTIONS",
    "LAYER_TYPES",
    "SHORT_CONVENTIONS",
    "LayerRecord",
    "Profile",
    "TypeShare",
    "format_bytes",
    "format_count",
]

#: What each total counts. Printed with every table, stored in every JSON.
CONVENTIONS: dict[str, str] = {
    "params": "all parameters of the model (model.parameters(), each counted once)",
    "macs": (
        "multiply-accumulates of convolutions and linear layers (matrix products), what the "
        "papers call FLOPs or mult-adds; bias adds are not MACs (see elementwise_ops)"
    ),
    "flops": "2 x macs (one multiply and one add per MAC)",
    "memory_access": (
        "bytes read (input activations, weights, buffers) plus bytes written (outputs), summed "
        "over operations; views are free (the ShuffleNet V2 paper's memory access cost)"
    ),
    "elementwise_ops": (
        "work outside the MACs, one per output element for BatchNorm (a folded scale and "
        "shift), activations, adds, multiplies, softmax and bias adds; pooling: window size "
        "per output element; global pooling and means: one per input element"
    ),
    "peak_activation_bytes": (
        "largest total size of activation tensors (input included, parameters and buffers "
        "excluded) alive at once, each freed right after its last use"
    ),
}

#: The same, in a few words, for terminal tables.
SHORT_CONVENTIONS: dict[str, str] = {
    "params": "all parameters of the model",
    "macs": "multiply-accumulates, conv + linear (the papers' FLOPs)",
    "flops": "2 x MACs",
    "memory_access": "bytes read + written by every operation",
    "elementwise_ops": "BN, activations, adds, pooling, bias adds (not MACs)",
    "peak_activation_bytes": "most activation bytes alive at once",
}

#: by_type() buckets, in the order of MobileNets' Table 2.
LAYER_TYPES: dict[str, str] = {
    "conv1x1": "pointwise 1x1 convolution",
    "gconv1x1": "grouped 1x1 convolution",
    "dw3x3": "depthwise 3x3 convolution",
    "conv3x3": "standard 3x3 convolution",
    "fc": "fully connected",
    "other": "other convolutions and matrix products",
}


def format_count(value: float) -> str:
    """569032000 -> '569.03M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:g}"


def format_bytes(value: float) -> str:
    """Decimal units: 1 MB = 10^6 bytes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:g} B"


@dataclass
class LayerRecord:
    """One executed ATen operation.

    ``module`` is the dotted path of the innermost module that ran it (``""`` for the model's
    own forward). ``params`` counts the parameters this operation is the first to read (a conv's
    weight and bias, a BatchNorm's scale and shift); ``weight_params`` the weight tensor alone
    (convolutions and linear layers). Shapes include the batch dimension.
    """

    index: int
    module: str
    module_type: str
    op: str
    kind: OpKind
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int = 0
    memory_access: int = 0
    output_bytes: int = 0
    dtype: str = ""
    in_channels: int | None = None
    out_channels: int | None = None
    kernel: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    padding: tuple[int, ...] | None = None
    dilation: tuple[int, ...] | None = None
    groups: int | None = None
    weight_shape: tuple[int, ...] | None = None
    has_bias: bool = False
    weight_params: int = 0
    macs: int = 0
    elementwise_ops: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def intensity(self) -> float:
        """Arithmetic intensity: FLOPs per byte of memory access (0 when nothing is moved)."""
        return self.flops / self.memory_access if self.memory_access else 0.0

    @property
    def layer_type(self) -> str | None:
        """The :data:`LAYER_TYPES` bucket of a convolution or matrix product, else ``None``."""
        if self.kind not in MAC_KINDS:
            return None
        k = self.kernel
        if self.kind == OpKind.CONV and k == (3, 3):
            return "conv3x3"
        if self.kind == OpKind.DEPTHWISE_CONV and k == (3, 3):
            return "dw3x3"
        if self.kind == OpKind.POINTWISE_CONV:
            return "conv1x1"
        if self.kind == OpKind.GROUP_CONV and k is not None and all(s == 1 for s in k):
            return "gconv1x1"
        if self.kind == OpKind.LINEAR:
            return "fc"
        return "other"

    @property
    def free(self) -> bool:
        """Views and empty allocations: no work, no memory traffic."""
        return self.memory_access == 0 and self.macs == 0 and self.elementwise_ops == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flops"] = self.flops
        data["intensity"] = self.intensity
        data["layer_type"] = self.layer_type
        return data


@dataclass(frozen=True)
class TypeShare:
    """MACs and weight parameters of one layer type, with their shares in percent.

    As in MobileNets' Table 2, ``params`` counts the weight tensors of the convolutions and
    fully connected layers only, and ``params_percent`` is a share of their sum: biases and
    BatchNorm parameters are in neither (``Profile.params`` still counts them).
    """

    type: str
    description: str
    layers: int
    macs: int
    macs_percent: float
    params: int
    params_percent: float


@dataclass
class Profile:
    """Result of :func:`lightnets.profile`: rows and totals for one forward pass.

    Totals follow :data:`CONVENTIONS`: ``macs`` counts multiply-accumulates of convolutions and
    linear layers only (what the papers report), ``flops = 2 * macs``, and the work outside the
    MACs is reported separately in ``elementwise_ops``, so nothing is silently zero.
    """

    model: str
    input_shape: tuple[int, ...]
    dtype: str
    device: str
    rows: list[LayerRecord]
    params: int
    peak_activation_bytes: int
    conventions: dict[str, str] = field(default_factory=lambda: dict(CONVENTIONS))
    #: The model's hyperparameters (``create_model(**hparams)`` rebuilds it; empty for others).
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.input_shape[0]

    @property
    def macs(self) -> int:
        return sum(row.macs for row in self.rows)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def memory_access(self) -> int:
        return sum(row.memory_access for row in self.rows)

    @property
    def elementwise_ops(self) -> int:
        return sum(row.elementwise_ops for row in self.rows)

    @property
    def unknown_ops(self) -> list[str]:
        return sorted({row.op for row in self.rows if row.kind == OpKind.UNKNOWN})

    def totals(self) -> dict[str, int]:
        return {
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "memory_access": self.memory_access,
            "elementwise_ops": self.elementwise_ops,
            "peak_activation_bytes": self.peak_activation_bytes,
        }

    def by_type(self) -> list[TypeShare]:
        """MACs and weight parameters per layer type (:data:`LAYER_TYPES`), as in Table 2 of
        MobileNets (Howard et al. 2017): shares of all MACs and of all conv/FC weights."""
        buckets = {name: [0, 0, 0] for name in LAYER_TYPES}
        for row in self.rows:
            kind = row.layer_type
            if kind is not None:
                bucket = buckets[kind]
                bucket[0] += 1
                bucket[1] += row.macs
                bucket[2] += row.weight_params
        macs = sum(b[1] for b in buckets.values())
        weights = sum(b[2] for b in buckets.values())
        return [
            TypeShare(
                type=name,
                description=LAYER_TYPES[name],
                layers=layers,
                macs=m,
                macs_percent=100.0 * m / macs if macs else 0.0,
                params=p,
                params_percent=100.0 * p / weights if weights else 0.0,
            )
            for name, (layers, m, p) in buckets.items()
        ]

    def by_kind(self) -> dict[str, dict[str, int]]:
        """Operations, MACs, element-wise ops, memory access and params summed per kind."""
        summary: dict[str, dict[str, int]] = {}
        for row in self.rows:
            entry = summary.setdefault(
                row.kind,
                {"ops": 0, "macs": 0, "elementwise_ops": 0, "memory_access": 0, "params": 0},
            )
            entry["ops"] += 1
            entry["macs"] += row.macs
            entry["elementwise_ops"] += row.elementwise_ops
            entry["memory_access"] += row.memory_access
            entry["params"] += row.params
        return summary

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hparams": dict(self.hparams),
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "device": self.device,
            "totals": self.totals(),
            "conventions": self.conventions,
            "by_type": [asdict(share) for share in self.by_type()],
            "by_kind": self.by_kind(),
            "rows": [row.to_dict() for row in self.rows],
        }
