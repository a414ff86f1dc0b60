"""``lightnets profile``: params, MACs and memory traffic of a network, per operation."""

from __future__ import annotations

import argparse
import sys

from lightnets.cli.common import (
    add_model_arguments,
    input_size_from_args,
    model_or_checkpoint_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        description="Run one forward pass of NAME (a model name or a checkpoint file) and list "
        "every operation with its params, MACs, element-wise work and memory access. MACs are "
        "multiply-accumulates of convolutions and linear layers (what the papers call FLOPs); "
        "FLOPs = 2 x MACs.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--by-type",
        action="store_true",
        help="only the MACs and params per layer type (MobileNets, Table 2)",
    )
    parser.add_argument(
        "--all-rows",
        action="store_true",
        help="also list the zero-cost views (reshape, transpose, split)",
    )
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV, one line per operation")
    fmt.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightnets.analysis import profile, render
    from lightnets.analysis.reference import model_paper_figure, table2_for
    from lightnets.tables import terminal_console

    model, _ = model_or_checkpoint_from_args(args)
    size = input_size_from_args(args, model)
    prof = profile(model, size)
    figure = model_paper_figure(model, size[-1])
    table2 = table2_for(figure)
    if args.json:
        print(render.profile_json(prof, by_type=args.by_type, figure=figure))
    elif args.csv:
        sys.stdout.write(render.by_type_csv(prof) if args.by_type else render.profile_csv(prof))
    elif args.markdown:
        if args.by_type:
            sys.stdout.write(render.by_type_markdown(prof, table2))
        else:
            sys.stdout.write(render.profile_markdown(prof, all_rows=args.all_rows))
    else:
        console = terminal_console()
        if not args.by_type:
            console.print(render.profile_table(prof, all_rows=args.all_rows))
        console.print(render.by_type_table(prof, table2))
        console.print(render.totals_table(prof))
        if figure is not None:
            console.print(render.paper_line(prof, figure))
    return 0
