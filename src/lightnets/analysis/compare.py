"""Side-by-side cost of several networks: counted (params, MACs, memory) and measured (latency).

ShuffleNet V2 (Ma et al. 2018, Section 1) argues that FLOPs are an indirect measure of speed:
two networks with the same MACs can run at very different speeds, because memory access and
the degree of parallelism differ. :func:`compare` puts the counts and a real batch-1 latency on
this machine side by side, with the papers' ImageNet top-1 where they report one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lightnets.analysis.counter import profile
from lightnets.analysis.machine import MachineLoad, cpu_name
from lightnets.analysis.reference import PaperFigure, paper_figure
from lightnets.analysis.timing import (
    LatencyStats,
    Measurement,
    measure_interleaved,
    torch_threads,
    validate_threads,
)
from lightnets.errors import InvalidArgumentError, check_float, check_int

__all__ = ["Comparison", "ComparisonRow", "ModelSpec", "compare", "default_specs", "parse_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name and the hyperparameters that differ from its defaults."""

    name: str
    hparams: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.hparams)

    @property
    def label(self) -> str:
        """``mobilenet_v1 0.5x``, ``shufflenet_v1 1x g=8``: the papers' way of naming them."""
        from lightnets.models import get_model_entry

        entry = get_model_entry(self.name)
        values = {**entry.defaults, **self.kwargs}
        parts = []
        if "width_mult" in values:
            parts.append(f"{values['width_mult']:g}x")
        if "groups" in values:
            parts.append(f"g={values['groups']}")
        for key, value in self.hparams:
            if key not in ("width_mult", "groups"):
                parts.append(f"{key}={value}")
        return " ".join([self.name, *parts])


def parse_spec(text: str) -> ModelSpec:
    """``NAME`` or ``NAME:key=value,key=value`` (e.g. ``mobilenet_v1:width_mult=0.5``)."""
    name, _, rest = text.partition(":")
    hparams: list[tuple[str, Any]] = []
    for item in filter(None, rest.split(",")):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(
                f"cannot read {text!r}: write NAME or NAME:key=value[,key=value]"
            )
        hparams.append((key.strip().replace("-", "_"), _parse_value(raw.strip())))
    return ModelSpec(name.strip(), tuple(hparams))


