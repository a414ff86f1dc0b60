"""``lightnets predict``: classify image files with a model or checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightnets.deploy.prediction import Preprocessing

import argparse
import sys

from lightnets.cli.common import (
    add_model_arguments,
    add_threads_argument,
    add_trust_code_argument,
    input_size_from_args,
    looks_like_checkpoint,
    model_or_checkpoint_from_args,
    threads_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        description="Decode each IMAGE with Pillow, preprocess it as the checkpoint's data set "
        "was (grayscale and 28->32 padding for Fashion-MNIST, mean/std normalisation) and print "
        "the top-k classes. NAME may also be a file written by `lightnets export` or "
        "`lightnets quantize` (ONNX, OpenVINO .xml, TorchScript, .pt2, ExecuTorch .pte, "
        "LiteRT .tflite), recognised by its content: it runs in its own runtime, "
        "preprocessed as its metadata says (TorchScript and .pt2 are programs: only with "
        "--trust-code). A bare model name "
        "uses ImageNet preprocessing and, with no ImageNet names bundled, prints class indices.",
    )
    add_model_arguments(parser, exported=True)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--topk", type=int, default=5, help="classes to show (default: 5)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_trust_code_argument(parser)
    add_threads_argument(parser)
    parser.set_defaults(func=run)


def _model_and_preprocessing(args: argparse.Namespace) -> tuple[Any, Preprocessing]:
    """(model, preprocessing) from a checkpoint, a model name, or an exported file."""
    from lightnets.deploy.exported import open_exported
    from lightnets.deploy.prediction import Preprocessing, preprocessing_from_checkpoint
    from lightnets.errors import CheckpointError

    exported = (
        open_exported(args.name, trust_code=args.trust_code)
        if looks_like_checkpoint(args.name)
        else None
    )
    if exported is not None:
        if exported.metadata is None:
            raise CheckpointError(
                f"{args.name}: no lightnets metadata, so its preprocessing is unknown; "
                "export it with lightnets"
            )
        return exported, Preprocessing.from_metadata(exported.metadata)
    model, state = model_or_checkpoint_from_args(args)
    return model, preprocessing_from_checkpoint(state, input_size_from_args(args, model, state))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lightnets.deploy.prediction import predict
    from lightnets.errors import DataError, check_int
    from lightnets.fileio import check_regular
    from lightnets.jsonio import dumps

    check_int("--topk", args.topk, minimum=1)
    for image in args.images:
        if not Path(image).exists():
            raise DataError(f"{image}: no such image file")
        check_regular(image)  # a FIFO or a device: refused now, not waited on
    held: list[str] = []  # chosen before a runtime session is made, said once the model loaded
    threads_from_args(args, announce=held.append)
    model, pre = _model_and_preprocessing(args)
    for line in held:
        print(line, file=sys.stderr)
    results = predict(model, args.images, pre, topk=args.topk)
    if args.json:
        print(dumps([r.as_dict() for r in results], indent=2))
        return 0
    if pre.classes is None:
        print("class indices only: no class names are bundled for ImageNet models")
    for result in results:
        print(result.image)
        for index, name, prob in result.topk:
            label = f"{index:4d} {name}" if name is not None else f"{index:4d}"
            print(f"  {100 * prob:6.2f}%  {label}")
    return 0
