"""Where ``export`` and ``quantize`` write: ``-o`` resolved, and the files it stands for.

``-o DIR/`` (a trailing slash) or ``-o DIR`` naming an existing folder means "into that folder":
the file is ``DIR/<name><suffix>``, the folder created if needed; a folder named ``*.mlpackage``
is a Core ML package, written in place. What may be written there (not over an input, not over
an existing file without asking) is the one rule every command follows,
:func:`lightnets.fileio.check_output`; OpenVINO's ``.bin`` is checked with its ``.xml``.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightnets.errors import InvalidArgumentError

__all__ = ["companions", "resolve_output"]


def companions(path: Path) -> tuple[Path, ...]:
    """The other files written for ``path``: OpenVINO IR is ``NAME.xml`` + ``NAME.bin``."""
    return (path.with_suffix(".bin"),) if path.suffix == ".xml" else ()


def resolve_output(output: str, *, name: str, suffix: str) -> Path:
    """The file to write for ``-o output`` (see the module docstring); ``name`` and ``suffix``
    make the file name inside a folder."""
    text = str(output)
    if not text:
        raise InvalidArgumentError("-o/--output is empty")
    path = Path(text)
    package = path.suffix == ".mlpackage"  # a Core ML package is itself a folder
    if text.endswith((os.sep, "/")) or (path.is_dir() and not package):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot create folder {text!r}: {exc.strerror or exc}"
            ) from exc
        path = path / f"{name}{suffix}"
    return path
