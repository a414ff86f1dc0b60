"""``lightnets compare``: the zoo side by side, counted and measured."""

from __future__ import annotations

import argparse
import sys

from lightnets.cli.common import add_force_argument, add_threads_argument, threads_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        description="Profile and time several models (default: every family at its default "
        "and the widths of the papers' trade-off curves) at batch 1 on this CPU, beside the "
        "papers' ImageNet figures. NAME may carry hyperparameters: mobilenet_v1:width_mult=0.5.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="models to compare, NAME or NAME:key=value[,key=value]",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="input height and width in pixels (default: each model's, 224)",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="write a figure: MACs vs latency, MACs vs the papers' top-1",
    )
    add_force_argument(parser)
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="minimum timing per model, spread over interleaved rounds; a busy machine or an "
        "imprecise median extends it up to 3x + 1 s (default: 1.0)",
    )
    add_threads_argument(parser)
    parser.add_argument("--no-latency", action="store_true", help="count only, do not time")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightnets.analysis import render
    from lightnets.analysis.compare import compare
    from lightnets.analysis.plots import plot_comparison
    from lightnets.analysis.threads import thread_record
    from lightnets.errors import InvalidArgumentError
    from lightnets.figures import check_plot_output, save_figure
    from lightnets.tables import terminal_console

    if args.input_size is not None and args.input_size < 1:
        raise InvalidArgumentError(f"--input-size must be >= 1, got {args.input_size}")
    if not args.seconds > 0:
        raise InvalidArgumentError(f"--seconds must be > 0, got {args.seconds}")
    if args.plot:
        check_plot_output(args.plot, force=args.force)
    # Chosen now (the cores free at start), said when the timing starts: a bad name or size
    # found while profiling stays a one-line error.
    held: list[str] = []
    choice = threads_from_args(args, announce=held.append)
    interactive = not (args.json or args.markdown) and sys.stderr.isatty()

    def progress(message: str) -> None:
        while held:
            print(held.pop(), file=sys.stderr, flush=True)
        if interactive:
            print(message, file=sys.stderr)

    result = compare(
        args.names or None,
        input_size=args.input_size,
        latency=not args.no_latency,
        latency_seconds=args.seconds,
        threads=choice.threads,
        progress=progress,
    )
    if args.plot:
        save_figure(plot_comparison(result), args.plot)
    line = render.measurement_line(result.stable, result.note)
    if args.json:
        print(render.to_json({**result.to_dict(), "thread_policy": thread_record(choice)}))
        if result.stable is False:
            print(line, file=sys.stderr)
    elif args.markdown:
        sys.stdout.write(render.comparison_markdown(result))
    else:
        console = terminal_console()
        console.print(render.comparison_table(result))
        if line:
            console.print(line, markup=False, highlight=False)
        if args.plot:
            console.print(f"figure written to {args.plot}")
    return 0
