"""``lightnets bench``: check, then time, inference backends side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lightnets.deploy.bench import BenchRecord

import argparse
import sys

from lightnets.cli.common import (
    add_model_arguments,
    add_trust_code_argument,
    input_size_from_args,
    looks_like_checkpoint,
    model_or_checkpoint_from_args,
    thread_count,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from lightnets.deploy.devices import DEVICES

    cpu, cuda = (", ".join(DEVICES[name].backends) for name in ("cpu", "cuda"))
    parser = subparsers.add_parser(
        "bench",
        help="latency and throughput of inference backends (eager, ONNX Runtime, OpenVINO, ...)",
        description="Check every backend's output against eager fp32, then time it: median and "
        "90th-percentile latency, images/s, achieved GFLOP/s and its fraction of the machine's "
        "measured peak. A backend whose outputs disagree is reported as wrong, not timed. "
        f"Backends: {cpu}; 'all' runs every one, 'best' the fastest that passes "
        "the fp32 check, measured here among the runtimes' plain defaults and lightnets' tuned "
        "settings (int8 / bf16 only with --allow-int8 / --allow-bf16, and int8 only where it "
        "measured faster). int8 is judged as "
        "`lightnets quantize` judges it: by its top-1 change on held-out images of the "
        "checkpoint's data set, within --max-drop points. NAME may also be an exported file "
        "(ONNX, OpenVINO .xml, TorchScript, .pt2, ExecuTorch .pte, LiteRT .tflite), "
        "recognised by its content and timed in its own runtime (TorchScript and .pt2 are "
        "programs: only with --trust-code). The device backends need "
        "`pip install 'lightnets[mobile]'`.",
    )
    add_model_arguments(parser, exported=True)
    parser.add_argument(
        "--batch-size",
        default=None,
        metavar="N[,N...]",
        help="batch sizes, comma-separated (default: 1; 1,256 with --device cuda)",
    )
    parser.add_argument(
        "--device",
        choices=tuple(DEVICES),
        default="cpu",
        help=f"where to run (default: cpu); cuda backends: {cuda}",
    )
    parser.add_argument(
        "--allow-fp16",
        action="store_true",
        help="let 'best' pick float16 backends (--device cuda)",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        help="threads for every runtime (default: the cores free at start, at most the "
        "physical cores; OMP_NUM_THREADS=N also sets it); the choice and its reason are "
        "printed once (stderr) and recorded in --json as thread_policy",
    )
    parser.add_argument(
        "--backend",
        default="best",
        metavar="NAME[,NAME...]|all|best",
        help="backends to run (default: best)",
    )
    _add_precision_arguments(parser)
    parser.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="minimum timed seconds per backend and batch size (default: 2)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    add_trust_code_argument(parser)
    parser.set_defaults(func=run)


def _add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    """--allow-int8, --allow-bf16 and the int8 data and budget."""
    from lightnets.deploy.accuracy import DEFAULT_MAX_DROP

    parser.add_argument(
        "--allow-int8",
        action="store_true",
        help="let 'best' pick the int8 backend (changes accuracy)",
    )
    parser.add_argument(
        "--allow-bf16",
        action="store_true",
        help="let 'best' pick bfloat16 backends (changes outputs ~1e-2)",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="SOURCE",
        help="int8 calibration images: fashion-mnist, cifar10, cifar100, folder, "
        "synthetic (default: the checkpoint's data set, else synthetic)",
    )
    parser.add_argument("--data-dir", default=None, help="data set folder for --calibration")
    parser.add_argument(
        "--max-drop",
        type=float,
        default=DEFAULT_MAX_DROP,
        metavar="POINTS",
        help=f"int8 passes its check if top-1 drops by at most POINTS (default: "
        f"{DEFAULT_MAX_DROP:g})",
    )


def _check_arguments(args: argparse.Namespace) -> None:
    from lightnets.analysis.timing import validate_threads
    from lightnets.errors import check_float

    validate_threads(args.threads, "--threads")
    check_float("--seconds", args.seconds, minimum=0.0, exclusive_minimum=True)
    check_float("--max-drop", args.max_drop, minimum=0.0)


def run(args: argparse.Namespace) -> int:
    from lightnets.deploy.bench import (
        Int8Data,
        benchmark,
        benchmark_exported,
        calibrate_batchnorm,
        parse_batch_sizes,
    )
    from lightnets.deploy.devices import get_device
    from lightnets.deploy.exported import open_exported

    device = get_device(args.device)
    device.place()  # without the device: one line naming what is missing, before anything else
    backends = device.resolve(args.backend)
    sizes = parse_batch_sizes(args.batch_size or ",".join(map(str, device.default_batch_sizes)))
    _check_arguments(args)
    exported = (
        open_exported(args.name, trust_code=args.trust_code)
        if looks_like_checkpoint(args.name)
        else None
    )
    if exported is not None:
        records = benchmark_exported(
            exported, batch_sizes=sizes, threads=args.threads, min_seconds=args.seconds
        )
        return _report(args, records, exported.name, exported.input_size, "", [])
    model, state = model_or_checkpoint_from_args(args)
    size = input_size_from_args(args, model, state)
    if state is None:
        # Untrained: give its activations a trained network's scale, so the check means something.
        model = calibrate_batchnorm(model, size)
    name = str(model.hparams.get("name", args.name))
    notes: list[str] = []
    int8_data = Int8Data(args.calibration, args.data_dir, checkpoint=state)
    records = benchmark(
        model,
        backends,
        device=device,
        model_name=name,
        batch_sizes=sizes,
        input_size=size,
        threads=args.threads,
        allow_int8=args.allow_int8,
        allow_bf16=args.allow_bf16,
        allow_fp16=args.allow_fp16,
        int8_data=int8_data,
        max_drop=args.max_drop,
        min_seconds=args.seconds,
        on_skip=notes.append,
    )
    return _report(args, records, name, size, int8_data.loaded_from, notes)


def _report(
    args: argparse.Namespace,
    records: Sequence[BenchRecord],
    name: str,
    size: tuple[int, int, int],
    source: str,
    notes: Sequence[str],
) -> int:
    from lightnets.jsonio import dumps

    if args.json:
        print(dumps([r.as_dict() for r in records], indent=2))
        for note in notes:
            print(f"skipped {note}", file=sys.stderr)
        return 0
    _print_table(records, name, size, source)
    for note in notes:
        print(f"skipped {note}")
    return 0


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


#: The table's columns; backend and status are text (left-aligned), the rest numbers.
COLUMNS = (
    "backend",
    "batch",
    "precision",
    "median ms",
    "p90 ms",
    "images/s",
    "GFLOP/s",
    "of peak",
    "max |diff|",
    "status",
)


def _print_table(
    records: Sequence[BenchRecord],
    name: str,
    size: tuple[int, int, int],
    calibration_source: str,
) -> None:
    from lightnets.tables import Column, rich_table, terminal_console

    exported = any(r.backend.endswith(" file") for r in records)
    checked = "exported file, in its own runtime" if exported else "checked against eager fp32"
    rows = [
        [
            f"best: {r.backend}" if r.best else r.backend,
            str(r.batch_size),
            r.precision,
            _fmt(r.latency_ms_median, ".3f"),
            _fmt(r.latency_ms_p90, ".3f"),
            _fmt(r.images_per_sec, ".1f"),
            _fmt(r.gflops_per_sec, ".1f"),
            "-" if r.peak_fraction is None else f"{100 * r.peak_fraction:.1f}%",
            _fmt(r.max_abs_diff, ".2e"),
            r.status if not r.note else f"{r.status} ({r.note})",
        ]
        for r in records
    ]
    table = rich_table(
        [Column(c, "left" if c in ("backend", "status") else "right") for c in COLUMNS],
        rows,
        title=f"{name} at {size[1]}x{size[2]}: inference latency ({checked})",
    )
    console = terminal_console()
    console.print(table)
    for r in records:
        if r.best and r.extra.get("candidates"):
            quick = ", ".join(f"{k} {v:.3f} ms" for k, v in r.extra["candidates"].items())
            console.print(f"best of (quick median, batch {r.batch_size}): {quick}")
            for note in ("int8_note", "precision_note"):
                if r.extra.get(note):
                    console.print(r.extra[note])
    for r in records:
        if r.extra.get("scheme"):
            console.print(f"{r.backend} (batch {r.batch_size}): {r.extra['scheme']}")
        if r.precision == "int8" and r.top1_change is not None and calibration_source:
            top1 = r.extra.get("top1") or {}
            console.print(
                f"int8 (batch {r.batch_size}) calibrated on {calibration_source} images; "
                f"top-1 change {r.top1_change:+.2f} points on {top1.get('images')} held-out "
                f"{'labelled' if top1.get('metric') == 'accuracy' else 'synthetic'} images "
                f"(budget -{r.max_drop:g}, --max-drop)"
            )
