"""Batch-1 CPU latency of five lightweight networks: eager PyTorch, the runtimes' defaults, and
lightnets' best path (issue 5's speed target: best <= 0.25x eager, faster than ONNX Runtime's
and OpenVINO's defaults, with the accuracy change beside each speed-up).

Backends are prepared once per model, checked against eager fp32, then timed in interleaved
rounds (each round times every backend once, in turn), so that load from other processes
falls on all of them alike; the figure reported is the median over rounds of each round's
median latency. BatchNorm statistics are estimated on random inputs
(:func:`lightnets.deploy.bench.calibrate_batchnorm`), so that folding them is not a no-op and the
output differences are those of a trained network's scale.

    python benchmarks/inference_latency.py [--rounds 9] [--seconds 0.3] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

import lightnets
from lightnets.analysis.timing import measure_latency
from lightnets.deploy.accuracy import max_abs_diff
from lightnets.deploy.backends import get_backend
from lightnets.deploy.bench import calibrate_batchnorm, check_outputs
from lightnets.deploy.openvino_runtime import physical_cores
from lightnets.fileio import write_text_atomic
from lightnets.jsonio import dumps

MODELS = [
    ("mobilenet_v2", {}),
    ("shufflenet_v2", {"width_mult": 1.0}),
    ("shufflenet_v1", {"groups": 3}),
    ("mobilenet_v1", {"width_mult": 1.0}),
    ("squeezenet1_1", {}),
]
BASELINES = ["eager", "onnxruntime", "openvino"]
#: lightnets' fp32 paths; "best" is the fastest of them that passes the fp32 check.
FP32_PATHS = ["fused", "torchscript", "onnxruntime-opt", "openvino-opt"]
REDUCED = ["openvino-bf16", "int8"]


def measure_model(name: str, hparams: dict, rounds: int, seconds: float, backends: list[str]):
    torch.manual_seed(0)
    model = calibrate_batchnorm(lightnets.create_model(name, **hparams), (3, 224, 224))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = model(x)
    runners, info = {}, {}
    for backend_name in backends:
        backend = get_backend(backend_name)
        if not backend.available():
            print(f"  {backend_name}: not installed, skipped", file=sys.stderr)
            continue
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = backend.prepare(model, x)
        output = run(x)
        info[backend_name] = {
            "precision": backend.precision,
            "max_abs_diff": max_abs_diff(reference, output),
            "prepare_s": time.perf_counter() - started,
        }
        if backend.precision == "int8":  # the int8 rule: top-1 change (here: agreement)
            change = backend.top1_change(model)
            info[backend_name].update(ok=change.within_budget, top1_change=change.change)
        else:
            diff, tol = check_outputs(reference, output, backend.precision)
            info[backend_name]["ok"] = diff <= tol
        runners[backend_name] = run
    per_round: dict[str, list[float]] = {b: [] for b in runners}
    for _ in range(rounds):
        for backend_name, run in runners.items():
            stats = measure_latency(lambda r=run: r(x), warmup=2, min_iters=5, min_seconds=seconds)
            per_round[backend_name].append(stats.median_ms)
    for backend_name, values in per_round.items():
        info[backend_name]["latency_ms"] = statistics.median(values)
        info[backend_name]["latency_ms_min_round"] = min(values)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.3, help="timed seconds per round")
    parser.add_argument("--models", default=",".join(n for n, _ in MODELS))
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    wanted = args.models.split(",")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(
        f"# {started}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{physical_cores()} physical cores; batch 1, 3x224x224; median over {args.rounds} "
        "interleaved rounds"
    )
    results = {}
    for name, hparams in MODELS:
        if name not in wanted:
            continue
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results[name] = measure_model(
            name, hparams, args.rounds, args.seconds, BASELINES + FP32_PATHS + REDUCED
        )
    header = (
        "| model | eager ms | ORT default ms | OV default ms (precision, max diff) | "
        "lightnets best fp32 ms (path, max diff) | best/eager | best/ORT | best/OV | "
        "OV bf16 ms (max diff) | int8 ms (max diff) |"
    )
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    rows = {}
    for name, info in results.items():
        passing = [b for b in FP32_PATHS if b in info and info[b]["ok"]]
        best = min(passing, key=lambda b: info[b]["latency_ms"])
        best_ms = info[best]["latency_ms"]

        def ms(b, info=info):
            return info[b]["latency_ms"] if b in info else float("nan")

        def diff(b, info=info):
            return info[b]["max_abs_diff"] if b in info else float("nan")

        ov = info.get("openvino", {})
        rows[name] = {"best": best, **info}
        print(
            f"| {name} | {ms('eager'):.2f} | {ms('onnxruntime'):.2f} | "
            f"{ms('openvino'):.2f} ({ov.get('precision', '-')}, "
            f"{ov.get('max_abs_diff', float('nan')):.1e}) | "
            f"**{best_ms:.2f}** ({best}, {info[best]['max_abs_diff']:.1e}) | "
            f"{best_ms / ms('eager'):.3f} | {best_ms / ms('onnxruntime'):.2f} | "
            f"{best_ms / ms('openvino'):.2f} | "
            f"{ms('openvino-bf16'):.2f} ({diff('openvino-bf16'):.1e}) | "
            f"{ms('int8'):.2f} ({diff('int8'):.1e}) |"
        )
    print("\nall paths (median ms over rounds; [min round]):")
    for name, info in results.items():
        parts = [
            f"{b} {v['latency_ms']:.2f} [{v['latency_ms_min_round']:.2f}]"
            f"{'' if v['ok'] else ' WRONG'}"
            for b, v in info.items()
        ]
        print(f"  {name}: " + "; ".join(parts))
    if args.json:
        write_text_atomic(args.json, dumps({"started": started, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
