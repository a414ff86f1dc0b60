"""Where ``export`` and ``quantize`` write: ``-o`` resolved, and what it would replace.

``-o DIR/`` (a trailing slash) or ``-o DIR`` naming an existing folder means "into that folder":
the file is ``DIR/<name><suffix>``, the folder created if needed; a folder named ``*.mlpackage``
is a Core ML package, written in place. An output that is the input
(the same file, however named: relative path, symlink, hard link) is refused, and so is an
OpenVINO ``.bin`` that would land on it.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightnets.errors import InvalidArgumentError

__all__ = ["companions", "existing", "resolve_output"]


def companions(path: Path) -> tuple[Path, ...]:
    """Every file written for ``path``: OpenVINO IR is ``NAME.xml`` + ``NAME.bin``."""
    return (path, path.with_suffix(".bin")) if path.suffix == ".xml" else (path,)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def resolve_output(output: str, *, name: str, suffix: str, source: str | None = None) -> Path:
    """The file to write for ``-o output`` (see the module docstring).

    ``name`` and ``suffix`` make the file name inside a folder; ``source`` is the input file
    (a checkpoint), which must not be overwritten.
    """
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
    if source is not None and Path(source).exists():
        for target in companions(path):
            if _same_file(target, Path(source)):
                raise InvalidArgumentError(
                    f"refusing to write {target}: it is the input {source}; choose another -o"
                )
    return path


def existing(path: Path) -> list[Path]:
    """The files writing ``path`` would replace."""
    return [p for p in companions(path) if p.exists()]
