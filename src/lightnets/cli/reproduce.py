"""``lightnets reproduce``: the five papers' tables re-measured here, one self-contained page."""

from __future__ import annotations

import argparse

EPILOG = """\
Sections: mobilenet_v1, mobilenet_v2, shufflenet_v1, shufflenet_v2, squeezenet, machine.
Rerunning the same command skips finished sections (OUT_DIR/sections/*.json).
Examples:
  lightnets reproduce --quick -o report            # under 10 minutes on 2 cores
  lightnets reproduce -o report-full               # the full plan (longer training and timing)
  lightnets reproduce --quick --sections mobilenet_v2,squeezenet -o report
  lightnets reproduce --quick --weights-dir ~/.cache/torch/hub/checkpoints -o report
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        description="Rebuild every table of the SqueezeNet, MobileNet V1/V2 and ShuffleNet "
        "V1/V2 papers that can be rebuilt on this machine, beside the papers' figures, and "
        "write OUT_DIR/index.html (self-contained), OUT_DIR/results.json and the figures.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT_DIR", help="the report's folder"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the quick plan: shorter training and timing (under 10 minutes on 2 cores)",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        metavar="NAME",
        default=None,
        help="run only these sections (names separated by spaces or commas; default: all)",
    )
    parser.add_argument(
        "--weights-dir",
        metavar="DIR",
        default=None,
        help="folder holding torchvision's squeezenet1_0-*.pth / squeezenet1_1-*.pth: "
        "SqueezeNet is compressed on those (else on random weights, size only)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads for every timing (default 1)",
    )
    parser.add_argument(
        "--force", action="store_true", help="recompute the selected sections even if finished"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightnets.errors import check_int
    from lightnets.lab.reproduce import PLANS, run_reproduce

    check_int("--threads", args.threads, minimum=1)
    plan = PLANS["quick" if args.quick else "full"].with_threads(args.threads)
    run_reproduce(
        args.output,
        plan=plan,
        sections=args.sections,
        weights_dir=args.weights_dir,
        force=args.force,
    )
    return 0
