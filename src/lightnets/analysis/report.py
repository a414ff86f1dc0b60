"""What :func:`lightnets.profile` returns: per-operation rows, totals, and their renderings."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

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

_MAC_KINDS = {
    "conv",
    "pointwise_conv",
    "depthwise_conv",
    "group_conv",
    "conv_transpose",
    "linear",
    "matmul",
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


def _shape(shape: tuple[int, ...] | None) -> str:
    return "x".join(map(str, shape)) if shape else ""


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
    kind: str
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
        if self.kind not in _MAC_KINDS:
            return None
        k = self.kernel
        if self.kind == "conv" and k == (3, 3):
            return "conv3x3"
        if self.kind == "depthwise_conv" and k == (3, 3):
            return "dw3x3"
        if self.kind == "pointwise_conv":
            return "conv1x1"
        if self.kind == "group_conv" and k is not None and all(s == 1 for s in k):
            return "gconv1x1"
        if self.kind == "linear":
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
        return sorted({row.op for row in self.rows if row.kind == "unknown"})

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

    # -- machine formats ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "device": self.device,
            "totals": self.totals(),
            "conventions": self.conventions,
            "by_type": [asdict(share) for share in self.by_type()],
            "by_kind": self.by_kind(),
            "rows": [row.to_dict() for row in self.rows],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_csv(self) -> str:
        """One line per operation; shapes written as ``1x3x224x224``."""
        names = [f.name for f in fields(LayerRecord)] + ["flops", "intensity", "layer_type"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            data = row.to_dict()
            for key, value in data.items():
                if isinstance(value, tuple):
                    data[key] = _shape(value)
                elif value is None:
                    data[key] = ""
            writer.writerow(data)
        return buffer.getvalue()

    def to_markdown(self, *, all_rows: bool = False) -> str:
        """Totals, the by-type table and the operations (zero-cost views left out by default)."""
        lines = [
            f"**{self.model}**, input {_shape(self.input_shape)} ({self.dtype}, {self.device})",
            "",
            "| total | value | counts |",
            "|---|---:|---|",
        ]
        for key, value in self.totals().items():
            shown = format_bytes(value) if key.endswith(("access", "bytes")) else f"{value:,}"
            lines.append(f"| {key} | {shown} | {self.conventions[key]} |")
        lines += [
            "",
            "| layer type | layers | MACs | MACs % | weights | weights % |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for share in self.by_type():
            lines.append(
                f"| {share.type} | {share.layers} | {share.macs:,} | {share.macs_percent:.2f} "
                f"| {share.params:,} | {share.params_percent:.2f} |"
            )
        lines += [
            "",
            "| # | module | kind | kernel | groups | input | output | params | MACs "
            "| memory access | FLOP/byte |",
            "|---:|---|---|---|---:|---|---|---:|---:|---:|---:|",
        ]
        for row in self.rows:
            if row.free and not all_rows:
                continue
            lines.append(
                f"| {row.index} | {row.module or '(root)'} | {row.kind} | {_shape(row.kernel)} "
                f"| {row.groups or ''} | {_shape(row.input_shape)} | {_shape(row.output_shape)} "
                f"| {row.params:,} | {row.macs:,} | {row.memory_access:,} "
                f"| {row.intensity:.2f} |"
            )
        return "\n".join(lines) + "\n"

    # -- terminal -----------------------------------------------------------------------------
    def rich_table(self, *, all_rows: bool = False):
        """A :class:`rich.table.Table` of the operations (zero-cost views hidden by default)."""
        from rich import box
        from rich.table import Table

        table = Table(
            title=f"{self.model} — input {_shape(self.input_shape)} ({self.dtype})",
            header_style="bold",
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
        )
        for name, justify in (
            ("#", "right"),
            ("module", "left"),
            ("kind", "left"),
            ("kernel", "left"),
            ("output", "left"),
            ("params", "right"),
            ("MACs", "right"),
            ("elem. ops", "right"),
            ("mem. access", "right"),
            ("FLOP/B", "right"),
        ):
            table.add_column(name, justify=justify, no_wrap=name != "module")
        hidden = 0
        for row in self.rows:
            if row.free and not all_rows:
                hidden += 1
                continue
            geometry = ""
            if row.kernel is not None:
                geometry = _shape(row.kernel)
                if row.stride and any(s != 1 for s in row.stride):
                    geometry += f" /{_shape(row.stride)}"
                if row.groups and row.groups > 1:
                    geometry += f" g{row.groups}"
            table.add_row(
                str(row.index),
                row.module or "(root)",
                row.kind,
                geometry,
                _shape(row.output_shape),
                format_count(row.params) if row.params else "",
                format_count(row.macs) if row.macs else "",
                format_count(row.elementwise_ops) if row.elementwise_ops else "",
                format_bytes(row.memory_access) if row.memory_access else "",
                f"{row.intensity:.1f}" if row.macs else "",
            )
        if hidden:
            table.caption = f"{hidden} zero-cost views not shown"
        return table

    def rich_totals(self):
        from rich.table import Table

        table = Table(title="totals", header_style="bold")
        table.add_column("total")
        table.add_column("value", justify="right")
        table.add_column("what it counts")
        for key, value in self.totals().items():
            shown = (
                format_bytes(value)
                if key.endswith(("access", "bytes"))
                else (f"{value:,} ({format_count(value)})")
            )
            table.add_row(key, shown, SHORT_CONVENTIONS.get(key, ""))
        table.caption = "full definitions: Profile.conventions (in --json output)"
        return table

    def rich_by_type(self):
        from rich.table import Table

        table = Table(title="by layer type", header_style="bold")
        for name in ("type", "layers", "MACs", "MACs %", "weights", "weights %"):
            table.add_column(name, justify="left" if name == "type" else "right")
        for share in self.by_type():
            table.add_row(
                share.type,
                str(share.layers),
                format_count(share.macs),
                f"{share.macs_percent:.2f}",
                format_count(share.params),
                f"{share.params_percent:.2f}",
            )
        table.caption = "weights: conv and FC weight tensors only (biases, BN left out), as Table 2"
        return table

    def __rich__(self):
        from rich.console import Group

        return Group(self.rich_table(), self.rich_totals())
