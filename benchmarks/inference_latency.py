"""Batch-1 CPU latency: ``bench --backend best`` against each runtime it contains at that
runtime's plain defaults (issue 22: ``best`` must never be slower than any of them).

For each model, ``best`` is chosen exactly as ``lightnets bench --backend best --allow-int8``
(``--no-int8``: without ``--allow-int8``) chooses it (:func:`lightnets.deploy.bench.benchmark`:
check, time briefly in interleaved rounds, keep the fastest), then rebuilt with the options
:func:`~lightnets.deploy.bench.build_backend` gives it and timed in one interleaved run beside
the plain defaults a user gets from each runtime's quick-start:

- ``ORT default``: ``onnxruntime.InferenceSession(model)``, its thread pools spinning as they do
  by default, its own thread count;
- ``OV default``: ``openvino.Core().compile_model(model, "CPU")`` (bf16 on CPUs with bf16
  instructions: the precision is printed beside it);
- ``eager``: the PyTorch module, at the thread policy's count.

Where a runtime's default computes in another precision (OpenVINO's CPU plugin runs bf16 by
default on CPUs with bf16 instructions), ``best`` holds it back and says so
(``precision_note``); the script then also chooses and times ``best --allow-bf16``, the like
for like comparison with that default.

Each round times every path once, in turn, so that load from other processes falls on all of
them alike; the figure is the median over rounds of each round's median latency, and the
ratio ``best / default`` (below 1: best is faster). BatchNorm statistics are estimated on
random inputs (:func:`lightnets.deploy.bench.calibrate_batchnorm`) so that outputs have a
trained network's scale.

    python benchmarks/inference_latency.py [--rounds 7] [--seconds 0.3] [--no-int8]
        [--models mobilenet_v2,shufflenet_v2] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

import lightnets
from lightnets.analysis.machine import cpu_flags, cpu_name, has_int8_dot_product
from lightnets.analysis.threads import apply_thread_policy
from lightnets.analysis.timing import measure_latency
from lightnets.deploy.accuracy import DEFAULT_MAX_DROP
from lightnets.deploy.backends import OnnxRuntimeBackend, OpenVinoBackend, get_backend
from lightnets.deploy.bench import benchmark, build_backend, calibrate_batchnorm
from lightnets.deploy.devices import DEVICES
from lightnets.fileio import write_text_atomic
from lightnets.jsonio import dumps

MODELS = {
    "mobilenet_v2": {},
    "shufflenet_v2": {"width_mult": 1.0},
    "shufflenet_v1": {"groups": 3},
    "mobilenet_v1": {"width_mult": 1.0},
    "squeezenet1_1": {},
}
DEFAULT_MODELS = "mobilenet_v2,shufflenet_v2"  # issue 22's two
SIZE = (3, 224, 224)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def plain_defaults() -> dict[str, object]:
    """The runtimes at their quick-start defaults (threads ``None``: the runtime's own)."""
    return {
        "ORT default": OnnxRuntimeBackend(None, spinning=True),
        "OV default": OpenVinoBackend(None),
        "eager": get_backend("eager"),
    }


def best_record(name: str, model, args, threads: int, allow_bf16: bool = False):
    """The record ``bench --backend best`` chooses (``--allow-int8`` unless ``--no-int8``)."""
    records = benchmark(
        model,
        "best",
        model_name=name,
        input_size=SIZE,
        threads=threads,
        allow_int8=not args.no_int8,
        allow_bf16=allow_bf16,
        min_seconds=args.seconds,
        announce=lambda line: None,
    )
    (chosen,) = [r for r in records if r.best]
    for record in records:  # candidates that failed or were wrong: not in the race
        if not record.best and not allow_bf16:
            print(f"  {name}: {record.backend} {record.status} ({record.note})", file=sys.stderr)
    return chosen


def measure_model(name: str, hparams: dict, args, threads: int) -> dict:
    torch.manual_seed(0)
    model = calibrate_batchnorm(lightnets.create_model(name, **hparams), SIZE)
    chosen = best_record(name, model, args, threads)
    x = torch.randn(1, *SIZE, generator=torch.Generator().manual_seed(1))
    int8 = {"calibration": None, "evaluation": None, "max_drop": DEFAULT_MAX_DROP}
    paths = {
        f"best ({chosen.backend})": build_backend(DEVICES["cpu"], chosen.backend, threads, int8)
    }
    # A runtime's default held back for its precision (OpenVINO's bf16 on bf16 CPUs) is
    # compared with best allowed that precision too: like with like.
    held = {r["precision"] for r in chosen.extra.get("held_back", {}).values()}
    chosen_bf16 = None
    if "bf16" in held:
        chosen_bf16 = best_record(name, model, args, threads, allow_bf16=True)
        paths[f"best bf16 ({chosen_bf16.backend})"] = build_backend(
            DEVICES["cpu"], chosen_bf16.backend, threads, int8
        )
    paths.update(plain_defaults())
    runners, precision = {}, {}
    for label, backend in paths.items():
        if not backend.available():
            print(f"  {label}: not installed, skipped", file=sys.stderr)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runners[label] = backend.prepare(model, x)
        precision[label] = backend.precision
    per_round: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(args.rounds):
        for label, run in runners.items():
            stats = measure_latency(
                lambda r=run: r(x), warmup=2, min_iters=5, min_seconds=args.seconds
            )
            per_round[label].append(stats.median_ms)
    return {
        "best": chosen.backend,
        "candidates": chosen.extra.get("candidates", {}),
        "int8_note": chosen.extra.get("int8_note", ""),
        "precision_note": chosen.extra.get("precision_note", ""),
        "best_bf16": chosen_bf16.backend if chosen_bf16 is not None else None,
        "latency_ms": {label: statistics.median(v) for label, v in per_round.items()},
        "precision": precision,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="timed seconds per round")
    parser.add_argument("--threads", type=int, default=None, help="default: the thread policy")
    parser.add_argument("--no-int8", action="store_true", help="best without --allow-int8")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"of {', '.join(MODELS)}")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; allowed: {', '.join(MODELS)}")
    choice = apply_thread_policy(args.threads)
    flags = cpu_flags()
    isa = ", ".join(f for f in ISA_FLAGS if f in flags) or "unknown"
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(
        f"# {started}; {cpu_name()} ({isa}; int8 dot product: {has_int8_dot_product()}); "
        f"torch {torch.__version__}; {choice.line()}; batch 1, 3x224x224; median over "
        f"{args.rounds} interleaved rounds of {args.seconds} s"
    )
    results = {}
    for name in args.models.split(","):
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results[name] = measure_model(name, MODELS[name], args, choice.threads)
    print(
        "| model | best (path) ms | ORT default ms | OV default ms | eager ms | "
        "best/ORT | best/OV | best/eager | best --allow-bf16 (path) ms | that/OV |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        ms = result["latency_ms"]
        best_label = next(label for label in ms if label.startswith("best ("))
        best = ms[best_label]
        bf16_label = next((label for label in ms if label.startswith("best bf16")), None)
        if bf16_label is None:
            bf16_cells = "- | -"
        else:
            bf16_precision = result["precision"][bf16_label]
            bf16_cells = f"{ms[bf16_label]:.2f} ({result['best_bf16']}, {bf16_precision}) | " + (
                f"{ms[bf16_label] / ms['OV default']:.2f}" if "OV default" in ms else "-"
            )

        def cell(label, ms=ms, result=result):
            if label not in ms:
                return "-"
            precision = result["precision"][label]
            return f"{ms[label]:.2f}" + ("" if precision == "fp32" else f" ({precision})")

        def ratio(label, ms=ms, best=best):
            return f"{best / ms[label]:.2f}" if label in ms else "-"

        print(
            f"| {name} | **{best:.2f}** ({result['best']}, {result['precision'][best_label]}) | "
            f"{cell('ORT default')} | {cell('OV default')} | {cell('eager')} | "
            f"{ratio('ORT default')} | {ratio('OV default')} | {ratio('eager')} | {bf16_cells} |"
        )
    for name, result in results.items():
        quick = ", ".join(f"{k} {v:.2f}" for k, v in result["candidates"].items())
        print(f"  {name}: best's brief timings (ms): {quick}")
        for note in ("int8_note", "precision_note"):
            if result[note]:
                print(f"  {name}: {result[note]}")
    if args.json:
        write_text_atomic(args.json, dumps({"started": started, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
