"""The roofline model (Williams, Waterman and Patterson, CACM 2009) for one network, measured here.

A layer that performs ``F`` FLOPs while moving ``B`` bytes has arithmetic intensity ``I = F / B``
and cannot run faster than ``min(peak compute, I x memory bandwidth)``. Both roofs are measured
on this machine (:func:`measure_machine_peak`); every convolution and linear layer is then timed
alone on the input shape it sees inside the network, and placed under the roof. Low-intensity
layers (depthwise convolutions, the layers ShuffleNet V2's guidelines are about) sit under the
slanted, memory-bound part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightnets.analysis.counter import profile as profile_model
from lightnets.analysis.kinds import TIMED_KINDS, OpKind
from lightnets.analysis.machine import cpu_name
from lightnets.analysis.report import LayerRecord, Profile
from lightnets.analysis.timing import (
    LatencyStats,
    Measurement,
    measure_interleaved,
    measure_latency,
    torch_threads,
)
from lightnets.errors import InvalidArgumentError, check_float

__all__ = [
    "ABOVE_MEMORY_ROOF",
    "ABOVE_PEAK",
    "MachinePeak",
    "Roofline",
    "RooflinePoint",
    "measure_machine_peak",
    "of_peak",
    "roofline",
    "time_layer",
]


@dataclass(frozen=True)
class MachinePeak:
    """Measured roofs of one device: float32 compute (GFLOP/s) and memory bandwidth (GB/s),
    with the thread count they were measured with and whether that measurement was stable."""

    device: str
    gflops: float
    bandwidth_gb_s: float
    threads: int
    method: str
    stable: bool = True
    note: str = ""

    @property
    def ridge_point(self) -> float:
        """Intensity (FLOP/byte) where the roof turns from memory-bound to compute-bound."""
        return self.gflops / self.bandwidth_gb_s

    def attainable_gflops(self, intensity: float) -> float:
        return min(self.gflops, intensity * self.bandwidth_gb_s)

    def bound(self, intensity: float) -> str:
        """``memory`` left of the ridge point (under the sloped roof), else ``compute``."""
        return "memory" if intensity < self.ridge_point else "compute"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ridge_point"] = self.ridge_point
        return data


def of_peak(achieved: float | None, peak: float | None) -> tuple[float | None, str]:
    """``achieved / peak`` capped at 1, and a flag when the measurement exceeded the peak.

    Nothing runs faster than its machine's peak: a ratio above 1 means the peak or the
    achieved speed was mis-measured (typically the peak, on a busy machine), so it is never
    reported as a result. ``(None, "")`` when either is unknown.
    """
    if achieved is None or not peak:
        return None, ""
    fraction = achieved / peak
    if fraction > 1.0:
        return 1.0, (
            f"measured {100 * fraction:.0f}% of peak: a measurement error (the peak was "
            "underestimated, e.g. measured while the machine was busy), shown as 100%"
        )
    return fraction, ""


_PEAK_CACHE: dict[tuple[str, int], MachinePeak] = {}
_CONV_CHANNELS, _CONV_SIZE = 256, 28
_CONV3_FLOP = 2 * _CONV_CHANNELS * _CONV_CHANNELS * 9 * _CONV_SIZE * _CONV_SIZE
_CONV1_FLOP = _CONV3_FLOP // 9
_COPY_NUMEL = 32 * 2**20
_COPY_BYTES = _COPY_NUMEL * 4
_PEAK_METHOD = (
    "compute: fastest call of float32 convolutions 256->256 channels on 1x256x28x28, 3x3 "
    "(0.92 GFLOP) and 1x1 (0.10 GFLOP), the faster counting; bandwidth: fastest copy "
    "(2 x 128 MiB moved) or add (3 x 128 MiB) of 128 MiB float32 tensors; all four timed in "
    "interleaved rounds with the layers' thread count"
)


def _roof_kernels(device: torch.device) -> dict[str, Callable[[], Any]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, _CONV_CHANNELS, _CONV_SIZE, _CONV_SIZE, generator=generator).to(device)
    w3 = torch.randn(_CONV_CHANNELS, _CONV_CHANNELS, 3, 3, generator=generator).to(device)
    w1 = w3[:, :, 1:2, 1:2].contiguous()
    a = torch.rand(_COPY_NUMEL, generator=generator).to(device)
    b = torch.rand(_COPY_NUMEL, generator=generator).to(device)
    c = torch.empty_like(a)
    return {
        "conv3x3": lambda: F.conv2d(x, w3, padding=1),
        "conv1x1": lambda: F.conv2d(x, w1),
        "copy": lambda: c.copy_(a),
        "add": lambda: torch.add(a, b, out=c),
    }


def measure_machine_peak(device: torch.device | str = "cpu", seconds: float = 3.0) -> MachinePeak:
    """Measure peak float32 compute and memory bandwidth of ``device`` (cached per process and
    thread count), with ``torch.get_num_threads()`` threads: call it under the thread count the
    layers will be timed with.

    Compute: large 3x3 and 1x1 convolutions (256 -> 256 channels on a 28x28 map), the kernels
    these networks are made of; the fastest call gives GFLOP/s. (A matrix product would do as
    well on Intel, but MKL's matmul under-reports on AMD processors.) Bandwidth: a copy and an
    add of 128 MiB tensors (bytes read plus bytes written, per second). About ``seconds`` in
    all, longer (up to 4x) while the machine is busy.
    """
    device = torch.device(device)
    check_float("seconds", seconds, minimum=0.0, exclusive_minimum=True)
    key = (str(device), torch.get_num_threads())
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    with torch.inference_mode():
        result = measure_interleaved(
            _roof_kernels(device),
            warmup=2,
            min_iters=5,
            min_seconds=seconds / 4,
            max_seconds=seconds,
            device=device,
        )
    fastest = {name: stats.min_ms for name, stats in result.stats.items()}
    peak = MachinePeak(
        device=f"cpu ({cpu_name()})" if device.type == "cpu" else str(device),
        gflops=max(_CONV3_FLOP / fastest["conv3x3"], _CONV1_FLOP / fastest["conv1x1"]) / 1e6,
        bandwidth_gb_s=max(2 * _COPY_BYTES / fastest["copy"], 3 * _COPY_BYTES / fastest["add"])
        / 1e6,
        threads=torch.get_num_threads(),
        method=_PEAK_METHOD,
        stable=not result.load.busy,
        note=_roof_note(result),
    )
    _PEAK_CACHE[key] = peak
    return peak


def _roof_note(result: Measurement) -> str:
    """The roofs are fastest calls, not medians: only a busy machine makes them doubtful."""
    if result.load.busy:
        return "roofs measured on a busy machine: " + "; ".join(result.load.reasons())
    return "roofs measured on a quiet machine"


def _layer_call(
    row: LayerRecord, device: torch.device | str, dtype: torch.dtype
) -> Callable[[], torch.Tensor]:
    """The row's convolution or linear layer on random tensors of its recorded shapes."""
    if row.kind not in TIMED_KINDS or row.weight_shape is None:
        raise InvalidArgumentError(f"row {row.index} ({row.kind}) is not a convolution or linear")
    generator = torch.Generator().manual_seed(row.index)

    def rand(shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=generator, dtype=dtype).to(device)

    x = rand(row.input_shape)
    w = rand(row.weight_shape)
    b = rand(row.weight_shape[:1]) if row.has_bias else None
    if row.kind == OpKind.LINEAR:
        return lambda: F.linear(x, w, b)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(row.kernel or ())]
    stride, padding, dilation, groups = row.stride, row.padding, row.dilation, row.groups
    if stride is None or padding is None or dilation is None or groups is None:
        raise ValueError(f"{row.module}: a convolution recorded without its geometry")
    return lambda: conv(x, w, b, stride, padding, dilation, groups)