def _parse_value(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def default_specs() -> tuple[ModelSpec, ...]:
    """Every registered family at the configurations it declares for comparison (its default,
    and the widths its paper's trade-off curve is made of), in the zoo's order."""
    from lightnets.models import model_entries

    return tuple(
        ModelSpec(entry.name, tuple(config.items()))
        for entry in model_entries()
        for config in entry.compare_configs
    )


@dataclass
class ComparisonRow:
    """One network: counts at batch 1, float32, and the measured batch-1 latency."""

    label: str
    name: str
    hparams: dict[str, Any]
    input_size: int
    params: int
    macs: int
    flops: int
    memory_access: int
    elementwise_ops: int
    weights_bytes_fp32: int
    weights_bytes_int8: int
    peak_activation_bytes: int
    latency: LatencyStats | None = None
    paper: PaperFigure | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = self.latency.to_dict() if self.latency else None
        data["paper"] = asdict(self.paper) if self.paper else None
        if self.paper:
            data["paper"]["hparams"] = dict(self.paper.hparams)
        return data


@dataclass
class Comparison:
    """Every row of :func:`compare`, with how the latencies were measured and whether the
    measurement can be trusted (``stable``, and ``note`` in one line)."""

    rows: list[ComparisonRow]
    input_size: int
    threads: int
    device: str = "cpu"
    stable: bool | None = None
    note: str = ""
    load: MachineLoad | None = None
    conventions: dict[str, str] = field(
        default_factory=lambda: {
            "macs": "multiply-accumulates of convolutions and linear layers (papers' FLOPs)",
            "flops": "2 x macs",
            "memory_access": "bytes read + written by all operations, float32, batch 1",
            "weights_bytes_fp32": "4 bytes per parameter",
            "weights_bytes_int8": "1 byte per parameter (quantization scales left out)",
            "peak_activation_bytes": "largest total of live activations, float32, batch 1",
            "latency": (
                "batch-1 forward pass, torch.inference_mode, all models timed in interleaved "
                "rounds; median of per-call times with p10/p25/p75/p90 and ci_rel, the relative "
                "half-width of the 95% confidence interval of the median"
            ),
            "stable": (
                "false when the machine was busy (other processes on our cores, CPU steal), the "
                "median's confidence interval stayed wider than the target, or p90/p10 > 1.5; "
                "note says which"
            ),
            "paper": "the paper's ImageNet figures for the same configuration, if any",
        }
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "threads": self.threads,
            "device": self.device,
            "torch": torch.__version__,
            "stable": self.stable,
            "note": self.note,
            "load": self.load.to_dict() if self.load else None,
            "conventions": self.conventions,
            "rows": [row.to_dict() for row in self.rows],
        }


def _row(spec: ModelSpec, input_size: int | None) -> tuple[ComparisonRow, torch.nn.Module]:
    """Build and profile one spec (ImageNet variant, 1000 classes) at batch 1."""
    from lightnets.models import create_model

    model = create_model(spec.name, **spec.kwargs).eval()
    size = input_size if input_size is not None else model.default_input_size[-1]
    prof = profile(model, (model.default_input_size[0], size, size))
    row = ComparisonRow(
        label=spec.label,
        name=spec.name,
        hparams={k: v for k, v in model.hparams.items() if k != "name"},
        input_size=size,
        params=prof.params,
        macs=prof.macs,
        flops=prof.flops,
        memory_access=prof.memory_access,
        elementwise_ops=prof.elementwise_ops,
        weights_bytes_fp32=prof.params * 4,
        weights_bytes_int8=prof.params,
        peak_activation_bytes=prof.peak_activation_bytes,
        paper=paper_figure(spec.name, model.hparams, size),
    )
    return row, model


def _time_rows(
    rows: list[ComparisonRow], models: list[torch.nn.Module], seconds: float
) -> Measurement:
    """Time every model at batch 1 in interleaved rounds; fill each row's latency."""
    calls = {}
    for index, (row, model) in enumerate(zip(rows, models, strict=True)):
        x = torch.randn(1, 3, row.input_size, row.input_size)
        calls[str(index)] = lambda m=model, x=x: m(x)
    with torch.inference_mode():
        measurement = measure_interleaved(calls, warmup=3, min_iters=10, min_seconds=seconds)
    for index, row in enumerate(rows):
        row.latency = measurement.stats[str(index)]
    return measurement


def compare(
    specs: Sequence[ModelSpec | str] | None = None,
    *,
    input_size: int | None = None,
    latency: bool = True,
    latency_seconds: float = 1.0,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Profile every spec (ImageNet variant, 1000 classes), then time them at batch 1 on CPU.

    All models are built and profiled before any timing starts, so a bad name or an input size
    too small for one of them fails fast. The models are then timed together in interleaved
    rounds (:func:`~lightnets.analysis.timing.measure_interleaved`), at least
    ``latency_seconds`` each, and longer while the machine is busy or a median is imprecise.
    ``threads`` sets torch's thread count for the timing (default: leave it as it is).
    """
    chosen = [parse_spec(s) if isinstance(s, str) else s for s in (specs or default_specs())]
    if input_size is not None:
        check_int("input size", input_size, minimum=1)
    validate_threads(threads)
    check_float("latency_seconds", latency_seconds, minimum=0.0)
    built = [_row(spec, input_size) for spec in chosen]
    rows = [row for row, _ in built]
    models = [model for _, model in built]
    measurement = None
    with torch_threads(threads) as used:
        if latency and rows:
            if progress:
                progress(
                    f"timing {len(rows)} models in interleaved rounds, at least "
                    f"{latency_seconds:g} s each (longer while the machine is busy)"
                )
            measurement = _time_rows(rows, models, latency_seconds)
    return Comparison(
        rows=rows,
        input_size=rows[0].input_size if rows else 0,
        threads=used,
        device=f"cpu ({cpu_name()})",
        stable=measurement.stable if measurement else None,
        note=measurement.note if measurement else "",
        load=measurement.load if measurement else None,
    )
