"""Errors a user can cause. The CLI prints these as one line and exits with status 2."""

from __future__ import annotations

import importlib
import math
import os
from types import ModuleType


class LightnetsError(Exception):
    """Base class of every error caused by user input (never by a bug in lightnets)."""


class InvalidArgumentError(LightnetsError, ValueError):
    """A value the user passed is not allowed; the message names it and what is allowed."""


class DataError(LightnetsError, ValueError):
    """A data set on disk is missing, truncated or malformed; the message names the file."""


class CheckpointError(LightnetsError, ValueError):
    """A checkpoint is missing, corrupted, or belongs to another model."""


class MissingDependencyError(LightnetsError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class SaveError(LightnetsError):
    """A file could not be written (full disk, quota, file size limit, I/O error); nothing was
    left behind."""


class UntrustedCodeError(LightnetsError):
    """A file is a program (loading it runs code it carries) and the user did not say that
    they trust it."""


#: The most characters of a foreign exception's message that a one-line error quotes.
QUOTE_LIMIT = 200


def first_line(
    exc: BaseException, limit: int | None = QUOTE_LIMIT, default: str | None = None
) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters (None: all of it); for
    an empty message ``default`` (None: the exception's type name). One-line errors quote
    foreign exceptions (torch, ONNX, OpenVINO) whose messages may span many lines, or be empty:
    every such quote goes through here, so they all follow one rule."""
    lines = str(exc).strip().splitlines()
    empty = type(exc).__name__ if default is None else default
    text = lines[0].strip() if lines else empty
    return text if limit is None else text[:limit]


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or raise a one-line error naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed: pip install 'lightnets[{extra}]'"
        ) from exc


def check_int(
    name: str,
    value: object,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """``value`` as an int within ``[minimum, maximum]``, else an error naming ``name``.

    ``bool`` is rejected although it is an ``int`` subclass: ``batch_size=True`` is a mistake,
    not a batch of one. The single place where integer arguments are checked.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(
            f"{name}={_shown(value)} is not allowed; use an integer{_range_text(minimum, maximum)}"
        )
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidArgumentError(
            f"{name}={_shown(value)} is not allowed; use an integer{_range_text(minimum, maximum)}"
        )
    return value


def max_threads() -> int:
    """The most threads a ``--threads`` option accepts: this machine's logical CPUs.

    More threads than CPUs only wait for one another (a measurement then times the waiting), and
    tens of thousands exhaust the process: ``libgomp: Thread creation failed``, or a crash.
    """
    return os.cpu_count() or 1


def threads_allowed() -> str:
    """What a thread-count option accepts, for messages."""
    return f"use an integer in 1..{max_threads()} (this machine's logical CPUs)"


def check_threads(name: str, value: object) -> int:
    """``value`` as a thread count in ``1..max_threads()``, else an error naming ``name``.

    The one check of every thread-count option (``--threads``, ``threads=``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_threads():
        raise InvalidArgumentError(f"{name}={_shown(value)} is not allowed; {threads_allowed()}")
    return value


def check_float(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """``value`` as a finite float within the range, else an error naming ``name``.

    ``exclusive_minimum=True`` makes the lower bound strict (``lr > 0``), ``exclusive_maximum``
    the upper one (``drop_rate < 1``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise InvalidArgumentError(
            f"{name}={_shown(value)} is not allowed; use a finite number"
            f"{_range_text(minimum, maximum, exclusive_minimum, exclusive_maximum)}"
        )
    too_small = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    too_large = maximum is not None and (value >= maximum if exclusive_maximum else value > maximum)
    if too_small or too_large:
        raise InvalidArgumentError(
            f"{name}={_shown(value)} is not allowed; use a number"
            f"{_range_text(minimum, maximum, exclusive_minimum, exclusive_maximum)}"
        )
    return float(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float (10**400, read from a file)
        return False


def _shown(value: object) -> str:
    """``repr(value)``, at most 60 characters (a 400-digit number read from a file)."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for conversion to text
        return "a number too long to show"
    return text if len(text) <= 60 else text[:57] + "..."


def _range_text(
    minimum: float | None,
    maximum: float | None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> str:
    low = ">" if exclusive_minimum else ">="
    high = "<" if exclusive_maximum else "<="
    if minimum is not None and maximum is not None:
        if exclusive_minimum or exclusive_maximum:
            return f" {low} {minimum} and {high} {maximum}"
        return f" in {minimum}..{maximum}"
    if minimum is not None:
        return f" {low} {minimum}"
    if maximum is not None:
        return f" {high} {maximum}"
    return ""
