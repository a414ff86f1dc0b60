"""The ``lightnets`` command: a thin shell that parses arguments and calls the library.

Each sub-command lives in its own module (``lightnets.cli.<command>``) exposing
``register(subparsers)``. :func:`main` is the one error boundary: errors a user can cause
(:class:`lightnets.errors.LightnetsError`, missing or unwritable files) are printed as one line
on stderr with exit status 2; anything unexpected is one line naming the exception, exit status
1, and ``--debug`` (or ``LIGHTNETS_DEBUG=1``) prints its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from lightnets.errors import LightnetsError, first_line
from lightnets.version import __version__

#: Sub-command modules, in the order ``lightnets --help`` lists them.
COMMANDS = (
    "models",
    "profile",
    "compare",
    "roofline",
    "guidelines",
    "train",
    "sweep",
    "reproduce",
    "eval",
    "bench",
    "export",
    "quantize",
    "compress",
    "predict",
    "convert",
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
    parser.add_argument("--version", action="version", version=f"lightnets {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get("LIGHTNETS_DEBUG", "") not in ("", "0"),
        help="print the traceback of an unexpected error (also: LIGHTNETS_DEBUG=1)",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=OneLineErrorParser
    )
    subparsers.required = True
    for command in COMMANDS:
        module = importlib.import_module(f"lightnets.cli.{command}")
        module.register(subparsers)
    return parser


def _safe_streams() -> None:
    """Never crash on printing a name the terminal's encoding cannot show (e.g. non-UTF-8
    file names under a strict UTF-8 locale): escape it instead."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _stop_listening_to_ctrl_c(owns_process: bool) -> None:
    """The user asked to stop and we are stopping: further Ctrl-Cs (a user pressing it three
    times) must not interrupt the shutdown itself, where an ``atexit`` callback (PyTorch's
    among them) would print a traceback and the exit status would be lost. Only when
    :func:`main` is the program (called without ``argv``: the console script, ``python -m
    lightnets``); a caller passing ``argv`` keeps its Ctrl-C."""
    if owns_process and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightnets`` console script; returns the exit status."""
    _safe_streams()
    try:
        parser = build_parser()  # imports every command: seconds on a busy machine
    except KeyboardInterrupt:
        _stop_listening_to_ctrl_c(argv is None)
        print("lightnets: interrupted", file=sys.stderr)
        return 130
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
        _stop_listening_to_ctrl_c(argv is None)
        print(f"lightnets {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the boundary: a bug or an unforeseen input is still one line
        if args.debug:
            traceback.print_exc()
        detail = first_line(exc, default="")
        print(
            f"lightnets {args.command}: unexpected error: {type(exc).__name__}"
            + (f": {detail}" if detail else "")
            + ("" if args.debug else " (rerun with --debug for the traceback)"),
            file=sys.stderr,
        )
        return 1
