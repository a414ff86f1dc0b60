"""``lightnets export``: ONNX, TorchScript or OpenVINO IR, verified in its own runtime."""

from __future__ import annotations

import argparse

from lightnets.cli.common import (
    add_model_arguments,
    input_size_from_args,
    model_or_checkpoint_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export to ONNX, TorchScript or OpenVINO IR (verified before success)",
        description="Export NAME (a model name or a checkpoint) with a dynamic batch axis. The "
        "file is loaded back in its own runtime (ONNX Runtime, torch.jit.load, OpenVINO) and "
        "compared with PyTorch at batch sizes 1 and 3 before it is moved into place.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--format",
        required=True,
        metavar="FORMAT",
        help="onnx, torchscript or openvino (NAME.xml + NAME.bin)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write")
    parser.add_argument(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold BatchNorm into the convolutions first (default: --fuse)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from lightnets.deploy.exporters import FORMATS, export
    from lightnets.errors import InvalidArgumentError
    from lightnets.fileio import check_writable

    if args.format not in FORMATS:
        raise InvalidArgumentError(
            f"unknown export format {args.format!r}; allowed: {', '.join(FORMATS)}"
        )
    check_writable(args.output)
    model, _ = model_or_checkpoint_from_args(args)
    size = input_size_from_args(args, model)
    result = export(model, args.output, args.format, size, fuse=args.fuse)
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(result.path),
                    "format": result.format,
                    "files": [str(f) for f in result.files],
                    "size_mb": result.size_mb,
                    "max_abs_diff": result.max_abs_diff,
                    "batch_sizes": list(result.batch_sizes),
                    "fused": result.fused,
                    "input_size": list(size),
                },
                indent=2,
            )
        )
        return 0
    files = " + ".join(str(f) for f in result.files)
    print(
        f"wrote {files} ({result.size_mb:.2f} MB, {result.format}, input (N, "
        f"{', '.join(map(str, size))}), batch axis dynamic, BatchNorm "
        f"{'folded' if result.fused else 'kept'})"
    )
    print(
        f"verified in its runtime at batch sizes {', '.join(map(str, result.batch_sizes))}: "
        f"max |diff| to PyTorch {result.max_abs_diff:.2e}"
    )
    return 0
