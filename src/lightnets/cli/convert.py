"""``lightnets convert``: rewrite a weights file in lightnets', torchvision's or timm's layout."""

from __future__ import annotations

import argparse

from lightnets.cli.common import add_force_argument
from lightnets.models.weights.files import WRITE_SUFFIXES
from lightnets.models.weights.layouts import LAYOUTS

EPILOG = """\
Examples:
  lightnets convert runs/ft/best.pt -o mobilenet_v2_ft.safetensors --to torchvision
  lightnets convert mobilenetv1_100.safetensors -o mnv1.safetensors      # lightnets layout
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        description="Read FILE (a lightnets checkpoint or .safetensors, a torchvision or timm "
        "state dict; recognised by content), and write its weights under the names of --to. "
        "The written file is read back and compared tensor for tensor before success.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="weights to convert")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help=f"file to write ({', '.join(WRITE_SUFFIXES)}: safetensors or a torch state dict)",
    )
    parser.add_argument(
        "--to",
        choices=LAYOUTS,
        default="lightnets",
        help="layout of OUT (default: lightnets, which also records the hyperparameters)",
    )
    add_force_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from lightnets.errors import CheckpointError
    from lightnets.fileio import check_output
    from lightnets.models.weights import (
        export_state_dict,
        model_from_file,
        read_weights_file,
        save_weights,
        source_of,
    )
    from lightnets.models.weights.layouts import check_supported

    check_output(args.output, inputs=[args.file], force=args.force, suffixes=WRITE_SUFFIXES)
    file = read_weights_file(args.file)
    source = source_of(file)
    model, state = model_from_file(args.file)
    check_supported(model, args.to)
    notes = save_weights(model, args.output, args.to, dataset=(state or {}).get("dataset"))
    written = read_weights_file(args.output).tensors
    expected = export_state_dict(model, args.to)
    for key, tensor in expected.items():
        if key not in written or not torch.equal(written[key], tensor):
            raise CheckpointError(f"{args.output}: tensor {key} did not read back identically")
    print(
        f"wrote {args.output}: {len(written)} tensors in the {args.to} layout, from "
        f"{source.description}; read back identical"
    )
    for note in notes:
        print(f"note: {note}")
    return 0
