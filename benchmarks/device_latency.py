"""Batch-1 latency of the zoo on the device runtimes (ExecuTorch-XNNPACK, LiteRT; fp32 and int8)
beside eager PyTorch and ONNX Runtime's and OpenVINO's defaults, with file sizes, the fp32
output differences and the int8 top-1 change on a Fashion-MNIST-trained checkpoint (issue 20).

Every path is a row of the CPU's backend table (:data:`lightnets.deploy.devices.DEVICES`, the
table ``bench`` races), built by ``bench``'s :func:`~lightnets.deploy.bench.build_backend`,
prepared once per model and checked by the CPU row's rule of its precision (fp32: max
|logit - eager| within 1e-4 of the output scale; int8: top-1 agreement with fp32 on 256
synthetic images, as ``bench`` judges int8 without data), then all paths of a model are timed
together in interleaved rounds with :func:`lightnets.analysis.timing.measure_interleaved`, the
rules ``bench`` and ``compare`` use (warm-up, rounds in rotating order, busy rounds set aside
and re-measured, each median's 95% confidence interval, ``stable`` flags). BatchNorm statistics
are estimated on random inputs (:func:`lightnets.deploy.bench.calibrate_batchnorm`) so the
outputs have a trained network's scale. The int8 accuracy section trains MobileNet V1 0.25x
(CIFAR stem) on Fashion-MNIST and quantizes it with every int8 method
(``lightnets.deploy.quantize``), top-1 on the 10,000 test images.

    python benchmarks/device_latency.py [--seconds 1] [--models mobilenet_v2,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import lightnets
from lightnets.analysis.machine import cpu_name, read_proc
from lightnets.analysis.timing import measure_interleaved
from lightnets.deploy.bench import build_backend, calibrate_batchnorm
from lightnets.deploy.devices import DEVICES
from lightnets.fileio import write_text_atomic
from lightnets.jsonio import dumps

MODELS = [
    ("squeezenet1_0", {}),
    ("squeezenet1_1", {}),
    ("mobilenet_v1", {"width_mult": 1.0}),
    ("mobilenet_v1", {"width_mult": 0.25}),
    ("mobilenet_v2", {"width_mult": 1.0}),
    ("shufflenet_v1", {"groups": 3}),
    ("shufflenet_v2", {"width_mult": 1.0}),
    ("shufflenet_v2", {"width_mult": 0.5}),
]
PATHS = [
    "eager",
    "onnxruntime",
    "openvino",
    "executorch",
    "executorch-int8",
    "litert",
    "litert-int8",
]
INT8_METHODS = ["executorch", "litert", "coreml", "openvino"]
SUFFIX = {"executorch": ".pte", "litert": ".tflite", "coreml": ".mlpackage", "openvino": ".xml"}


def label(name: str, hparams: dict) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in hparams.items())
    return f"{name} ({extra})" if extra else name


def cpu_flags() -> str:
    text = read_proc("/proc/cpuinfo") or ""
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    shown = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8"]
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in shown)


def measure_model(name: str, hparams: dict, seconds: float) -> dict:
    torch.manual_seed(0)
    model = calibrate_batchnorm(lightnets.create_model(name, **hparams), (3, 224, 224))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = model(x)
    cpu = DEVICES["cpu"]  # the device runtimes are rows of the CPU's table, as in `bench`
    runners, info = {}, {}
    for path in PATHS:
        backend = build_backend(cpu, path, threads=None, int8={})
        if not backend.available():
            print(f"  {path}: not installed, skipped", file=sys.stderr)
            continue
        started = time.perf_counter()
        run = backend.prepare(model, x)
        output = run(x)
        diff, _ = cpu.check(reference, output, "fp32")
        row = {
            "precision": backend.precision,
            "max_abs_diff": diff,
            "prepare_s": time.perf_counter() - started,
            "file_bytes": getattr(backend, "file_bytes", None),
        }
        if backend.precision == "int8":
            # An untrained network's top-1 agreement says nothing about int8: its accuracy is
            # measured on the Fashion-MNIST checkpoint below. Recorded, not judged.
            change = backend.top1_change(model)
            row.update(ok=True, agreement=change.int8_top1)
        else:  # OpenVINO's default computes in bf16 on CPUs with bf16 instructions
            row["ok"] = diff <= cpu.check(reference, output, backend.precision)[1]
        info[path] = row
        runners[path] = run
        print(f"  {path}: prepared in {row['prepare_s']:.1f} s", file=sys.stderr, flush=True)
    measured = measure_interleaved(
        {path: (lambda r=run: r(x)) for path, run in runners.items()},
        warmup=3,
        min_iters=20,
        min_seconds=seconds,
    )
    for path, stats in measured.stats.items():
        info[path].update(
            latency_ms=stats.median_ms, p10_ms=stats.p10_ms, stable=stats.stable, note=stats.note
        )
    return {"paths": info, "note": measured.note}


def int8_accuracy(epochs: int) -> dict:
    """Top-1 change of each int8 method on a Fashion-MNIST-trained MobileNet V1 0.25x."""
    from lightnets.data import load_splits, make_loader
    from lightnets.deploy.metadata import metadata_for
    from lightnets.deploy.quantization import calibration_data, quantize

    splits = load_splits("fashion-mnist")
    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v1", variant="cifar", num_classes=10, width_mult=0.25)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(epochs):
        for images, labels in make_loader(splits.train, splits, batch_size=64, train=True):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    size = (3, 32, 32)
    calib, evals, _ = calibration_data(
        "fashion-mnist", input_size=size, calibration_images=300, eval_images=10000
    )
    state = {"dataset": splits.metadata()}
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for method in INT8_METHODS:
            if method == "openvino" and not DEVICES["cpu"].backends["int8"]().available():
                continue
            report = quantize(
                model,
                Path(folder, f"m{SUFFIX[method]}"),
                calib,
                evals,
                size,
                method=method,
                calibration_name="fashion-mnist",
                metadata=metadata_for(model, state, size),
            )
            results[method] = report.as_dict()
            print(f"  int8 {method}: {report.top1_change:+.2f} points", file=sys.stderr)
    return results


def fmt(value: float | None, spec: str = ".2f") -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def print_tables(results: dict, accuracy: dict) -> None:
    print(
        "\n| model | eager | ORT default | OV default | ExecuTorch fp32 | ExecuTorch int8 | "
        "LiteRT fp32 | LiteRT int8 | best int8 / ORT | best int8 / OV | .pte fp32 / int8 MB "
        "| .tflite fp32 / int8 MB | max diff fp32 (.pte / .tflite) |"
    )
    print("|---|" + "---:|" * 12)
    for model, result in results.items():
        info = result["paths"]

        def ms(path, info=info):
            row = info.get(path)
            if row is None:
                return "-"
            flag = "" if row["ok"] else " WRONG"
            precision = f" ({row['precision']})" if row["precision"] == "bf16" else ""
            return f"{row['latency_ms']:.2f}{'' if row['stable'] else '*'}{precision}{flag}"

        def value(path, key, info=info):
            return info.get(path, {}).get(key)

        int8 = [info[p]["latency_ms"] for p in ("executorch-int8", "litert-int8") if p in info]
        best = min(int8) if int8 else math.nan
        mb = lambda p: fmt((value(p, "file_bytes") or math.nan) / 1e6)  # noqa: E731
        print(
            f"| {model} | {ms('eager')} | {ms('onnxruntime')} | {ms('openvino')} | "
            f"{ms('executorch')} | {ms('executorch-int8')} | {ms('litert')} | "
            f"{ms('litert-int8')} | {fmt(best / value('onnxruntime', 'latency_ms'))} | "
            f"{fmt(best / value('openvino', 'latency_ms'))} | {mb('executorch')} / "
            f"{mb('executorch-int8')} | {mb('litert')} / {mb('litert-int8')} | "
            f"{fmt(value('executorch', 'max_abs_diff'), '.1e')} / "
            f"{fmt(value('litert', 'max_abs_diff'), '.1e')} |"
        )
    print("\n(ms: median over interleaved rounds; * = flagged unstable; WRONG = failed its check)")
    for model, result in results.items():
        print(f"  {model}: {result['note']}")
    if accuracy:
        print("\n| int8 method | fp32 top-1 | int8 top-1 | change (points) | fp32 MB | int8 MB |")
        print("|---|---:|---:|---:|---:|---:|")
        for method, r in accuracy.items():
            print(
                f"| {method} | {r['fp32_top1']:.2f}% | {r['int8_top1']:.2f}% | "
                f"{r['top1_change']:+.2f} | {r['fp32_size_mb']:.2f} | {r['int8_size_mb']:.2f} |"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per path")
    parser.add_argument("--models", default=None, help="comma-separated labels to keep")
    parser.add_argument("--epochs", type=int, default=2, help="Fashion-MNIST epochs (0: skip)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(
        f"# {started}; {cpu_name()}; {cpu_flags()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; batch 1, 3x224x224"
    )
    results = {}
    for name, hparams in MODELS:
        key = label(name, hparams)
        if args.models and name not in args.models.split(",") and key not in args.models:
            continue
        print(f"measuring {key} ...", file=sys.stderr, flush=True)
        results[key] = measure_model(name, hparams, args.seconds)
    accuracy = int8_accuracy(args.epochs) if args.epochs > 0 else {}
    print_tables(results, accuracy)
    if args.json:
        payload = {"started": started, "cpu": cpu_name(), "results": results, "int8": accuracy}
        write_text_atomic(args.json, dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
