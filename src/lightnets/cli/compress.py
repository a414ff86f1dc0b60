"""``lightnets compress``: Deep Compression (prune, share weights, Huffman-code) into one file."""

from __future__ import annotations

import argparse

from lightnets.cli.common import (
    add_force_argument,
    add_model_arguments,
    input_files,
    model_or_checkpoint_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="Deep Compression: prune, share weights, Huffman-code; SqueezeNet's < 0.5 MB",
        description="Compress NAME (a model name or a checkpoint) as Deep Compression does "
        "(Han et al., ICLR 2016): keep the largest --density of each layer's weights, cluster "
        "them into 2^--bits shared values (k-means, linear initialisation), store sparse "
        "indices as 8-bit (conv) / 5-bit (fc) gaps and Huffman-code the streams (or LZMA / "
        "Zstandard when smaller). The defaults are SqueezeNet's setting (paper, Table 2). "
        "eval, bench, export and predict read the file wherever they read a checkpoint.",
    )
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    add_force_argument(parser)
    parser.add_argument(
        "--density", type=float, default=0.33, help="fraction of weights kept (default 0.33)"
    )
    parser.add_argument(
        "--bits", type=int, default=6, help="bits per shared-weight code, 1..8 (default 6)"
    )
    parser.add_argument(
        "--per-layer-bits",
        default="",
        metavar="K=B,...",
        help="bits by layer kind (conv, fc) or layer name, e.g. conv=8,fc=5 (Deep Compression's "
        "AlexNet setting)",
    )
    parser.add_argument(
        "--scope",
        choices=("layer", "global"),
        default="layer",
        help="prune the same fraction of every layer (default, as the papers) or one global "
        "magnitude threshold",
    )
    _add_data_arguments(parser.add_argument_group(DATA_GROUP))
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


DATA_GROUP = "data (optional: fine-tune and top-1 before/after)"


def _add_data_arguments(data: argparse._ArgumentGroup) -> None:
    """The fine-tune and evaluation data sets (all optional)."""
    from lightnets.data import DATASET_NAMES

    data.add_argument("--finetune-dataset", choices=DATASET_NAMES, default=None)
    data.add_argument(
        "--finetune-epochs",
        type=int,
        default=1,
        help="epochs after pruning and again after weight sharing (default 1; 0: only "
        "re-estimate BatchNorm statistics on training images)",
    )
    data.add_argument(
        "--finetune-images", type=int, default=None, help="train on the first N images only"
    )
    data.add_argument("--finetune-lr", type=float, default=0.005, help="(default 0.005)")
    data.add_argument(
        "--eval-dataset",
        choices=DATASET_NAMES,
        default=None,
        help="measure test top-1 before and after (default: the fine-tune data set)",
    )
    data.add_argument(
        "--eval-images", type=int, default=None, help="test images to use (default: all)"
    )
    data.add_argument("--data-dir", default=None, help="where the data set lives")
    data.add_argument("--batch-size", type=int, default=128)


def run(args: argparse.Namespace) -> int:
    from lightnets.deploy.compression import (
        CompressionSettings,
        compress,
        parse_per_layer_bits,
        print_report,
    )
    from lightnets.deploy.compression.data import compression_data
    from lightnets.fileio import check_output
    from lightnets.jsonio import dumps

    settings = CompressionSettings(
        density=args.density,
        bits=args.bits,
        per_layer_bits=parse_per_layer_bits(args.per_layer_bits),
        scope=args.scope,
    ).validate()
    check_output(args.output, inputs=input_files(args), force=args.force)
    model, state = model_or_checkpoint_from_args(args)
    data = compression_data(
        model,
        state,
        finetune_dataset=args.finetune_dataset,
        finetune_epochs=args.finetune_epochs,
        finetune_images=args.finetune_images,
        lr=args.finetune_lr,
        eval_dataset=args.eval_dataset,
        eval_images=args.eval_images,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
    )
    report, _ = compress(model, args.output, settings, data=data, source=state)
    if args.json:
        print(dumps(report.as_dict(), indent=2))
    else:
        print_report(report)
    return 0
