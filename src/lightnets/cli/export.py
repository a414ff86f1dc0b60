"""``lightnets export``: ONNX, OpenVINO IR, pt2, ExecuTorch, LiteRT, Core ML or TorchScript,
verified in its own runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightnets.deploy.exporters import ExportResult

import argparse
from pathlib import Path

from lightnets.cli.common import (
    add_force_argument,
    add_model_arguments,
    input_files,
    input_size_from_args,
    looks_like_checkpoint,
    model_or_checkpoint_from_args,
)
from lightnets.deploy.exporters import FORMATS

#: ``--format`` when not given: the format every runtime (and ``predict``/``bench``) reads.
DEFAULT_FORMAT = "onnx"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        description="Export NAME (a model name or a file). Server formats (onnx, "
        "openvino) and pt2 have a dynamic batch axis; the device formats (executorch .pte, "
        "litert .tflite, coreml .mlpackage) take one image per call, as an app runs them. The "
        "file is loaded back in its own runtime (ONNX Runtime, OpenVINO, torch.export.load, "
        "executorch.runtime, ai_edge_litert, torch.jit.load) and compared with PyTorch at "
        "batch sizes 1 and 3 before it is moved into place; a Core ML package's specification "
        "is checked instead, and its outputs too on macOS (Core ML runs only there). It carries "
        "its metadata (class names, input size, preprocessing with its resize filter, "
        "mean/std, hparams, lightnets version): `lightnets export --print-metadata FILE`. "
        "TorchScript is kept, but PyTorch deprecates it: pt2 (torch.export) replaces it, and "
        "executorch on devices. The device formats need `pip install 'lightnets[mobile]'`.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--format",
        metavar="{" + ",".join(FORMATS) + "}",  # checked in run(): one message for all callers
        default=DEFAULT_FORMAT,
        help=f"file format (default: {DEFAULT_FORMAT}): onnx, openvino (NAME.xml + NAME.bin), "
        "pt2, executorch (.pte), litert (.tflite), coreml (NAME.mlpackage) or torchscript "
        "(deprecated by PyTorch: use pt2)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="file to write; DIR/ (trailing slash) writes DIR/<name>.<ext>",
    )
    add_force_argument(parser)
    parser.add_argument(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold BatchNorm into the convolutions first (default: --fuse)",
    )
    parser.add_argument(
        "--print-metadata",
        action="store_true",
        help="print the metadata of the exported file NAME as JSON and exit (read from the "
        "file, which is not loaded or run)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def output_stem(name: str) -> str:
    """The file name (without suffix) for ``-o DIR/``: the checkpoint's stem or the model name."""
    return Path(name).stem if looks_like_checkpoint(name) else name


def check_export_output(path: Path, format: str, args: argparse.Namespace) -> Path:
    """:func:`lightnets.fileio.check_output` for an ``export`` or ``quantize`` output: not an
    input, writable, replaced only with a yes or ``--force``; a Core ML package is a folder with
    its own writability check."""
    from lightnets.deploy.outputs import companions
    from lightnets.fileio import check_output

    writable = None
    if format == "coreml":
        from lightnets.deploy.coreml import check_writable_package

        writable = check_writable_package
    return check_output(
        path,
        inputs=input_files(args),
        force=args.force,
        companions=companions(path),
        writable=writable,
    )


def print_metadata(path: str) -> int:
    from lightnets.deploy.metadata import read_metadata
    from lightnets.errors import InvalidArgumentError
    from lightnets.jsonio import dumps

    meta = read_metadata(path)
    if meta is None:
        raise InvalidArgumentError(f"{path} carries no lightnets metadata (not exported by it)")
    print(dumps(meta, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    from lightnets.deploy.exporters import FORMATS, export
    from lightnets.deploy.metadata import metadata_for
    from lightnets.deploy.outputs import resolve_output
    from lightnets.errors import InvalidArgumentError

    if args.print_metadata:
        return print_metadata(args.name)
    if args.format not in FORMATS:
        raise InvalidArgumentError(
            f"unknown export format {args.format!r}; allowed: {', '.join(FORMATS)}"
        )
    if not args.output:
        raise InvalidArgumentError("-o/--output is required: the file (or DIR/) to write")
    path = resolve_output(args.output, name=output_stem(args.name), suffix=FORMATS[args.format])
    check_export_output(path, args.format, args)
    model, state = model_or_checkpoint_from_args(args)
    size = input_size_from_args(args, model, state)
    meta = metadata_for(model, state, size, fused=args.fuse)
    result = export(model, path, args.format, size, fuse=args.fuse, metadata=meta)
    _print_result(result, size, args.json)
    return 0


def _print_result(result: ExportResult, size: tuple[int, int, int], as_json: bool) -> None:
    from lightnets.jsonio import dumps

    if as_json:
        record = {
            "path": str(result.path),
            "format": result.format,
            "files": [str(f) for f in result.files],
            "size_mb": result.size_mb,
            "max_abs_diff": result.max_abs_diff,
            "batch_sizes": list(result.batch_sizes),
            "fused": result.fused,
            "input_size": list(size),
            "note": result.note,
        }
        print(dumps(record, indent=2))
        return
    from lightnets.deploy.exporters import FIXED_BATCH

    files = " + ".join(str(f) for f in result.files)
    batch = "1 image per call" if result.format in FIXED_BATCH else "batch axis dynamic"
    if result.format in FIXED_BATCH:
        shape = ", ".join(map(str, (result.metadata or {})["input"]["shape"]))
    else:
        shape = ", ".join(["N", *map(str, size)])
    print(
        f"wrote {files} ({result.size_mb:.2f} MB, {result.format}, input ({shape}), {batch}, "
        "BatchNorm "
        f"{'folded' if result.fused else 'kept'}; metadata: `lightnets export "
        f"--print-metadata {result.path}`)"
    )
    if result.batch_sizes:
        print(
            f"verified in its runtime at batch sizes {', '.join(map(str, result.batch_sizes))}: "
            f"max |diff| to PyTorch {result.max_abs_diff:.2e}"
        )
    if result.note:
        print(f"note: {result.note}" if result.format == "torchscript" else result.note)
    from lightnets.formats import FORMATS, TRUST_FLAG

    fmt = FORMATS.get(result.format)
    if fmt is not None and fmt.runs_code:
        print(
            f"note: {fmt.label[fmt.label.index(' ') + 1 :]} is a program (loading it runs the "
            f"code it carries): `lightnets predict` and `bench` run it only with {TRUST_FLAG}; "
            "share ONNX or OpenVINO files with others"
        )
