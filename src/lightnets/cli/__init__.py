"""The ``lightnets`` command: a thin shell that parses arguments and calls the library.

Each sub-command lives in its own module (``lightnets.cli.<command>``) exposing
``register(subparsers)``, and has its one-line summary in :data:`COMMANDS`; :func:`main` imports
only the module of the command it runs (``lightnets --help`` none). A new command is a module
and a line in :data:`COMMANDS`. :func:`main` is the one error boundary: errors a user can cause
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
from typing import Any

from lightnets.errors import LightnetsError, first_line
from lightnets.version import __version__

#: Sub-commands, in the order ``lightnets --help`` lists them, with the one line it shows: the
#: one place these lines live, so that ``lightnets --help`` imports no command module.
COMMANDS = {
    "models": "list the model zoo: hyperparameters and parameter counts",
    "profile": "count params, MACs, memory access per operation",
    "compare": "params, MACs, memory and measured latency of several models side by side",
    "roofline": "measure this machine's roofs, time every layer, place it on the roofline",
    "guidelines": "re-run ShuffleNet V2's guideline experiments (Tables 1-4) on this machine",
    "train": "train a model on CIFAR, (Fashion-)MNIST, an image folder or synthetic data",
    "sweep": "train every combination of --width-mult / --input-size / --groups, compare cost",
    "reproduce": "re-measure the five papers' tables here; one self-contained HTML report",
    "eval": "evaluate a checkpoint: top-1 / top-5 accuracy and loss",
    "bench": "latency and throughput of inference backends (eager, ONNX Runtime, OpenVINO, ...)",
    "export": "export to ONNX, OpenVINO, pt2, ExecuTorch, LiteRT, Core ML or TorchScript "
    "(verified before success)",
    "quantize": "int8 post-training quantization; reports size, speed-up, top-1 change",
    "compress": "Deep Compression: prune, share weights, Huffman-code; SqueezeNet's < 0.5 MB",
    "predict": "classify image files (class names from the checkpoint's data set)",
    "convert": "rewrite weights in the lightnets, torchvision or timm layout (exact round trip)",
}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage dump), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Commands(argparse._SubParsersAction):
    """Sub-parsers whose one-line help comes from :data:`COMMANDS` (whatever a module says)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if name in COMMANDS:
            kwargs["help"] = COMMANDS[name]
        return super().add_parser(name, **kwargs)


def build_parser(command: str | None = None, *, full: bool = True) -> argparse.ArgumentParser:
    """The ``lightnets`` parser.

    ``full`` (the default): every command's module imported and registered. Otherwise only
    ``command``'s (when it is one): the others are listed by name and :data:`COMMANDS` line
    alone, so that ``lightnets --help`` starts in a fraction of a second and ``lightnets CMD``
    imports what CMD needs (its module imports torch, a runtime, matplotlib, or not).
    """
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
        dest="command", metavar="COMMAND", parser_class=OneLineErrorParser, action=_Commands
    )
    subparsers.required = True
    for name in COMMANDS:
        if full or name == command:
            importlib.import_module(f"lightnets.cli.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, add_help=False)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names: its first word that is not an option (``lightnets``'
    own options take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


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
        words = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser(command_in(words), full=False)
    except KeyboardInterrupt:
        _stop_listening_to_ctrl_c(argv is None)
        print("lightnets: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(words)
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
