"""ShuffleNet V2's four guidelines, re-run on this machine (Ma et al., ECCV 2018, Section 2).

Each guideline is a small benchmark network built from the paper's table
(:data:`~lightnets.analysis.guideline_tables.GUIDELINE_TABLES`): G1 ten blocks of two 1x1
convolutions c1 -> c2 -> c1 (Table 1), G2 ten pointwise group convolutions (Table 2), G3 ten
blocks of 1-4 fragments in series or parallel (Table 3, Appendix Fig. 1), G4 ten ResNet
bottleneck units with ReLU and/or shortcut removed (Table 4). For every configuration the
report holds lightnets' own counts (MACs and memory access from :func:`lightnets.profile`,
per image), the G1 lower bound of Eq. 1, the measured speed (median of interleaved rounds), and
the paper's GPU and ARM figures, all normalised to the first row of their table so that shapes
compare across machines.

>>> report = run_guidelines(["G1"], quick=True)      # doctest: +SKIP
>>> print(report.to_markdown())                       # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightnets import jsonio
from lightnets.analysis.guideline_tables import (
    FEATURE_MAP,
    GUIDELINE_TABLES,
    PAPER,
    REPEATS,
    SCALES,
    GuidelineRow,
)
from lightnets.errors import InvalidArgumentError, check_int

__all__ = [
    "GUIDELINES",
    "Experiment",
    "GuidelineRecord",
    "GuidelineReport",
    "build_experiments",
    "g1_lower_bound",
    "plot_guidelines",
    "run_guidelines",
    "time_calls",
]

GUIDELINES = tuple(GUIDELINE_TABLES)
WIDTHS = ("arm", "gpu")
#: A configuration "agrees" while its normalised speed is on the paper's side of 1 +- this.
TOLERANCE = 0.03
#: A table whose speeds all lie within 1 +- this is called flat on this machine.
FLAT = 0.10
BYTES_PER_ELEMENT = 4  # float32


# -- the benchmark blocks -------------------------------------------------------------------


def _conv1x1(c_in: int, c_out: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, groups=groups, bias=False)


class FragmentBlock(nn.Module):
    """Appendix Fig. 1: ``fragments`` 1x1 convolutions c -> c, in sequence, or in parallel on
    the same input with their outputs summed (the figure's merge is assumed to be a sum)."""

    def __init__(self, channels: int, fragments: int, arrangement: str) -> None:
        super().__init__()
        self.parallel = arrangement == "parallel"
        self.convs = nn.ModuleList(_conv1x1(channels, channels) for _ in range(fragments))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.parallel:
            for conv in self.convs:
                x = conv(x)
            return x
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)
        return out


