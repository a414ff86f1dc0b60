"""Errors a user can cause. The CLI prints these as one line and exits with status 2."""

from __future__ import annotations


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


def require(module: str, extra: str):
    """Import an optional dependency or raise a one-line error naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed: pip install 'lightnets[{extra}]'"
        ) from exc
