"""What compression bought, per layer and in total (the columns of Deep Compression's Table 4).

Per layer: dense fp32 bytes, kept weights (density), weight bits, the fixed-width index bytes
(gaps at 8 or 5 bits, fillers included), codebook bytes, the coded bytes actually stored
(codes + gaps + codebook, each stream by its smallest coder) and the ratio. In total: the file
size against the fp32 state dict, what each coder alone would give on the same streams, and
top-1 before and after when an evaluation set was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

MIB = 1 << 20
#: :attr:`CompressionReport.weights` of a model that was never trained.
RANDOM_WEIGHTS = "random initial weights"


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    params: int
    dense_bytes: int
    kept: int
    bits: int
    index_bits: int
    entries: int
    fillers: int
    index_bytes: int  # gaps at index_bits each (the paper's layout before Huffman coding)
    codebook_bytes: int
    coded_bytes: int  # codes + gaps + codebook as stored
    codes_coder: str
    gaps_coder: str

    @property
    def density(self) -> float:
        return self.kept / max(self.params, 1)

    @property
    def ratio(self) -> float:
        return self.dense_bytes / max(self.coded_bytes, 1)


@dataclass
class CompressionReport:
    path: str
    file_bytes: int
    dense_bytes: int  # every tensor of the state dict at its dtype (fp32 weights)
    params: int  # model parameters (buffers such as BatchNorm statistics not counted)
    kept: int
    layers: list[LayerRow]
    other_dense_bytes: int  # biases, BatchNorm: stored exactly
    other_stored_bytes: int
    coder_totals: dict[str, int]  # codes + gaps streams, each coder alone
    settings: dict[str, Any]
    accuracy: dict[str, float | None] = field(default_factory=dict)
    finetune_epochs: int = 0
    dataset: str | None = None
    #: What was compressed: a weights file, or the random initial weights (size only).
    weights_from: str = RANDOM_WEIGHTS

    @property
    def random_weights(self) -> bool:
        return self.weights_from == RANDOM_WEIGHTS

    @property
    def ratio(self) -> float:
        return self.dense_bytes / max(self.file_bytes, 1)

    @property
    def weights(self) -> int:
        """Weights of the compressed (conv and linear) layers."""
        return sum(row.params for row in self.layers)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["random_weights"] = self.random_weights
        data["weights"] = self.weights
        data["density"] = self.kept / max(self.weights, 1)
        for row, record in zip(self.layers, data["layers"], strict=True):
            record.update(density=row.density, ratio=row.ratio)
        return data


def build_report(
    path: str | os.PathLike[str],
    file_bytes: int,
    shared: list,
    costs: list,
    dense: dict[str, torch.Tensor],
    dense_stored: int,
    settings: Any,
    accuracy: dict[str, float | None],
    *,
    params: int,
    finetune_epochs: int = 0,
    dataset: str | None = None,
    weights_from: str = RANDOM_WEIGHTS,
) -> CompressionReport:
    rows = []
    totals: dict[str, int] = {}
    for layer, cost in zip(shared, costs, strict=True):
        params = layer.codes.numel()
        rows.append(
            LayerRow(
                name=layer.key.removesuffix(".weight"),
                kind=layer.kind,
                params=params,
                dense_bytes=4 * params,
                kept=int((layer.codes != 0).sum()),
                bits=layer.bits,
                index_bits=layer.index_bits,
                entries=cost.entries,
                fillers=cost.fillers,
                index_bytes=math.ceil(cost.entries * layer.index_bits / 8),
                codebook_bytes=cost.codebook_bytes,
                coded_bytes=cost.codes_bytes + cost.gaps_bytes + cost.codebook_bytes,
                codes_coder=cost.codes_coder,
                gaps_coder=cost.gaps_coder,
            )
        )
        for name in cost.codes_sizes:
            totals[name] = totals.get(name, 0) + cost.codes_sizes[name] + cost.gaps_sizes[name]
    totals["chosen"] = sum(r.coded_bytes - r.codebook_bytes for r in rows)
    other = sum(t.numel() * t.element_size() for t in dense.values())
    return CompressionReport(
        path=str(path),
        file_bytes=file_bytes,
        dense_bytes=sum(r.dense_bytes for r in rows) + other,
        params=params,
        kept=sum(r.kept for r in rows),
        layers=rows,
        other_dense_bytes=other,
        other_stored_bytes=dense_stored,
        coder_totals=totals,
        settings=settings.as_dict(),
        accuracy=accuracy,
        finetune_epochs=finetune_epochs,
        dataset=dataset,
        weights_from=weights_from,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


#: The per-layer table's columns; the first two are text (left-aligned), the rest numbers.
LAYER_COLUMNS = (
    "layer",
    "kind",
    "fp32 B",
    "kept",
    "bits",
    "index B",
    "codebook B",
    "coded B",
    "coders",
    "ratio",
)


def print_report(report: CompressionReport, *, layers: bool = True) -> None:
    """The per-layer table and the summary lines, with rich."""
    from lightnets.tables import terminal_console

    console = terminal_console()
    if layers:
        console.print(_layer_table(report))
    for line in _summary_lines(report):
        console.print(line, highlight=False)


def _layer_table(report: CompressionReport) -> Table:
    """One row per compressed layer, then the exactly stored other tensors."""
    from lightnets.tables import Column, rich_table

    rows = [
        [
            r.name,
            r.kind,
            f"{r.dense_bytes:,}",
            f"{r.kept:,} ({100 * r.density:.0f}%)",
            str(r.bits),
            f"{r.index_bytes:,}",
            f"{r.codebook_bytes:,}",
            f"{r.coded_bytes:,}",
            f"{r.codes_coder}/{r.gaps_coder}",
            f"{r.ratio:.1f}x",
        ]
        for r in report.layers
    ]
    other = [f"{report.other_dense_bytes:,}", "-", "-", "-", "-"]
    rows.append(["other tensors", "exact", *other, f"{report.other_stored_bytes:,}", "", ""])
    return rich_table(
        [Column(c, "left" if c in ("layer", "kind") else "right") for c in LAYER_COLUMNS],
        rows,
        title=f"{report.path}: per layer",
    )


def _summary_lines(report: CompressionReport) -> list[str]:
    """The file against fp32, each coder's total, and top-1 before and after (with data)."""
    totals = ", ".join(f"{k} {v:,} B" for k, v in report.coder_totals.items())
    if report.random_weights:
        what = (
            f"compressed: {RANDOM_WEIGHTS} (size only; not the paper's trained weights: pass "
            "--weights FILE or a checkpoint to compress trained ones)"
        )
    else:
        what = f"compressed: {report.weights_from}"
    lines = [
        what,
        f"wrote {report.path}: {report.file_bytes:,} bytes ({report.file_bytes / MIB:.3f} MiB) "
        f"from {report.dense_bytes:,} fp32 bytes: {report.ratio:.1f}x smaller; "
        f"{report.kept:,} of {report.weights:,} conv/linear weights kept",
        f"codes + gaps streams by coder: {totals}",
    ]
    acc = report.accuracy
    if acc.get("dense") is not None:
        tuned = (
            f", {report.finetune_epochs} fine-tune epoch(s) per stage"
            if report.finetune_epochs
            else ", no fine-tune"
        )
        lines.append(
            f"top-1 on {report.dataset} test: dense {_pct(acc.get('dense'))} -> pruned "
            f"{_pct(acc.get('pruned'))} -> compressed {_pct(acc.get('compressed'))}{tuned}"
        )
    return lines
