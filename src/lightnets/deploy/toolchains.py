"""The device toolchains (ExecuTorch, LiteRT, Core ML, torchao), imported and run quietly.

These packages print on import and while converting: torchao names the CUDA kernels it cannot
load, coremltools warns about untested torch and scikit-learn versions and draws progress bars,
litert-torch draws its own, ExecuTorch's and TFLite's C++ runtimes log CPU probing and delegate
creation to the process's stderr. None of it is a result, and ``--json`` output must stay
clean, so :func:`quiet` silences Python streams, warnings, logging and the two file
descriptors while they work; an error still arrives as the exception it was.

The runtimes here run a fixed batch (mobile files are exported with batch 1, the benchmark's at
its batch size): :func:`fixed_batch` runs any batch through such a runner in pieces.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lightnets.errors import require

__all__ = ["MOBILE_EXTRA", "fixed_batch", "quiet", "require_mobile"]

#: The pip extra that installs every device toolchain.
MOBILE_EXTRA = "mobile"


@contextlib.contextmanager
def _silenced_descriptors() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null (C++ runtimes write there directly)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            if stream is not None:  # no console: sys.__stdout__ is None
                stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no descriptors to silence (an embedding without stdio)
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence stdout, stderr, Python warnings and log records up to ERROR inside the block."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            _silenced_descriptors(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def require_mobile(module: str) -> Any:
    """Import ``module`` quietly; a missing one is a one-line error naming the ``mobile`` extra.

    The top-level package is imported first, so that a missing package is reported as missing
    even when one of its submodules is already loaded.
    """
    top = module.split(".", 1)[0]
    with quiet():
        require(top, MOBILE_EXTRA)
        return require(module, MOBILE_EXTRA)


def fixed_batch(
    run: Callable[[np.ndarray], np.ndarray], batch: int
) -> Callable[[np.ndarray], np.ndarray]:
    """``run`` (which accepts exactly ``batch`` images) for any number of images.

    The images go through in pieces of ``batch``; a short last piece is padded with zeros and
    its padding's outputs dropped.
    """

    def run_any(x: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(x), batch):
            piece = x[start : start + batch]
            count = len(piece)
            if count < batch:
                padding = np.zeros((batch - count, *piece.shape[1:]), dtype=piece.dtype)
                piece = np.concatenate([piece, padding])
            outputs.append(np.asarray(run(np.ascontiguousarray(piece)))[:count])
        return np.concatenate(outputs)

    return run_any
