"""Calls into runtimes that rearrange Python's logging, undone when they return or raise.

OpenVINO's ``convert_model`` sets the root logger to ERROR and puts back its level, filters and
handlers only when the conversion succeeds: a failed conversion left every later warning of the
process (lightnets' own notes among them) below the root logger's level. ONNX Runtime's quantizer
logs a generic hint on the root logger itself, which only the root logger's level can silence.
:func:`kept_logging` wraps such calls: whatever the call does to the loggers it names (the root
logger always), their levels, filters, handlers, the handlers' levels and ``logging.disable`` are
as before afterwards, exception or not.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["kept_logging"]


@dataclass(frozen=True)
class _LoggerState:
    logger: logging.Logger
    level: int
    propagate: bool
    disabled: bool
    filters: tuple
    handlers: tuple[tuple[logging.Handler, int], ...]

    @classmethod
    def of(cls, logger: logging.Logger) -> _LoggerState:
        handlers = tuple((h, h.level) for h in logger.handlers)
        return cls(
            logger, logger.level, logger.propagate, logger.disabled, tuple(logger.filters), handlers
        )

    def restore(self) -> None:
        logger = self.logger
        logger.setLevel(self.level)
        logger.propagate, logger.disabled = self.propagate, self.disabled
        logger.filters[:] = self.filters
        logger.handlers[:] = [handler for handler, _ in self.handlers]
        for handler, level in self.handlers:
            handler.setLevel(level)


@contextlib.contextmanager
def kept_logging(
    *names: str, root_level: int | None = None, quiet: tuple[str, ...] = ()
) -> Iterator[None]:
    """Run the block, then restore the root logger and the loggers ``names`` as they were.

    ``root_level``: the root logger's level inside the block (e.g. ``logging.ERROR`` to silence
    a library that logs on the root logger directly), restored afterwards like the rest.
    ``quiet``: loggers held at ERROR inside the block (PyTorch's own, which write to the stderr
    of the moment they were made and do not propagate, so redirecting stderr misses them).
    """
    root = logging.getLogger()
    loggers = [root, *(logging.getLogger(n) for n in (*names, *quiet))]
    states = [_LoggerState.of(logger) for logger in loggers]
    disabled = root.manager.disable
    try:
        if root_level is not None:
            root.setLevel(root_level)
        for name in quiet:
            logging.getLogger(name).setLevel(logging.ERROR)
        yield
    finally:
        for state in states:
            state.restore()
        logging.disable(disabled)