class Bottleneck(nn.Module):
    """He et al. 2016's bottleneck unit (1x1, 3x3, 1x1; c channels throughout), BatchNorm folded
    away as at inference; Table 4 removes its ReLUs and/or its shortcut."""

    def __init__(self, channels: int, relu: bool, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = _conv1x1(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv3 = _conv1x1(channels, channels)
        self.act = nn.ReLU() if relu else nn.Identity()
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        if self.shortcut:
            out = out + x
        return self.act(out)


def _g1_net(row: GuidelineRow, channels: tuple[int, ...]) -> nn.Module:
    c1, c2 = channels
    return nn.Sequential(
        *(nn.Sequential(_conv1x1(c1, c2), _conv1x1(c2, c1)) for _ in range(REPEATS))
    )


def _g2_net(row: GuidelineRow, channels: tuple[int, ...]) -> nn.Module:
    (c,) = channels
    return nn.Sequential(*(_conv1x1(c, c, row.groups) for _ in range(REPEATS)))


def _g3_net(row: GuidelineRow, channels: tuple[int, ...]) -> nn.Module:
    (c,) = channels
    return nn.Sequential(
        *(FragmentBlock(c, row.fragments, row.arrangement) for _ in range(REPEATS))
    )


def _g4_net(row: GuidelineRow, channels: tuple[int, ...]) -> nn.Module:
    (c,) = channels
    return nn.Sequential(*(Bottleneck(c, row.relu, row.shortcut) for _ in range(REPEATS)))


#: Guideline -> builder of its benchmark network from a table row and the channel numbers.
_BUILDERS: dict[str, Callable[[GuidelineRow, tuple[int, ...]], nn.Module]] = {
    "G1": _g1_net,
    "G2": _g2_net,
    "G3": _g3_net,
    "G4": _g4_net,
}


def _channels(guideline: str, row: GuidelineRow, scale: int, widths: str) -> tuple[int, ...]:
    """The channel numbers of ``row`` at ``scale`` (x1, x2, x4) in the paper's GPU or ARM set;
    G3's fragments are narrowed to c / sqrt(k) so that MACs match the 1-fragment block."""
    base = row.gpu_channels if widths == "gpu" else row.arm_channels
    channels = tuple(c * scale for c in base)
    if guideline == "G3" and row.fragments > 1:
        channels = (round(channels[0] / math.sqrt(row.fragments)),)
    if row.groups > 1 and channels[0] % row.groups:
        channels = (_divisible(channels[0], row.groups),)
    return channels


def _divisible(c: int, g: int) -> int:
    """The multiple of ``g`` nearest to ``c`` in MACs (c^2 / g): Table 2's ARM c=180 at g=8
    cannot be split into 8 groups; 176 is the closest width that can (c^2/g 3872 vs 4050)."""
    low, high = (c // g) * g, (c // g + 1) * g
    return min((high, low), key=lambda w: abs(w * w - c * c)) if low else high


# -- experiments ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Experiment:
    """One configuration of one table at one scale."""

    guideline: str
    row: GuidelineRow
    scale: int
    channels: tuple[int, ...]
    widths: str
    feature_map: int = FEATURE_MAP

    @property
    def column(self) -> int:
        return SCALES.index(self.scale)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels[0], self.feature_map, self.feature_map)

    def build(self) -> nn.Module:
        return _BUILDERS[self.guideline](self.row, self.channels).eval()


def build_experiments(
    guidelines: Sequence[str] = GUIDELINES,
    scales: Sequence[int] = SCALES,
    widths: str = "arm",
    feature_map: int = FEATURE_MAP,
) -> list[Experiment]:
    """Every (guideline, scale, row) configuration, tables in order, rows in table order."""
    unknown = [g for g in guidelines if g not in GUIDELINE_TABLES]
    if unknown:
        raise InvalidArgumentError(
            f"unknown guideline {unknown[0]!r}; allowed: {', '.join(GUIDELINES)}"
        )
    if widths not in WIDTHS:
        raise InvalidArgumentError(f"unknown width set {widths!r}; allowed: {', '.join(WIDTHS)}")
    bad = [s for s in scales if s not in SCALES]
    if bad:
        raise InvalidArgumentError(
            f"scale x{bad[0]} is not one of the paper's; allowed: {', '.join(map(str, SCALES))}"
        )
    check_int("feature_map", feature_map, minimum=1)
    return [
        Experiment(g, row, scale, _channels(g, row, scale, widths), widths, feature_map)
        for g in dict.fromkeys(guidelines)
        for scale in scales
        for row in GUIDELINE_TABLES[g].rows
    ]


def g1_lower_bound(height: int, width: int, macs: int) -> float:
    """ShuffleNet V2, Eq. 1: memory access (elements) of a 1x1 convolution with B MACs on an
    h x w map is at least ``2 sqrt(hwB) + B/(hw)``, reached at c1 = c2."""
    hw = height * width
    return 2 * math.sqrt(hw * macs) + macs / hw


# -- timing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Median per-batch latency over interleaved rounds, its spread (IQR / median) and the
    timing helper's verdict on it (``stable``, and a one-line ``note`` when not)."""

    ms: float
    spread: float
    rounds: int
    stable: bool
    note: str = ""


def time_calls(
    calls: Sequence[Callable[[], Any]],
    device: torch.device | str,
    *,
    rounds: int = 5,
    min_seconds: float = 1.0,
) -> list[Timing]:
    """Time every call in interleaved rounds (every configuration once per round, so that load
    from other processes hits them all alike): the one place that calls the project's timing
    helper, :func:`lightnets.analysis.timing.measure_interleaved`."""
    from lightnets.analysis.timing import measure_interleaved

    check_int("rounds", rounds, minimum=1)
    fns = {str(i): call for i, call in enumerate(calls)}
    measured = measure_interleaved(
        fns,
        warmup=1,
        min_iters=2 * rounds,
        min_seconds=min_seconds,
        rounds=rounds,
        max_seconds=2 * min_seconds + 1,
        device=device,
    )
    stats = [measured.stats[name] for name in fns]
    return [
        Timing(
            ms=s.median_ms,
            spread=s.iqr_ms / s.median_ms if s.median_ms > 0 else 0.0,
            rounds=s.rounds,
            stable=s.stable,
            note=s.note,
        )
        for s in stats
    ]


# -- the report -----------------------------------------------------------------------------


@dataclass
class GuidelineRecord:
    """One configuration's counts, measured speed and the paper's figures (``--json`` record)."""

    guideline: str
    config: str
    channels: list[int]
    groups: int
    scale: int
    widths: str
    feature_map: int
    batch_size: int
    macs: int
    memory_access: int
    memory_access_bound: int | None
    params: int
    ms: float
    batches_per_sec: float
    images_per_sec: float
    spread: float
    stable: bool
    timing_note: str = ""
    measured_norm: float | None = None
    paper_gpu: float | None = None
    paper_arm: float | None = None
    paper_gpu_norm: float | None = None
    paper_arm_norm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GuidelineReport:
    records: list[GuidelineRecord]
    verdicts: dict[str, str]
    conditions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": PAPER,
            "conditions": self.conditions,
            "verdicts": self.verdicts,
            "records": [r.to_dict() for r in self.records],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return jsonio.dumps(self.to_dict(), indent=indent)

    def to_markdown(self) -> str:
        """One table per guideline and scale, then the verdicts."""
        lines: list[str] = []
        for (guideline, scale), rows in _grouped(self.records).items():
            table = GUIDELINE_TABLES[guideline]
            lines += [
                f"**{guideline} x{scale}**: {table.claim} "
                f"({table.source.removeprefix(PAPER + ', ')})",
                "",
                "| config | channels | MACs | memory access | bound (Eq. 1) | ms/batch | "
                "images/s | spread | speed (norm.) | paper GPU (norm.) | paper ARM (norm.) |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            lines += [_markdown_row(r) for r in rows]
            lines.append("")
        lines += [f"- {g}: {text}" for g, text in self.verdicts.items()]
        lines.append(f"- timing: {timing_summary(self.records)}")
        return "\n".join(lines)


def timing_summary(records: Sequence[GuidelineRecord]) -> str:
    """One line for every configuration's timing: how many are unstable (marked in the
    tables) and the first one's reason, instead of one near-identical line per configuration."""
    unstable = [r for r in records if not r.stable]
    if not unstable:
        worst = max(records, key=lambda r: r.spread, default=None)
        spread = f"; widest spread {100 * worst.spread:.0f}% ({worst.config})" if worst else ""
        return f"all {len(records)} configurations stable{spread}"
    first = unstable[0]
    return (
        f"{len(unstable)} of {len(records)} configurations unstable, marked (unstable) in the "
        f"tables; first, {first.guideline} {first.config}: {first.timing_note or 'unstable'}"
    )


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f} MB"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _markdown_row(r: GuidelineRecord) -> str:
    channels = ",".join(map(str, r.channels)) + (f" g={r.groups}" if r.groups > 1 else "")
    paper_gpu = f"{r.paper_gpu:g} ({_ratio(r.paper_gpu_norm)})"
    paper_arm = f"{r.paper_arm:g} ({_ratio(r.paper_arm_norm)})"
    mark = "" if r.stable else " (unstable)"
    return (
        f"| {r.config} | {channels} | {r.macs / 1e6:.1f}M | {_mb(r.memory_access)} | "
        f"{_mb(r.memory_access_bound)} | {r.ms:.2f} | {r.images_per_sec:.1f} | "
        f"{100 * r.spread:.0f}%{mark} | {_ratio(r.measured_norm)} | {paper_gpu} | {paper_arm} |"
    )


def _grouped(records: Sequence[GuidelineRecord]) -> dict[tuple[str, int], list[GuidelineRecord]]:
    groups: dict[tuple[str, int], list[GuidelineRecord]] = {}
    for record in records:
        groups.setdefault((record.guideline, record.scale), []).append(record)
    return groups


def _counts(experiment: Experiment, model: nn.Module) -> dict[str, Any]:
    """MACs, memory access (bytes) and params per image from lightnets' counter; for G1 the
    Eq. 1 bound summed over the network's 2 x 10 convolutions, in bytes."""
    from lightnets.analysis.counter import profile

    prof = profile(model, experiment.input_shape, batch_size=1)
    bound = None
    if experiment.guideline == "G1":
        hw = experiment.feature_map
        per_conv = prof.macs // (2 * REPEATS)
        bound = round(2 * REPEATS * g1_lower_bound(hw, hw, per_conv) * BYTES_PER_ELEMENT)
    return {
        "macs": prof.macs,
        "memory_access": prof.memory_access,
        "memory_access_bound": bound,
        "params": prof.params,
    }


def _record(experiment: Experiment, counts: dict[str, Any], timing: Timing, batch: int):
    row, col = experiment.row, experiment.column
    return GuidelineRecord(
        guideline=experiment.guideline,
        config=row.config,
        channels=list(experiment.channels),
        groups=row.groups,
        scale=experiment.scale,
        widths=experiment.widths,
        feature_map=experiment.feature_map,
        batch_size=batch,
        ms=timing.ms,
        batches_per_sec=1e3 / timing.ms,
        images_per_sec=batch * 1e3 / timing.ms,
        spread=timing.spread,
        stable=timing.stable,
        timing_note=timing.note,
        paper_gpu=row.gpu[col],
        paper_arm=row.arm[col],
        **counts,
    )


def _normalise(records: list[GuidelineRecord]) -> None:
    """Speed relative to the first row of the same table and scale, ours and the paper's."""
    for rows in _grouped(records).values():
        first = rows[0]
        for r in rows:
            r.measured_norm = r.images_per_sec / first.images_per_sec
            r.paper_gpu_norm = r.paper_gpu / first.paper_gpu
            r.paper_arm_norm = r.paper_arm / first.paper_arm


def verdict(guideline: str, rows: Sequence[GuidelineRecord]) -> str:
    """One line: does this machine rank the configurations the way the paper does?

    G1-G3 predict the first row (1:1, g=1, 1-fragment) fastest; G4 predicts it slowest.
    """
    first, others = rows[0], rows[1:]
    slower_expected = guideline != "G4"
    sign = 1 if slower_expected else -1
    against = [r for r in others if sign * (r.measured_norm - 1) > TOLERANCE]
    extreme = min(others, key=lambda r: sign * r.measured_norm)
    claim = GUIDELINE_TABLES[guideline].claim

    def cite(r: GuidelineRecord) -> str:
        fewer = 1 - r.macs / first.macs
        macs = f", with {fewer:.0%} fewer MACs" if fewer >= 0.01 else ""
        return (
            f"{r.config} runs at {r.measured_norm:.2f}x the speed of {first.config}{macs} "
            f"(paper: GPU {r.paper_gpu_norm:.2f}x, ARM {r.paper_arm_norm:.2f}x)"
        )

    unstable = "" if all(r.stable for r in rows) else "; some timings unstable (busy machine)"
    if not against:
        what = "fastest" if slower_expected else "slowest"
        return f"{claim}: agrees: {first.config} is the {what}; {cite(extreme)}{unstable}"
    worst = max(against, key=lambda r: sign * r.measured_norm)
    flat = all(abs(r.measured_norm - 1) <= FLAT for r in others)
    shape = f" (flat within {FLAT:.0%} here)" if flat else ""
    return f"{claim}: does not agree: {cite(worst)}{shape}{unstable}"


def _conditions(device: torch.device, batch_size: int, rounds: int) -> dict[str, Any]:
    from lightnets.analysis.machine import cpu_name

    conditions = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "rounds": rounds,
        "dtype": "float32",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        conditions["load_average_1min"] = round(os.getloadavg()[0], 2)
    return conditions


def run_guidelines(
    guidelines: Sequence[str] = GUIDELINES,
    *,
    device: str | None = "cpu",
    batch_size: int = 1,
    quick: bool = False,
    widths: str | None = None,
    rounds: int | None = None,
    min_seconds: float | None = None,
    threads: int | None = 1,
) -> GuidelineReport:
    """Build, count and time every configuration of ``guidelines``.

    Args:
        device: "cpu" or "cuda" (a one-line error when CUDA is absent).
        batch_size: images per timed forward pass.
        quick: the smallest scale (x1) only, fewer and shorter rounds.
        widths: which of the paper's channel sets to build, "arm" or "gpu"; default: "gpu" on
            CUDA, "arm" otherwise (the ARM set is the one sized for a CPU).
        threads: torch CPU threads while timing (default 1, as the paper's ARM runs; on a
            machine shared with other jobs more threads mostly measure waiting); None: as set.
    """
    from lightnets.analysis.timing import torch_threads

    with torch_threads(threads):
        return _run(guidelines, device, batch_size, quick, widths, rounds, min_seconds)


def _run(
    guidelines: Sequence[str],
    device: str | None,
    batch_size: int,
    quick: bool,
    widths: str | None,
    rounds: int | None,
    min_seconds: float | None,
) -> GuidelineReport:
    from lightnets.train.distributed import resolve_device

    device_t = torch.device(resolve_device(device))
    check_int("batch_size", batch_size, minimum=1)
    widths = widths or ("gpu" if device_t.type == "cuda" else "arm")
    rounds = rounds if rounds is not None else (5 if quick else 7)
    min_seconds = min_seconds if min_seconds is not None else (0.5 if quick else 2.0)
    experiments = build_experiments(guidelines, (1,) if quick else SCALES, widths)
    records: list[GuidelineRecord] = []
    for group in _grouped_experiments(experiments).values():
        models = [e.build() for e in group]
        counts = [_counts(e, m) for e, m in zip(group, models, strict=True)]
        calls = [_forward(m, e, device_t, batch_size) for e, m in zip(group, models, strict=True)]
        timings = time_calls(calls, device_t, rounds=rounds, min_seconds=min_seconds)
        records += [
            _record(e, c, t, batch_size) for e, c, t in zip(group, counts, timings, strict=True)
        ]
    _normalise(records)
    verdicts = {f"{g} x{s}": verdict(g, rows) for (g, s), rows in _grouped(records).items()}
    return GuidelineReport(records, verdicts, _conditions(device_t, batch_size, rounds))


def _grouped_experiments(
    experiments: Sequence[Experiment],
) -> dict[tuple[str, int], list[Experiment]]:
    groups: dict[tuple[str, int], list[Experiment]] = {}
    for e in experiments:
        groups.setdefault((e.guideline, e.scale), []).append(e)
    return groups


def _forward(model: nn.Module, e: Experiment, device: torch.device, batch: int):
    model = model.to(device)
    x = torch.randn((batch, *e.input_shape), generator=torch.Generator().manual_seed(0))
    x = x.to(device)

    def call() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return call


# -- the figure -----------------------------------------------------------------------------


def plot_guidelines(report: GuidelineReport, path: str | Path) -> Path:
    """One panel per guideline: measured speed against the paper's GPU and ARM speeds, each
    normalised to the table's first row, at the smallest scale measured."""
    import numpy as np
    from matplotlib.figure import Figure

    from lightnets.analysis.plots import check_writable, save_figure

    check_writable(path)
    panels: dict[str, list[GuidelineRecord]] = {}
    for (guideline, scale), rows in _grouped(report.records).items():
        if guideline not in panels or scale < panels[guideline][0].scale:
            panels[guideline] = rows
    fig = Figure(figsize=(4.2 * max(1, len(panels)), 4.2), layout="constrained")
    for i, (guideline, rows) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        x = np.arange(len(rows))
        series = (
            ("this machine", [r.measured_norm for r in rows], "tab:blue"),
            ("paper GPU", [r.paper_gpu_norm for r in rows], "tab:green"),
            ("paper ARM", [r.paper_arm_norm for r in rows], "tab:orange"),
        )
        for k, (label, values, colour) in enumerate(series):
            ax.bar(x + (k - 1) * 0.27, values, 0.27, label=label, color=colour)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xticks(x, [r.config for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(
            f"{guideline} x{rows[0].scale}: {GUIDELINE_TABLES[guideline].claim}", fontsize=8
        )
        ax.set_ylabel(f"speed / speed of {rows[0].config}")
        if i == 0:
            ax.legend(fontsize=8)
    return save_figure(fig, path)
