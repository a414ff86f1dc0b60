"""The roofline model (Williams, Waterman and Patterson, CACM 2009) for one network, measured here.

A layer that performs ``F`` FLOPs while moving ``B`` bytes has arithmetic intensity ``I = F / B``
and cannot run faster than ``min(peak compute, I x memory bandwidth)``. Both roofs are measured
on this machine (:func:`measure_machine_peak`); every convolution and linear layer is then timed
alone on the input shape it sees inside the network, and placed under the roof. Low-intensity
layers (depthwise convolutions, the layers ShuffleNet V2's guidelines are about) sit under the
slanted, memory-bound part.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightnets.analysis.counter import profile as profile_model
from lightnets.analysis.report import LayerRecord, Profile, format_count
from lightnets.analysis.timing import cpu_name, measure_latency
from lightnets.errors import InvalidArgumentError

__all__ = [
    "MachinePeak",
    "Roofline",
    "RooflinePoint",
    "measure_machine_peak",
    "roofline",
    "time_layer",
]

_TIMED_KINDS = {"conv", "pointwise_conv", "depthwise_conv", "group_conv", "linear"}


@dataclass(frozen=True)
class MachinePeak:
    """Measured roofs of one device: float32 compute (GFLOP/s) and memory bandwidth (GB/s)."""

    device: str
    gflops: float
    bandwidth_gb_s: float
    threads: int
    method: str

    @property
    def ridge_point(self) -> float:
        """Intensity (FLOP/byte) where the roof turns from memory-bound to compute-bound."""
        return self.gflops / self.bandwidth_gb_s

    def attainable_gflops(self, intensity: float) -> float:
        return min(self.gflops, intensity * self.bandwidth_gb_s)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ridge_point"] = self.ridge_point
        return data


_PEAK_CACHE: dict[tuple[str, int], MachinePeak] = {}
_CONV_CHANNELS, _CONV_SIZE = 256, 28
_CONV_FLOP = 2 * _CONV_CHANNELS * _CONV_CHANNELS * 9 * _CONV_SIZE * _CONV_SIZE
_COPY_NUMEL = 32 * 2**20
_COPY_BYTES = _COPY_NUMEL * 4


def _peak_conv_ms(device: torch.device, seconds: float) -> float:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, _CONV_CHANNELS, _CONV_SIZE, _CONV_SIZE, generator=generator).to(device)
    w = torch.randn(_CONV_CHANNELS, _CONV_CHANNELS, 3, 3, generator=generator).to(device)
    with torch.inference_mode():
        stats = measure_latency(
            lambda: F.conv2d(x, w, padding=1),
            warmup=3,
            min_iters=10,
            min_seconds=seconds,
            device=device,
        )
    return stats.min_ms


def _peak_copy_add_ms(device: torch.device, seconds: float) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(_COPY_NUMEL, generator=generator).to(device)
    b = torch.rand(_COPY_NUMEL, generator=generator).to(device)
    c = torch.empty_like(a)
    with torch.inference_mode():
        copy = measure_latency(
            lambda: c.copy_(a), warmup=1, min_iters=3, min_seconds=seconds, device=device
        )
        add = measure_latency(
            lambda: torch.add(a, b, out=c),
            warmup=1,
            min_iters=3,
            min_seconds=seconds,
            device=device,
        )
    return copy.min_ms, add.min_ms


def measure_machine_peak(device: torch.device | str = "cpu", seconds: float = 3.0) -> MachinePeak:
    """Measure peak float32 compute and memory bandwidth of ``device`` (cached per process).

    Compute: a large 3x3 convolution (256 -> 256 channels on a 28x28 map, 0.92 GFLOP per call),
    the kind of kernel these networks are made of, using ``torch.get_num_threads()`` threads;
    its fastest call gives GFLOP/s. (A matrix product would do as well on Intel, but MKL's
    matmul under-reports on AMD processors.) Bandwidth: a copy and an add of 128 MiB tensors
    (bytes read plus bytes written, per second); the faster of the two counts. About
    ``seconds`` in total.
    """
    device = torch.device(device)
    if not seconds > 0:
        raise InvalidArgumentError(f"seconds must be > 0, got {seconds!r}")
    key = (str(device), torch.get_num_threads())
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    compute_ms = _peak_conv_ms(device, seconds / 2)
    copy_ms, add_ms = _peak_copy_add_ms(device, seconds / 4)
    bandwidth = max(2 * _COPY_BYTES / copy_ms, 3 * _COPY_BYTES / add_ms) / 1e6
    peak = MachinePeak(
        device=f"cpu ({cpu_name()})" if device.type == "cpu" else str(device),
        gflops=_CONV_FLOP / compute_ms / 1e6,
        bandwidth_gb_s=bandwidth,
        threads=torch.get_num_threads(),
        method=(
            "compute: fastest of repeated float32 3x3 convolutions, 256->256 channels on "
            "1x256x28x28; bandwidth: fastest copy (2 x 128 MiB moved) or add (3 x 128 MiB) "
            "of 128 MiB float32 tensors"
        ),
    )
    _PEAK_CACHE[key] = peak
    return peak


def time_layer(
    row: LayerRecord,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    min_seconds: float = 0.05,
):
    """Latency of one convolution or linear row run alone on its recorded shapes.

    Random input, weight and bias of the recorded shapes, the recorded stride, padding,
    dilation and groups: the same kernel the network runs, without its neighbours.
    """
    if row.kind not in _TIMED_KINDS or row.weight_shape is None:
        raise InvalidArgumentError(f"row {row.index} ({row.kind}) is not a convolution or linear")
    generator = torch.Generator().manual_seed(row.index)

    def rand(shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)

    x = rand(row.input_shape)
    w = rand(row.weight_shape)
    b = rand(row.weight_shape[:1]) if row.has_bias else None
    if row.kind == "linear":

        def fn() -> torch.Tensor:
            return F.linear(x, w, b)
    else:
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(row.kernel or ())]

        def fn() -> torch.Tensor:
            return conv(x, w, b, row.stride, row.padding, row.dilation, row.groups)

    with torch.inference_mode():
        return measure_latency(fn, warmup=2, min_iters=5, min_seconds=min_seconds, device=device)


@dataclass(frozen=True)
class RooflinePoint:
    """One layer under the roof: its intensity, measured speed, and the roof above it."""

    index: int
    module: str
    kind: str
    layer_type: str | None
    macs: int
    flops: int
    memory_access: int
    intensity: float
    latency_ms: float
    achieved_gflops: float
    attainable_gflops: float
    fraction: float
    bound: str


@dataclass
class Roofline:
    """Every convolution and linear layer of one network, placed on this machine's roofline."""

    model: str
    input_shape: tuple[int, ...]
    peak: MachinePeak
    points: list[RooflinePoint]
    profile: Profile = field(repr=False)

    @property
    def total_ms(self) -> float:
        return sum(p.latency_ms for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "peak": self.peak.to_dict(),
            "layers_total_ms": self.total_ms,
            "points": [asdict(p) for p in self.points],
            "conventions": {
                "intensity": "FLOPs (2 x MACs) per byte of memory access (inputs, weights, "
                "outputs), float32",
                "attainable_gflops": "min(peak gflops, intensity x bandwidth)",
                "fraction": "achieved / attainable",
                "bound": "memory if intensity < peak.ridge_point, else compute",
            },
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def rich_table(self):
        from rich.table import Table

        peak = self.peak
        table = Table(
            title=(
                f"{self.model} on the roofline: peak {peak.gflops:.0f} GFLOP/s, "
                f"{peak.bandwidth_gb_s:.1f} GB/s, ridge {peak.ridge_point:.1f} FLOP/B "
                f"({peak.device}, {peak.threads} thread{'s' if peak.threads != 1 else ''})"
            ),
            header_style="bold",
        )
        for name in (
            "#",
            "module",
            "kind",
            "MFLOPs",
            "FLOP/B",
            "ms",
            "GFLOP/s",
            "attainable",
            "of roof",
            "bound",
        ):
            table.add_column(
                name, justify="left" if name in ("module", "kind", "bound") else "right"
            )
        for p in self.points:
            table.add_row(
                str(p.index),
                p.module,
                p.kind,
                f"{p.flops / 1e6:.1f}",
                f"{p.intensity:.1f}",
                f"{p.latency_ms:.3f}",
                f"{p.achieved_gflops:.1f}",
                f"{p.attainable_gflops:.1f}",
                f"{100 * p.fraction:.0f}%",
                p.bound,
            )
        memory = sum(p.latency_ms for p in self.points if p.bound == "memory")
        table.caption = (
            f"{len(self.points)} layers, {self.total_ms:.2f} ms timed one by one; "
            f"memory-bound layers take {memory:.2f} ms "
            f"({100 * memory / self.total_ms if self.total_ms else 0:.0f}%); "
            f"{format_count(self.profile.flops)} FLOPs in all"
        )
        return table


def roofline(
    model: nn.Module,
    input_size: int | Sequence[int] = (3, 224, 224),
    *,
    peak: MachinePeak | None = None,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    seconds_per_layer: float = 0.05,
) -> Roofline:
    """Profile ``model``, time each convolution and linear layer alone, place it on the roofline.

    ``peak`` defaults to :func:`measure_machine_peak` of the model's device.
    """
    prof = profile_model(model, input_size, batch_size=batch_size, device=device)
    device = torch.device(prof.device)
    if peak is None:
        peak = measure_machine_peak(device)
    dtype = getattr(torch, prof.dtype)
    points: list[RooflinePoint] = []
    for row in prof.rows:
        if row.kind not in _TIMED_KINDS or row.weight_shape is None:
            continue
        latency = time_layer(row, device=device, dtype=dtype, min_seconds=seconds_per_layer)
        achieved = row.flops / latency.median_ms / 1e6
        attainable = peak.attainable_gflops(row.intensity)
        points.append(
            RooflinePoint(
                index=row.index,
                module=row.module,
                kind=row.kind,
                layer_type=row.layer_type,
                macs=row.macs,
                flops=row.flops,
                memory_access=row.memory_access,
                intensity=row.intensity,
                latency_ms=latency.median_ms,
                achieved_gflops=achieved,
                attainable_gflops=attainable,
                fraction=achieved / attainable if attainable else 0.0,
                bound="memory" if row.intensity < peak.ridge_point else "compute",
            )
        )
    return Roofline(
        model=prof.model,
        input_shape=prof.input_shape,
        peak=peak,
        points=points,
        profile=prof,
    )
