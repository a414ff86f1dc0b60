"""``lightnets compress``: Deep Compression (prune, share weights, Huffman-code) into one file."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

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
        description="Compress NAME (a model name or a checkpoint) as Deep Compression does "
        "(Han et al., ICLR 2016): keep the largest --density of each layer's weights, cluster "
        "them into 2^--bits shared values (k-means, linear initialisation), store sparse "
        "indices as 8-bit (conv) / 5-bit (fc) gaps and Huffman-code the streams (or LZMA / "
        "Zstandard when smaller). The defaults are SqueezeNet's setting (paper, Table 2). "
        "A model name alone compresses random initial weights: the file size only, not the "
        "paper's trained weights; --weights FILE (e.g. torchvision's squeezenet1_0 .pth) or a "
        "checkpoint compresses trained ones, and top-1 before and after is measured on the "
        "checkpoint's data set. eval, bench, export and predict read the file wherever they "
        "read a checkpoint.",
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
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of a model name's random initial weights, so a size is reproducible (default 0)",
    )
    _add_data_arguments(parser.add_argument_group(DATA_GROUP))
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


DATA_GROUP = "data (optional: fine-tune and top-1 before/after)"
NO_EVAL = "none"


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
        choices=(*DATASET_NAMES, NO_EVAL),
        default=None,
        help="measure test top-1 before and after (default: the fine-tune data set, else the "
        f"data set a checkpoint records; {NO_EVAL}: only the fine-tune data set, if any)",
    )
    data.add_argument(
        "--eval-images", type=int, default=None, help="test images to use (default: all)"
    )
    data.add_argument("--data-dir", default=None, help="where the data set lives")
    data.add_argument("--batch-size", type=int, default=128)


def run(args: argparse.Namespace) -> int:
    import torch

    from lightnets.data.splits import MAX_SEED
    from lightnets.deploy.compression import (
        CompressionSettings,
        compress,
        parse_per_layer_bits,
        print_report,
    )
    from lightnets.deploy.compression.data import compression_data
    from lightnets.errors import check_int
    from lightnets.fileio import check_output
    from lightnets.jsonio import dumps

    settings = CompressionSettings(
        density=args.density,
        bits=args.bits,
        per_layer_bits=parse_per_layer_bits(args.per_layer_bits),
        scope=args.scope,
    ).validate()
    check_int("--seed", args.seed, minimum=0, maximum=MAX_SEED)
    check_output(args.output, inputs=input_files(args), force=args.force)
    torch.manual_seed(args.seed)
    model, state = model_or_checkpoint_from_args(args)
    eval_dataset = _eval_dataset(args, state)
    data = compression_data(
        model,
        state,
        finetune_dataset=args.finetune_dataset,
        finetune_epochs=args.finetune_epochs,
        finetune_images=args.finetune_images,
        lr=args.finetune_lr,
        eval_dataset=eval_dataset,
        eval_images=args.eval_images,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
    )
    weights_from = _weights_from(args, model)
    report, _ = compress(
        model, args.output, settings, data=data, source=state, weights_from=weights_from
    )
    if args.json:
        print(dumps(report.as_dict(), indent=2))
    else:
        print_report(report)
        if data is None and not report.random_weights and args.eval_dataset != NO_EVAL:
            print(
                f"no top-1 before and after: {args.weights or args.name} records no data set "
                "(pass --eval-dataset)"
            )
    return 0


def _eval_dataset(args: argparse.Namespace, state: dict | None) -> str | None:
    """--eval-dataset; by default the fine-tune data set, else the one a checkpoint records
    (none for random weights, which have no top-1 worth measuring)."""
    if args.eval_dataset == NO_EVAL:
        return None
    if args.eval_dataset is not None or args.finetune_dataset is not None:
        return args.eval_dataset
    return ((state or {}).get("dataset") or {}).get("name")


def _weights_from(args: argparse.Namespace, model: nn.Module) -> str:
    """What NAME and --weights say was compressed, for the report's first line."""
    from lightnets.cli.common import looks_like_checkpoint
    from lightnets.deploy.compression.report import RANDOM_WEIGHTS

    if looks_like_checkpoint(args.name):
        return f"the weights of {args.name}"
    if args.weights is not None:
        loaded = getattr(model, "weights_report", None)
        what = f" ({loaded.source.description})" if loaded is not None else ""
        return f"the weights of {args.weights}{what}"
    return RANDOM_WEIGHTS
