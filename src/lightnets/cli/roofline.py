"""``lightnets roofline``: every conv and linear layer of a network on this machine's roofline."""

from __future__ import annotations

import argparse
import sys

from lightnets.cli.common import (
    add_force_argument,
    add_model_arguments,
    add_threads_argument,
    input_files,
    input_size_from_args,
    model_or_checkpoint_from_args,
    threads_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "roofline",
        description="Measure this machine's peak float32 compute (a large 3x3 convolution) and "
        "memory bandwidth (a large copy), time every convolution and linear layer of NAME "
        "alone on its input shape, and report which are compute-bound and which memory-bound, "
        "and how far each runs below its attainable speed.",
    )
    add_model_arguments(parser)
    parser.add_argument("--plot", metavar="FILE.png", help="write the roofline figure")
    add_force_argument(parser)
    parser.add_argument(
        "--peak-seconds",
        type=float,
        default=3.0,
        help="time spent measuring the machine's roofs (default: 3)",
    )
    parser.add_argument(
        "--layer-seconds",
        type=float,
        default=0.05,
        help="minimum timing duration per layer (default: 0.05)",
    )
    add_threads_argument(parser, "the roofs and the layers alike")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightnets.analysis import profile, render
    from lightnets.analysis.plots import plot_roofline
    from lightnets.analysis.roofline import roofline
    from lightnets.analysis.threads import thread_record
    from lightnets.errors import InvalidArgumentError
    from lightnets.figures import check_plot_output, save_figure
    from lightnets.tables import terminal_console

    for flag in ("peak_seconds", "layer_seconds"):
        if not getattr(args, flag) > 0:
            raise InvalidArgumentError(f"--{flag.replace('_', '-')} must be > 0")
    if args.plot:
        check_plot_output(args.plot, force=args.force, inputs=input_files(args))
    model, _ = model_or_checkpoint_from_args(args)
    size = input_size_from_args(args, model)
    profile(model, size)  # refuse impossible sizes before the measurement starts
    choice = threads_from_args(args)
    if not args.json and sys.stderr.isatty():
        print("measuring this machine's peak compute and bandwidth...", file=sys.stderr)
    result = roofline(
        model,
        size,
        seconds_per_layer=args.layer_seconds,
        threads=choice.threads,
        peak_seconds=args.peak_seconds,
    )
    if args.plot:
        save_figure(plot_roofline(result), args.plot)
    line = render.measurement_line(result.stable, result.note)
    if args.json:
        print(render.to_json({**result.to_dict(), "thread_policy": thread_record(choice)}))
        if not result.stable:
            print(line, file=sys.stderr)
        return 0
    console = terminal_console()
    console.print(render.roofline_table(result))
    console.print(f"roofs: {result.peak.method}", markup=False, highlight=False)
    console.print(line, markup=False, highlight=False)
    if args.plot:
        console.print(f"figure written to {args.plot}")
    return 0
