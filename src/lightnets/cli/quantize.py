"""``lightnets quantize``: int8 post-training static quantization, calibrated on real images, or
(``--qat``) a short quantization-aware fine-tune of a training checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightnets.deploy.quantization import QuantizationReport

import argparse
import math
import sys

from lightnets.cli.common import (
    add_force_argument,
    add_model_arguments,
    add_threads_argument,
    input_size_from_args,
    model_or_checkpoint_from_args,
    threads_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from lightnets.deploy.accuracy import DEFAULT_MAX_DROP

    parser = subparsers.add_parser(
        "quantize",
        description="Quantize NAME (a model name or a checkpoint) to int8 for CPU, calibrated "
        "on training images of the checkpoint's data set (or --calibration), then report the "
        "file size, the latency against fp32 in the same runtime, and the top-1 change on "
        "held-out images (test split; for synthetic images, top-1 agreement with fp32). A drop "
        f"of more than {DEFAULT_MAX_DROP:g} point is warned about; with --max-drop POINTS it "
        "is an error and nothing is written. With --qat, a training checkpoint is first "
        "fine-tuned quantization-aware on its recorded data set (executorch and litert).",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="SOURCE",
        help="fashion-mnist, mnist, cifar10, cifar100, folder (with --data-dir) or synthetic "
        "(default: the checkpoint's data set, its recorded folder included; synthetic for a "
        "bare model)",
    )
    parser.add_argument("--data-dir", default=None, help="data set folder")
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=300,
        help="training images used for calibration (default: 300)",
    )
    parser.add_argument(
        "--eval-images",
        type=int,
        default=1000,
        help="held-out images used to measure the top-1 change (default: 1000)",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=None,
        metavar="POINTS",
        help=f"fail (write nothing) if top-1 drops by more than POINTS (default: warn beyond "
        f"{DEFAULT_MAX_DROP:g})",
    )
    parser.add_argument(
        "--method",
        default="openvino",
        metavar="METHOD",
        help="openvino (NNCF, writes .xml + .bin; default), onnxruntime (quantize_static, "
        ".onnx), executorch (PT2E + XNNPACKQuantizer, .pte), litert (PT2E + litert-torch's "
        "quantizer, .tflite) or coreml (coremltools' int8 weight compression, .mlpackage; "
        "weight-only, so no calibration)",
    )
    parser.add_argument(
        "--per-tensor",
        action="store_true",
        help="one weight scale per tensor instead of per output channel (post-training only; "
        "for comparison: per-channel keeps MobileNets' depthwise filters accurate)",
    )
    parser.add_argument(
        "--reduce-range",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weights in 7 bits (onnxruntime, openvino): their x86 int8 kernels add pairs of "
        "u8 x s8 products into 16 bits, which saturates with 8-bit weights on CPUs without "
        "VNNI (default: on where this CPU lacks VNNI and AMX; give it when the target CPU "
        "lacks them, --no-reduce-range when it has them)",
    )
    qat = parser.add_argument_group("quantization-aware training (--qat)")
    qat.add_argument(
        "--qat",
        action="store_true",
        help="fine-tune the checkpoint with the method's fake int8 (PT2E) on the data set it "
        "records, BatchNorm statistics frozen after the first half, then convert and write; "
        "--method executorch, litert, onnxruntime (QDQ ONNX) or openvino (IR from it). The "
        "fine-tune runs in OUT's name with the suffix .qat-run, kept after a Ctrl-C: the same "
        "command continues it (--force starts it over)",
    )
    qat.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="fine-tune epochs (default: 10%% of the checkpoint's run, at least 1)",
    )
    qat.add_argument(
        "--lr",
        type=float,
        default=None,
        help="fine-tune peak learning rate, annealed by cosine (default: 1%% of the run's peak)",
    )
    qat.add_argument("--device", choices=("cpu", "cuda"), default=None, help="fine-tune device")
    parser.add_argument(
        "-o", "--output", required=True, metavar="PATH", help="file to write (or DIR/)"
    )
    add_force_argument(parser)
    add_threads_argument(parser, "calibration, accuracy and latency alike")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def _output(args: argparse.Namespace, suffix: str) -> Path:
    from lightnets.cli.export import check_export_output, output_stem
    from lightnets.deploy.outputs import resolve_output

    name = f"{output_stem(args.name)}_int8"
    path = resolve_output(args.output, name=name, suffix=suffix)
    return check_export_output(path, args.method, args)


def run(args: argparse.Namespace) -> int:
    from lightnets.analysis.threads import thread_record
    from lightnets.deploy.quantization import get_method
    from lightnets.errors import check_float, check_int

    method = get_method(args.method, reduce_range=args.reduce_range)
    check_int("--calibration-images", args.calibration_images, minimum=1)
    check_int("--eval-images", args.eval_images, minimum=0)
    if args.max_drop is not None:
        check_float("--max-drop", args.max_drop, minimum=0.0)
    _check_qat_arguments(args)
    path = _output(args, method.suffix)
    held: list[str] = []  # said after the work: a bad file stays a one-line error
    choice = threads_from_args(args, announce=held.append)
    model, state = model_or_checkpoint_from_args(args)
    qat, run_dir = None, None
    if args.qat:
        from lightnets.deploy.qat import finetune_qat, qat_plan, qat_run_dir

        stored = state or {}  # without a record of its run, qat_plan says so
        qat_plan(stored, args.name, epochs=args.epochs, lr=args.lr)  # checked before training
        run_dir = qat_run_dir(path)
        qat = finetune_qat(
            args.name,
            stored,
            args.method,
            epochs=args.epochs,
            lr=args.lr,
            data_dir=args.data_dir,
            device=args.device,
            threads=args.threads,
            run_dir=run_dir,
            restart=args.force,
            continue_with=f"the same command ({_qat_command(args)})",
            reduce_range=args.reduce_range,
        )
    try:
        report = _quantize(args, model, state, path, qat)
    except KeyboardInterrupt:
        raise  # a finished fine-tune stays: the same command converts it without training
    except BaseException:
        _remove_finished_run(run_dir)  # nothing is written: a rerun starts over
        raise
    _remove_finished_run(run_dir)
    for line in held:
        print(line, file=sys.stderr)
    _print_report(report, args.json, thread_record(choice))
    return 0


def _quantize(
    args: argparse.Namespace, model: Any, state: dict[str, Any] | None, path: Path, qat: Any
) -> QuantizationReport:
    """Calibrate (or take the fine-tuned network ``qat``), write ``path``, measure it."""
    from lightnets.deploy.accuracy import DEFAULT_MAX_DROP
    from lightnets.deploy.metadata import metadata_for
    from lightnets.deploy.quantization import calibration_data, calibration_source
    from lightnets.deploy.quantization import quantize as quantize_model

    source, data_kwargs = calibration_source(state, args.calibration, args.data_dir)
    size = input_size_from_args(args, model, state)
    calib, evals, _ = calibration_data(
        source,
        input_size=size,
        calibration_images=args.calibration_images,
        eval_images=args.eval_images,
        **data_kwargs,
    )
    return quantize_model(
        model,
        path,
        calib,
        evals,
        size,
        method=args.method,
        calibration_name=source,
        max_drop=DEFAULT_MAX_DROP if args.max_drop is None else args.max_drop,
        strict=args.max_drop is not None,
        metadata=metadata_for(model, state, size),
        per_channel=not args.per_tensor,
        qat=qat,
        reduce_range=args.reduce_range,
    )


def _remove_finished_run(run_dir: Path | None) -> None:
    if run_dir is not None:
        from lightnets.deploy.qat import remove_qat_run

        remove_qat_run(run_dir)


def _qat_command(args: argparse.Namespace) -> str:
    """The ``quantize --qat`` command of ``args``, for the message that says how to continue."""
    import shlex

    words = ["lightnets", "quantize", args.name, "--qat", "--method", args.method]
    for flag, value in (
        ("--epochs", args.epochs),
        ("--lr", args.lr),
        ("--data-dir", args.data_dir),
        ("--device", args.device),
    ):
        if value is not None:
            words += [flag, str(value)]
    if args.reduce_range is not None:
        words.append("--reduce-range" if args.reduce_range else "--no-reduce-range")
    return shlex.join([*words, "-o", args.output])


def _check_qat_arguments(args: argparse.Namespace) -> None:
    """--qat and its options, checked before anything is read, trained or written."""
    from lightnets.cli.common import looks_like_checkpoint
    from lightnets.deploy.qat import check_qat_method
    from lightnets.errors import InvalidArgumentError, check_float, check_int

    if not args.qat:
        given = [f for f, v in (("--epochs", args.epochs), ("--lr", args.lr)) if v is not None]
        if given or args.device is not None:
            flag = given[0] if given else "--device"
            raise InvalidArgumentError(f"{flag} applies only with --qat")
        return
    check_qat_method(args.method)
    if args.epochs is not None:
        check_int("--epochs", args.epochs, minimum=1)
    if args.lr is not None:
        check_float("--lr", args.lr, minimum=0.0, exclusive_minimum=True)
    if args.per_tensor:
        raise InvalidArgumentError("--per-tensor applies to post-training quantization, not --qat")
    if args.calibration is not None:
        raise InvalidArgumentError(
            "--calibration does not apply with --qat: it fine-tunes on the checkpoint's data set"
        )
    if not looks_like_checkpoint(args.name):
        raise InvalidArgumentError(
            f"--qat needs a training checkpoint (it fine-tunes the checkpoint's weights on its "
            f"recorded data set); {args.name!r} is a model name"
        )


def _print_report(report: QuantizationReport, as_json: bool, threads: dict[str, Any]) -> None:
    from lightnets.jsonio import dumps

    if not report.within_budget:
        measured = report.eval_images > 0
        print(
            f"warning: int8 top-1 changed by {report.top1_change:+.2f} points, beyond the "
            f"{report.max_drop:g}-point budget (--max-drop to make this an error)"
            if measured
            else "warning: top-1 change not measured (--eval-images 0)",
            file=sys.stderr,
        )
    if as_json:
        print(dumps({**report.as_dict(), "thread_policy": threads}, indent=2))
        return
    what = (
        "top-1 accuracy"
        if report.eval_metric == "accuracy"
        else "top-1 agreement with fp32 (no labels; meaningless for an untrained model)"
    )
    if report.training == "QAT":
        calibrated = f"quantization-aware fine-tune on {report.calibration}"
    elif report.calibration_images:
        calibrated = f"calibrated on {report.calibration_images} {report.calibration} images"
    else:
        calibrated = "weight-only: no calibration"
    print(f"wrote {report.path} (int8, {report.method}; {calibrated})")
    print(f"scheme   {report.scheme}")
    print(
        f"size     fp32 {report.fp32_size_mb:.2f} MB -> int8 {report.int8_size_mb:.2f} MB "
        f"({report.fp32_size_mb / report.int8_size_mb:.2f}x smaller)"
    )
    if math.isnan(report.int8_latency_ms):
        print("latency  not measured (see the note)")
    else:
        print(
            f"latency  fp32 {report.fp32_latency_ms:.3f} ms -> int8 "
            f"{report.int8_latency_ms:.3f} ms at batch 1 ({report.speedup:.2f}x)"
        )
    print(
        f"{what} on {report.eval_images} held-out images: fp32 {report.fp32_top1:.2f}% -> "
        f"int8 {report.int8_top1:.2f}% ({report.top1_change:+.2f} points, budget "
        f"-{report.max_drop:g}); max |logit diff| {report.max_abs_diff:.3g}"
    )
    if report.note:
        print(f"note: {report.note}")
