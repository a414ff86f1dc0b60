"""``lightnets guidelines``: ShuffleNet V2's four guidelines (Section 2) measured here."""

from __future__ import annotations

import argparse

from lightnets.cli.common import add_force_argument, add_threads_argument, threads_from_args

#: The paper times its ARM column with one thread: the default stays there.
SINGLE_THREAD = "the paper's ARM timings are single-thread"

EPILOG = """\
Speeds are normalised to the first row of each table (1:1, g=1, 1-fragment, relu+shortcut) so
that this machine's shape can be compared with the paper's GTX 1080Ti and Snapdragon 810.
Examples:
  lightnets guidelines --quick
  lightnets guidelines G1 G2 --json > guidelines.json
  lightnets guidelines --quick --plot guidelines.png
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from lightnets.lab.guidelines import GUIDELINES

    parser = subparsers.add_parser(
        "guidelines",
        description="Build the benchmark networks of ShuffleNet V2's Section 2 (Tables 1-4), "
        "count their MACs and memory access, time them, and compare with the paper.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "guidelines",
        nargs="*",
        metavar="G",
        help=f"which guidelines ({', '.join(GUIDELINES)}; default: all)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="images per timed forward pass (default 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smallest scale (x1) only, shorter timing"
    )
    parser.add_argument(
        "--widths",
        choices=("arm", "gpu"),
        default=None,
        help="the paper's ARM or GPU channel numbers (default: gpu on cuda, arm on cpu)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved timing rounds (default 5 quick, 7)"
    )
    add_threads_argument(parser, "here at most 1, as the paper's ARM timings")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--plot", metavar="FILE", default=None, help="write a figure (.png/.svg)")
    add_force_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightnets.analysis.threads import thread_record
    from lightnets.lab.guidelines import (
        GUIDELINES,
        check_guideline_options,
        plot_guidelines,
        run_guidelines,
    )

    if args.plot is not None:
        from lightnets.figures import check_plot_output

        check_plot_output(args.plot, force=args.force)
    from lightnets.train.distributed import resolve_device

    # Bad input is one line: checked before the thread policy prints its own.
    check_guideline_options(
        args.guidelines or GUIDELINES, batch_size=args.batch_size, rounds=args.rounds
    )
    resolve_device(args.device)
    choice = threads_from_args(args, limit=1, limit_reason=SINGLE_THREAD)
    report = run_guidelines(
        args.guidelines or GUIDELINES,
        device=args.device,
        batch_size=args.batch_size,
        quick=args.quick,
        widths=args.widths,
        rounds=args.rounds,
        threads=choice.threads,
    )
    report.conditions["thread_policy"] = thread_record(choice)
    if args.plot is not None:
        plot_guidelines(report, args.plot)
    if args.json:
        print(report.to_json())
        return 0
    c = report.conditions
    print(
        f"{c['device']}; torch {c['torch']}, {c['threads']} threads, batch {c['batch_size']}, "
        f"median of {c['rounds']} interleaved rounds, {c['date']}"
        + (f", load average {c['load_average_1min']}" if "load_average_1min" in c else "")
    )
    print(report.to_markdown())
    if args.plot is not None:
        print(f"wrote {args.plot}")
    return 0
