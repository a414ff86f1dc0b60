"""``lightnets quantize``: int8 post-training static quantization, calibrated on real images."""

from __future__ import annotations

import argparse

from lightnets.cli.common import (
    add_model_arguments,
    input_size_from_args,
    model_or_checkpoint_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize",
        help="int8 post-training quantization; reports size, speed-up, top-1 change",
        description="Quantize NAME (a model name or a checkpoint) to int8 for CPU, calibrated "
        "on images of --calibration, then report the file size, the latency against fp32 in "
        "the same runtime, and the top-1 change on held-out images (test split; for "
        "--calibration synthetic, top-1 agreement with fp32).",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--calibration",
        required=True,
        metavar="SOURCE",
        help="fashion-mnist, cifar10, cifar100, folder (with --data-dir) or synthetic",
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
        help="test images used to measure the top-1 change (default: 1000)",
    )
    parser.add_argument(
        "--method",
        default="openvino",
        metavar="METHOD",
        help="openvino (NNCF, writes .xml + .bin; default) or onnxruntime "
        "(quantize_static, writes .onnx)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from lightnets.deploy.quantization import (
        CALIBRATION_SOURCES,
        METHODS,
        calibration_data,
        quantize,
    )
    from lightnets.errors import InvalidArgumentError
    from lightnets.fileio import check_writable

    if args.method not in METHODS:
        raise InvalidArgumentError(
            f"unknown quantization method {args.method!r}; allowed: {', '.join(METHODS)}"
        )
    if args.calibration not in CALIBRATION_SOURCES:
        raise InvalidArgumentError(
            f"unknown calibration source {args.calibration!r}; allowed: "
            f"{', '.join(CALIBRATION_SOURCES)}"
        )
    check_writable(args.output)
    model, _ = model_or_checkpoint_from_args(args)
    size = input_size_from_args(args, model)
    calib, evals, _ = calibration_data(
        args.calibration,
        input_size=size,
        data_dir=args.data_dir,
        calibration_images=args.calibration_images,
        eval_images=args.eval_images,
    )
    report = quantize(
        model,
        args.output,
        calib,
        evals,
        size,
        method=args.method,
        calibration_name=args.calibration,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    what = (
        "top-1 accuracy"
        if report.eval_metric == "accuracy"
        else "top-1 agreement with fp32 (no labels; meaningless for an untrained model)"
    )
    print(
        f"wrote {report.path} (int8, {report.method}; calibrated on "
        f"{report.calibration_images} {report.calibration} images)"
    )
    print(
        f"size     fp32 {report.fp32_size_mb:.2f} MB -> int8 {report.int8_size_mb:.2f} MB "
        f"({report.fp32_size_mb / report.int8_size_mb:.2f}x smaller)"
    )
    print(
        f"latency  fp32 {report.fp32_latency_ms:.3f} ms -> int8 {report.int8_latency_ms:.3f} ms"
        f" at batch 1 ({report.speedup:.2f}x)"
    )
    print(
        f"{what} on {report.eval_images} test images: fp32 {report.fp32_top1:.2f}% -> "
        f"int8 {report.int8_top1:.2f}% ({report.top1_change:+.2f} points); "
        f"max |logit diff| {report.max_abs_diff:.3g}"
    )
    return 0