def time_layer(
    row: LayerRecord,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    min_seconds: float = 0.05,
) -> LatencyStats:
    """Latency of one convolution or linear row run alone on its recorded shapes.

    Random input, weight and bias of the recorded shapes, the recorded stride, padding,
    dilation and groups: the same kernel the network runs, without its neighbours.
    """
    fn = _layer_call(row, device, dtype)
    with torch.inference_mode():
        return measure_latency(
            fn, warmup=2, min_iters=5, min_seconds=min_seconds, max_seconds=4 * min_seconds + 0.05
        )


#: Why a point sits above its roof.
ABOVE_MEMORY_ROOF = "above the memory roof: its working set stays in cache"
ABOVE_PEAK = "above the compute peak: a measurement error (shown at 100%)"


@dataclass(frozen=True)
class RooflinePoint:
    """One layer under the roof: its intensity, measured speed, and the roof above it.

    ``fraction`` (achieved / attainable) is capped at 1; ``flag`` says why a point measured
    above its roof: below the ridge, cache (the sloped roof is DRAM bandwidth); at the flat
    compute roof, nothing but a measurement error.
    """

    index: int
    module: str
    kind: OpKind
    layer_type: str | None
    macs: int
    flops: int
    memory_access: int
    intensity: float
    latency_ms: float
    latency_p10_ms: float
    latency_p90_ms: float
    achieved_gflops: float
    attainable_gflops: float
    fraction: float
    bound: str
    flag: str = ""


