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
        help="count params, MACs, memory access per operation",
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
    import json
    from dataclasses import asdict

    from lightnets.analysis import profile
    from lightnets.analysis.reference import MOBILENET_V1_TABLE2, paper_figure

    model, _ = model_or_checkpoint_from_args(args)
    size = input_size_from_args(args, model)
    prof = profile(model, size)
    hparams = dict(getattr(model, "hparams", {}))
    figure = paper_figure(
        hparams.get("name", ""),
        hparams,
        size[-1],
        num_classes=hparams.get("num_classes", 0),
        variant=hparams.get("variant", ""),
    )
    # Table 2 of MobileNets is for 1.0 MobileNet-224 only.
    table2 = (
        MOBILENET_V1_TABLE2
        if figure is not None
        and figure.name == "mobilenet_v1"
        and figure.resolution == 224
        and dict(figure.hparams).get("width_mult") == 1.0
        else None
    )

    if args.json:
        data = [asdict(s) for s in prof.by_type()] if args.by_type else prof.to_dict()
        if not args.by_type and figure is not None:
            data["paper"] = {**asdict(figure), "hparams": dict(figure.hparams)}
        print(json.dumps(data, indent=2))
        return 0
    if args.csv:
        if args.by_type:
            import csv

            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(
                [
                    "type",
                    "description",
                    "layers",
                    "macs",
                    "macs_percent",
                    "params",
                    "params_percent",
                ]
            )
            for s in prof.by_type():
                writer.writerow(
                    [
                        s.type,
                        s.description,
                        s.layers,
                        s.macs,
                        s.macs_percent,
                        s.params,
                        s.params_percent,
                    ]
                )
        else:
            sys.stdout.write(prof.to_csv())
        return 0
    if args.markdown:
        text = prof.to_markdown(all_rows=args.all_rows)
        if args.by_type:
            text = _markdown_by_type(prof, table2)
        sys.stdout.write(text)
        return 0

    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped: no terminal width to respect, keep rows on one line
        console = Console(width=160)
    if not args.by_type:
        console.print(prof.rich_table(all_rows=args.all_rows))
    console.print(_rich_by_type(prof, table2))
    console.print(prof.rich_totals())
    if figure is not None:
        parts = []
        if figure.macs:
            parts.append(f"{figure.macs / 1e6:.0f}M MACs (ours {prof.macs / 1e6:.1f}M)")
        if figure.params:
            parts.append(f"{figure.params / 1e6:.2f}M params (ours {prof.params / 1e6:.2f}M)")
        if figure.top1 is not None:
            parts.append(f"top-1 {figure.top1}%")
        console.print(f"paper: {', '.join(parts)} — {figure.source}")
    return 0


def _rich_by_type(prof, table2):
    table = prof.rich_by_type()
    if table2 is None:
        return table
    from rich.table import Table

    out = Table(title="by layer type, beside MobileNets' Table 2", header_style="bold")
    for name in ("type", "MACs %", "paper", "weights %", "paper "):
        out.add_column(name, justify="left" if name == "type" else "right")
    for s in prof.by_type():
        paper = table2.get(s.type)
        if s.layers == 0 and paper is None:
            continue
        out.add_row(
            s.type,
            f"{s.macs_percent:.2f}",
            f"{paper[0]:.2f}" + (" (sic)" if s.type == "conv3x3" else "") if paper else "",
            f"{s.params_percent:.2f}",
            f"{paper[1]:.2f}" if paper else "",
        )
    out.caption = (
        "weights: conv/FC weight tensors only, as Table 2. The paper's 1.19% for conv3x3 swaps "
        "two digits: its shares then sum to 99.29%; the network gives 1.91%"
    )
    return out


def _markdown_by_type(prof, table2) -> str:
    header = "| type | layers | MACs | MACs % |"
    header += " paper MACs % |" if table2 else ""
    header += " weights | weights % |" + (" paper weights % |" if table2 else "")
    lines = [header, "|---" + "|---:" * (header.count("|") - 2) + "|"]
    for s in prof.by_type():
        cells = [s.type, str(s.layers), f"{s.macs:,}", f"{s.macs_percent:.2f}"]
        paper = (table2 or {}).get(s.type)
        if table2:
            cells.append(f"{paper[0]:.2f}" if paper else "")
        cells += [f"{s.params:,}", f"{s.params_percent:.2f}"]
        if table2:
            cells.append(f"{paper[1]:.2f}" if paper else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
