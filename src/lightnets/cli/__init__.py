"""The ``lightnets`` command: a thin shell that parses arguments and calls the library.

Each sub-command lives in its own module (``lightnets.cli.<command>``) exposing
``register(subparsers)``. Errors a user can cause (:class:`lightnets.errors.LightnetsError`,
missing or unwritable files) are printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lightnets.errors import LightnetsError

#: Sub-command modules, in the order ``lightnets --help`` lists them.
COMMANDS = (
    "models",
    "profile",
    "compare",
    "roofline",
    "train",
    "eval",
    "bench",
    "export",
    "quantize",
    "predict",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="lightnets",
        description="Build, measure, train and deploy lightweight CNNs.",
    )
    from lightnets import __version__

    parser.add_argument("--version", action="version", version=f"lightnets {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=OneLineErrorParser
    )
    subparsers.required = True
    for command in COMMANDS:
        module = importlib.import_module(f"lightnets.cli.{command}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightnets`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LightnetsError as exc:
        print(f"lightnets {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Missing, unreadable or unwritable files: name the file, no traceback.
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"lightnets {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lightnets {args.command}: interrupted", file=sys.stderr)
        return 130