def _point(row: LayerRecord, stats: LatencyStats, peak: MachinePeak) -> RooflinePoint:
    achieved = row.flops / stats.median_ms / 1e6
    attainable = peak.attainable_gflops(row.intensity)
    flag = ""
    if achieved > peak.gflops:
        flag = ABOVE_PEAK
    elif achieved > attainable:
        flag = ABOVE_MEMORY_ROOF
    return RooflinePoint(
        index=row.index,
        module=row.module,
        kind=row.kind,
        layer_type=row.layer_type,
        macs=row.macs,
        flops=row.flops,
        memory_access=row.memory_access,
        intensity=row.intensity,
        latency_ms=stats.median_ms,
        latency_p10_ms=stats.p10_ms,
        latency_p90_ms=stats.p90_ms,
        achieved_gflops=achieved,
        attainable_gflops=attainable,
        fraction=min(1.0, achieved / attainable) if attainable else 0.0,
        bound=peak.bound(row.intensity),
        flag=flag,
    )


@dataclass
class Roofline:
    """Every convolution and linear layer of one network, placed on this machine's roofline,
    with whether the measurement can be trusted (``stable``; ``note`` in one line)."""

    model: str
    input_shape: tuple[int, ...]
    peak: MachinePeak
    points: list[RooflinePoint]
    profile: Profile = field(repr=False)
    stable: bool = True
    note: str = ""

    @property
    def total_ms(self) -> float:
        return sum(p.latency_ms for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hparams": dict(self.profile.hparams),  # width multiplier, groups, variant, ...
            "input_shape": list(self.input_shape),
            "stable": self.stable,
            "note": self.note,
            "peak": self.peak.to_dict(),
            "layers_total_ms": self.total_ms,
            "points": [asdict(p) for p in self.points],
            "conventions": {
                "intensity": "FLOPs (2 x MACs) per byte of memory access (inputs, weights, "
                "outputs), float32",
                "attainable_gflops": "min(peak gflops, intensity x bandwidth)",
                "fraction": "achieved / attainable, capped at 1 (flag says why a point was above)",
                "bound": "memory if intensity < peak.ridge_point, else compute",
                "threads": "the roofs and the layers are measured with the same thread count",
            },
        }


def _roofline_note(peak: MachinePeak, layers: Measurement, points: list[RooflinePoint]) -> str:
    parts = [] if peak.stable else [peak.note]
    if not layers.stable:
        parts.append(f"layers: {layers.note}")
    errors = sum(p.flag == ABOVE_PEAK for p in points)
    if errors:
        parts.append(f"{errors} layer(s) measured above the compute peak (shown at 100%)")
    return "; ".join(parts) if parts else f"{peak.note}; layers: {layers.note}"


def roofline(
    model: nn.Module,
    input_size: int | Sequence[int] = (3, 224, 224),
    *,
    peak: MachinePeak | None = None,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    seconds_per_layer: float = 0.05,
    threads: int | None = None,
    peak_seconds: float = 3.0,
) -> Roofline:
    """Profile ``model``, time each convolution and linear layer alone, place it on the roofline.

    The roofs (``peak``, default :func:`measure_machine_peak` of the model's device) and the
    layers are measured with the same thread count, ``threads`` (``None``: torch's current);
    the layers are timed in interleaved rounds (:func:`measure_interleaved`).

    Raises:
        InvalidArgumentError: ``peak`` was measured with another thread count.
    """
    check_float("seconds_per_layer", seconds_per_layer, minimum=0.0)
    prof = profile_model(model, input_size, batch_size=batch_size, device=device)
    device = torch.device(prof.device)
    dtype = getattr(torch, prof.dtype)
    rows = [r for r in prof.rows if r.kind in TIMED_KINDS and r.weight_shape is not None]
    with torch_threads(threads) as used:
        if peak is None:
            peak = measure_machine_peak(device, seconds=peak_seconds)
        if peak.threads != used:
            raise InvalidArgumentError(
                f"the roofs were measured with {peak.threads} threads and the layers would be "
                f"timed with {used}: measure both with the same thread count"
            )
        calls = {str(r.index): _layer_call(r, device, dtype) for r in rows}
        with torch.inference_mode():
            layers = (
                measure_interleaved(
                    calls,
                    warmup=2,
                    min_iters=5,
                    min_seconds=seconds_per_layer,
                    max_seconds=4 * seconds_per_layer + 0.05,
                    device=device,
                )
                if calls
                else None
            )
    points = [_point(r, layers.stats[str(r.index)], peak) for r in rows] if layers else []
    return Roofline(
        model=prof.model,
        input_shape=prof.input_shape,
        peak=peak,
        points=points,
        profile=prof,
        stable=peak.stable and (layers is None or layers.stable),
        note=_roofline_note(peak, layers, points) if layers else peak.note,
    )
