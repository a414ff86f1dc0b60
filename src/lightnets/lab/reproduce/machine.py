"""This machine: the conditions (processor, instruction sets, threads, load), batch-1 latency of
the zoo (:func:`lightnets.analysis.compare.compare`), the roofline of one model per family
(:func:`lightnets.analysis.roofline.roofline`), whether each timing was stable, and the one
timing claim the papers make: MobileNets spend 95% of their computation time in 1x1
convolutions (Section 3.1)."""

from __future__ import annotations

import platform
import time
from typing import Any

from lightnets.lab.reproduce.common import Context, timed
from lightnets.lab.reproduce.report import (
    SectionResult,
    Table,
    compare_points,
    count_text,
    number,
    percent_text,
    verdict,
)

ID = "machine"
TITLE = "This machine"
PAPER = "measured here; MobileNets (Howard et al. 2017), Section 3.1, for the time claim"

#: Instruction-set extensions that decide how fast these networks run (x86 and Arm names).
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)
#: MobileNets, Section 3.1: "MobileNet spends 95% of it's computation time in 1x1 convolutions".
PAPER_1X1_TIME = 95.0


def inputs(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    return {
        "compare_specs": list(plan.compare_specs),
        "roofline_specs": list(plan.roofline_specs),
        "latency_seconds": plan.latency_seconds,
        "seconds_per_layer": plan.seconds_per_layer,
        "peak_seconds": plan.peak_seconds,
        "threads": plan.threads,
    }


def isa_flags() -> str:
    """The instruction-set extensions /proc/cpuinfo lists, of :data:`ISA_FLAGS`."""
    from lightnets.analysis.machine import read_proc

    text = read_proc("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            present = set(line.split(":", 1)[1].split())
            return " ".join(flag for flag in ISA_FLAGS if flag in present) or "none listed"
    return "unknown (no /proc/cpuinfo)"


def conditions(ctx: Context) -> dict[str, Any]:
    import torch

    from lightnets.analysis.machine import cpu_name, load_average, usable_cores
    from lightnets.models.memory import available_memory

    available, total = available_memory()
    load = load_average()
    return {
        "processor": cpu_name(),
        "instruction sets": isa_flags(),
        "PyTorch CPU capability": torch.backends.cpu.get_cpu_capability(),
        "cores usable": usable_cores(),
        "threads used for every timing": ctx.plan.threads,
        "load average (1 min) at start": round(load, 2) if load is not None else "unknown",
        "memory": f"{total / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def run(ctx: Context) -> SectionResult:
    result = SectionResult(
        ID,
        TITLE,
        PAPER,
        "What the timings on this page were measured on, how fast the zoo runs here at batch "
        "1, and where each network's layers sit under this machine's roofline.",
    )
    result.conditions.update(conditions(ctx))
    ctx.log("timing the zoo at batch 1")
    latency, comparison = latency_table(ctx)
    result.tables.append(latency)
    result.figures.append(_compare_figure(ctx, comparison))
    ctx.log("measuring this machine's roofs and every layer")
    roofs, rooflines = roofline_table(ctx)
    result.tables.append(roofs)
    result.tables.append(time_share(rooflines))
    for spec, value in rooflines.items():
        result.figures.append(_roofline_figure(ctx, spec, value))
    if rooflines:
        peak = next(iter(rooflines.values())).peak
        result.conditions.update(
            {
                "peak compute": f"{peak.gflops:.1f} GFLOP/s ({peak.threads} thread(s))",
                "memory bandwidth": f"{peak.bandwidth_gb_s:.1f} GB/s",
                "ridge point": f"{peak.ridge_point:.1f} FLOP/byte",
                "roofs": peak.note,
            }
        )
    return result


def latency_table(ctx: Context) -> tuple[Table, Any]:
    from lightnets.analysis.compare import compare

    plan = ctx.plan
    comparison = compare(
        list(plan.compare_specs), latency_seconds=plan.latency_seconds, threads=plan.threads
    )
    table = Table(
        "machine.latency",
        "Batch-1 latency of the zoo",
        f"lightnets compare: batch 1, 224x224, float32, {comparison.threads} thread(s), "
        "torch.inference_mode; all networks timed together in interleaved rounds (at least "
        f"{plan.latency_seconds:g} s each, longer while the machine is busy or a median is "
        "imprecise); median and p10-p90 of per-call times; stable = quiet machine, median's "
        "95% confidence interval within 3%, p90/p10 at most 1.5",
        [
            "network",
            "MACs",
            "params",
            "paper top-1",
            "latency (ms)",
            "p10-p90 (ms)",
            "verdict",
            "note",
        ],
    )
    for row in comparison.rows:
        latency = timed(row)
        top1 = row.paper.top1 if row.paper is not None else None
        table.add(
            row.label,
            row.label,
            number(row.macs, count_text(row.macs, 1)),
            number(row.params, count_text(row.params, 2)),
            number(top1, f"{top1}%") if top1 is not None else number(None, "-"),
            number(latency.median_ms, f"{latency.median_ms:.2f}"),
            number(None, f"{latency.p10_ms:.2f}-{latency.p90_ms:.2f}"),
            verdict("stable" if latency.stable else "unstable"),
            latency.note,
        )
    table.notes.append(f"the whole measurement: {comparison.note}")
    return table, comparison


def roofline_table(ctx: Context) -> tuple[Table, dict[str, Any]]:
    from lightnets.analysis.compare import parse_spec
    from lightnets.analysis.roofline import roofline
    from lightnets.models import create_model

    plan = ctx.plan
    table = Table(
        "machine.roofline",
        "Every convolution and FC layer under this machine's roofline",
        f"lightnets roofline: the roofs measured with {plan.threads} thread(s) (fastest "
        "float32 3x3/1x1 convolution; fastest 128 MiB copy/add), then every conv and FC layer "
        f"timed alone on its own input shape (at least {plan.seconds_per_layer:g} s each, "
        "interleaved rounds); memory-bound = intensity below the ridge point",
        [
            "network",
            "layers",
            "sum of layer medians (ms)",
            "memory-bound share of time",
            "depthwise share of MACs",
            "depthwise share of time",
            "verdict",
            "note",
        ],
    )
    results: dict[str, Any] = {}
    for text in plan.roofline_specs:
        spec = parse_spec(text)
        model = create_model(spec.name, **spec.kwargs).eval()
        result = roofline(
            model,
            (3, 224, 224),
            threads=plan.threads,
            seconds_per_layer=plan.seconds_per_layer,
            peak_seconds=plan.peak_seconds,
        )
        results[text] = result
        total_ms = result.total_ms
        total_macs = sum(p.macs for p in result.points) or 1
        memory_ms = sum(p.latency_ms for p in result.points if p.bound == "memory")
        depthwise = [p for p in result.points if p.kind == "depthwise_conv"]
        dw_macs = 100 * sum(p.macs for p in depthwise) / total_macs
        dw_ms = 100 * sum(p.latency_ms for p in depthwise) / total_ms if total_ms else 0.0
        memory_share = 100 * memory_ms / total_ms if total_ms else 0.0
        table.add(
            text,
            spec.label,
            number(len(result.points), str(len(result.points))),
            number(total_ms, f"{total_ms:.2f}"),
            number(memory_share, percent_text(memory_share, 1)),
            number(dw_macs, percent_text(dw_macs, 1)),
            number(dw_ms, percent_text(dw_ms, 1)),
            verdict("stable" if result.stable else "unstable"),
            result.note,
        )
    return table, results


def time_share(rooflines: dict[str, Any]) -> Table:
    """MobileNets, Section 3.1: the share of computation time in 1x1 convolutions."""
    table = Table(
        "machine.time_share",
        "MobileNets, Section 3.1: 95% of the computation time in 1x1 convolutions",
        "the roofline's per-layer medians of mobilenet_v1 (width 1.0, 224 px): the 1x1 "
        "convolutions' share of the summed conv and FC layer times, each layer timed alone",
        ["network", "quantity", "paper", "ours", "difference", "verdict", "note"],
    )
    result = rooflines.get("mobilenet_v1")
    if result is None:
        table.notes.append("not measured: mobilenet_v1 is not among this plan's rooflines")
        return table
    total = result.total_ms
    conv1x1 = sum(p.latency_ms for p in result.points if p.layer_type == "conv1x1")
    macs = sum(p.macs for p in result.points)
    share_macs = 100 * sum(p.macs for p in result.points if p.layer_type == "conv1x1") / macs
    ours = 100 * conv1x1 / total
    table.add(
        "conv1x1 time",
        "mobilenet_v1 1x",
        "1x1 convolutions' share of time",
        *compare_points(PAPER_1X1_TIME, ours, step=1),
        f"their share of MACs is {share_macs:.2f}%; depthwise layers are memory-bound and take "
        "a larger share of the time than of the MACs"
        + ("" if result.stable else " (timings unstable)"),
    )
    return table


def _compare_figure(ctx: Context, comparison: Any) -> dict[str, str]:
    from lightnets.analysis.plots import plot_comparison

    return ctx.workspace.save_figure(
        plot_comparison(comparison),
        "machine_latency",
        "MACs against the latency measured here (median, p10-p90) and against the papers' "
        "ImageNet top-1",
    )


def _roofline_figure(ctx: Context, spec: str, result: Any) -> dict[str, str]:
    from lightnets.analysis.plots import plot_roofline

    name = "roofline_" + spec.replace(":", "_").replace("=", "").replace(",", "_")
    return ctx.workspace.save_figure(
        plot_roofline(result),
        name,
        f"{spec} on this machine's roofline: every conv and FC layer timed alone",
    )
