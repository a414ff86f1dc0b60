"""``lightnets sweep``: train a grid of width / resolution / group settings, compare cost."""

from __future__ import annotations

import argparse

EPILOG = """\
Every `lightnets train` flag applies to every cell. Rerunning the same command continues:
finished cells are read back, an interrupted one resumes from its last.pt.
Examples:
  lightnets sweep --model mobilenet_v1 --width-mult 1 0.75 0.5 0.25 --input-size 32 24 \\
      --dataset fashion-mnist --train-subset 2000 --epochs 3 --output runs/sweep
  torchrun --nproc-per-node 2 -m lightnets sweep --model shufflenet_v1 --groups 1 2 3 4 8 ...
"""


def _train_parser() -> argparse.ArgumentParser:
    """`lightnets train`'s parser, so that the sweep takes exactly its flags."""
    from lightnets.cli import train as train_cli

    holder = argparse.ArgumentParser(add_help=False)
    commands = holder.add_subparsers()
    train_cli.register(commands)
    return next(iter(commands.choices.values()))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        parents=[_train_parser()],
        conflict_handler="resolve",
        description="Train every combination of the listed hyperparameters (one run directory "
        "per cell under --output, resumable), then write OUTPUT/sweep.{json,md,png}: test "
        "top-1 against MACs, parameters and latency measured here, Pareto front marked, "
        "beside the paper's ImageNet rows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    grid = parser.add_argument_group("the grid (each flag takes one or more values)")
    grid.add_argument("--width-mult", type=float, nargs="+", default=None, metavar="ALPHA")
    grid.add_argument("--input-size", type=int, nargs="+", default=None, metavar="PIXELS")
    grid.add_argument("--groups", type=int, nargs="+", default=None, metavar="G")
    grid.add_argument(
        "--max-cells",
        type=int,
        default=None,
        metavar="N",
        help="train at most N unfinished cells now, then stop (rerun to continue)",
    )
    parser.add_argument(
        "--model", dest="name", metavar="NAME", help="model name (see `lightnets models`)"
    )
    parser.add_argument("--resume", default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightnets.cli.train import config_from_args
    from lightnets.errors import InvalidArgumentError, check_int
    from lightnets.lab.sweep import run_sweep

    if args.resume is not None:
        raise InvalidArgumentError(
            "--resume does not apply to sweep: rerun the same command with the same --output"
        )
    if args.name is None:
        raise InvalidArgumentError("--model NAME is required (see `lightnets models`)")
    if args.output is None:
        raise InvalidArgumentError("--output DIR is required (the sweep's folder)")
    if args.max_cells is not None:
        check_int("--max-cells", args.max_cells, minimum=1)
    axes = {
        name: getattr(args, name)
        for name in ("width_mult", "input_size", "groups")
        if getattr(args, name) is not None
    }
    for name in axes:
        setattr(args, name, None)
    base, _ = config_from_args(args)
    result = run_sweep(base, axes, args.output, max_cells=args.max_cells)
    if result is not None:
        print(result.to_markdown())
        print(f"wrote {args.output}/sweep.json, sweep.md, sweep.png")
    return 0
