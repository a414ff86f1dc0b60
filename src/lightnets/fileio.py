"""Writing files so that nothing already on disk is lost or half-written.

Every file lightnets writes (checkpoints, metrics, figures, exported models, downloads) goes
through :func:`atomic_path`: the content is written to a temporary file in the destination's
folder, flushed to disk, given the permissions a plainly created file would have, and renamed
onto the destination. A crash, an error or Ctrl-C leaves the previous file untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from lightnets.errors import InvalidArgumentError


def check_writable(path: str | os.PathLike[str], *, suffixes: Iterable[str] = ()) -> Path:
    """Fail now, before any long work, when ``path`` cannot be written (or has a wrong suffix)."""
    path = Path(path)
    if path.is_dir():
        raise InvalidArgumentError(f"cannot write {str(path)!r}: it is a directory")
    suffixes = tuple(suffixes)
    if suffixes and path.suffix.lower() not in suffixes:
        raise InvalidArgumentError(
            f"cannot write {str(path)!r}: the name must end in {', '.join(suffixes)}"
        )
    folder = path.parent
    if not folder.is_dir():
        raise InvalidArgumentError(
            f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist"
        )
    # Creating (and removing) a file is the only reliable test (ACLs, read-only mounts, root).
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    if path.exists() and not os.access(path, os.W_OK):
        raise InvalidArgumentError(f"cannot write {str(path)!r}: the file is read-only")
    return path


def _new_file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would give: the existing file's, else 0666 minus umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def commit(temp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Flush ``temp`` to disk, give it ``final``'s mode, and rename it onto ``final``."""
    temp, final = Path(temp), Path(final)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.chmod(temp, _new_file_mode(final))
    os.replace(temp, final)
    folder = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``.

    When the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        commit(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")
