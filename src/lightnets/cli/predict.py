"""``lightnets predict``: classify image files with a model or checkpoint."""

from __future__ import annotations

import argparse

from lightnets.cli.common import (
    add_model_arguments,
    input_size_from_args,
    model_or_checkpoint_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify image files (class names from the checkpoint's data set)",
        description="Decode each IMAGE with Pillow, preprocess it as the checkpoint's data set "
        "was (grayscale and 28->32 padding for Fashion-MNIST, mean/std normalisation) and print "
        "the top-k classes. A bare model name uses ImageNet preprocessing and, with no ImageNet "
        "names bundled, prints class indices.",
    )
    add_model_arguments(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--topk", type=int, default=5, help="classes to show (default: 5)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lightnets.deploy.prediction import predict, preprocessing_from_checkpoint
    from lightnets.errors import DataError, InvalidArgumentError

    if args.topk < 1:
        raise InvalidArgumentError(f"--topk must be >= 1, got {args.topk}")
    for image in args.images:
        if not Path(image).is_file():
            raise DataError(f"{image}: no such image file")
    model, state = model_or_checkpoint_from_args(args)
    pre = preprocessing_from_checkpoint(state, input_size_from_args(args, model))
    results = predict(model, args.images, pre, topk=args.topk)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    if pre.classes is None:
        print("class indices only: no class names are bundled for ImageNet models")
    for result in results:
        print(result.image)
        for index, name, prob in result.topk:
            label = f"{index:4d} {name}" if name is not None else f"{index:4d}"
            print(f"  {100 * prob:6.2f}%  {label}")
    return 0
