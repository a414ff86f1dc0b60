"""Reading and writing files so that nothing already on disk is lost or half-written.

Every file lightnets writes (checkpoints, metrics, figures, exported models, downloads) goes
through :func:`atomic_path`: the content is written to a temporary file in the destination's
folder, flushed to disk, given the permissions a plainly created file would have, and renamed
onto the destination. A crash, an error or Ctrl-C leaves the previous file untouched.

Three more rules, one function each:

- :func:`check_output`: a command never writes onto one of its own inputs (the same file
  however named: relative path, symlink, hard link) and asks before replacing an existing
  file (``--force`` in scripts; with no terminal to ask, it refuses).
- :func:`open_regular`: a file the user named is opened only when it is a regular file, and
  without blocking: a FIFO or a device is refused at once instead of hanging the command.
- :func:`write_bytes_atomic`: a failed write (full disk, file size limit, quota) is a one-line
  :class:`~lightnets.errors.SaveError` with nothing left behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from lightnets.errors import InvalidArgumentError, SaveError


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
    """Write ``text`` (UTF-8) to ``path`` atomically; a failed write is a one-line SaveError."""
    with saving(path), atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically; a failed write is a one-line SaveError.

    Serialise first (``torch.save`` or safetensors into memory), then write with this: the
    libraries' own writers report a full disk as an unrelated error (``inline_container.cc
    ... unexpected pos``, ``SafetensorError``), Python's as ``ENOSPC`` / ``EFBIG``.
    """
    with saving(path), atomic_path(path) as temp, open(temp, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def saving(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an operating-system write failure inside the block (``ENOSPC``, ``EFBIG`` past a
    file size limit, ``EDQUOT``, ``EIO``) into a one-line :class:`SaveError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
        raise SaveError(f"cannot write {path}: {reason}; no partial file was left") from exc


# -- files the user named ----------------------------------------------------------------------

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _kind(mode: int) -> str:
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``open(path, "rb")``, for a regular file only.

    The file is opened with ``O_NONBLOCK`` (opening a FIFO then returns at once instead of
    waiting for a writer), checked with ``fstat`` on the opened descriptor (no race between
    the check and the use), and only then switched back to blocking reads. A directory, FIFO,
    socket or device is an :class:`~lightnets.errors.InvalidArgumentError`; a missing or
    unreadable file raises the usual ``OSError``.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InvalidArgumentError(f"{os.fspath(path)} is {_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike[str]) -> Path:
    """``path`` when it is a regular file (see :func:`open_regular`), for libraries that open
    it themselves by name."""
    with open_regular(path):
        pass
    return Path(path)


def read_head(path: str | os.PathLike[str], size: int) -> bytes:
    """The first ``size`` bytes of the regular file ``path`` (:func:`open_regular`)."""
    with open_regular(path) as handle:
        return handle.read(size)


# -- where a command writes --------------------------------------------------------------------


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name the same file: equal paths, a symlink and its target, two
    hard links, or (when one does not exist yet) the same resolved path."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def confirm_replace(paths: Sequence[Path], force: bool) -> None:
    """Ask before replacing existing files (``force``: don't); refuse when no one can answer
    (stdin not a terminal), naming ``--force``. The question goes to stderr, so that ``--json``
    output on stdout stays clean."""
    if not paths or force:
        return
    names = " and ".join(str(p) for p in paths)
    if not sys.stdin or not sys.stdin.isatty():
        raise InvalidArgumentError(f"{names} already exists: pass --force to replace it")
    print(f"{names} already exists. Replace it? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise InvalidArgumentError(f"{names} kept: not replaced")


def check_output(
    path: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    force: bool = False,
    suffixes: Iterable[str] = (),
    companions: Iterable[str | os.PathLike[str]] = (),
    writable: Callable[[Path], object] | None = None,
) -> Path:
    """The one rule for every file a command writes, checked before any long work.

    ``path`` (and each of its ``companions``, e.g. OpenVINO's ``.bin``) must not be one of the
    command's ``inputs`` (refused even with ``force``: the input would be lost), must be
    writable (:func:`check_writable`, or ``writable(path)`` for an output that is a folder such
    as a Core ML package), and replacing an existing file needs a yes or ``force``
    (:func:`confirm_replace`). Returns ``path``.
    """
    path = Path(path)
    targets = [path, *(Path(c) for c in companions)]
    for source in (Path(i) for i in inputs if i is not None):
        if not source.exists():
            continue
        for target in targets:
            if same_file(target, source):
                raise InvalidArgumentError(
                    f"refusing to write {target}: it is the input {source}; choose another "
                    "output file"
                )
    if writable is None:
        check_writable(path, suffixes=suffixes)
    else:
        writable(path)
    confirm_replace([t for t in targets if t.exists() or t.is_symlink()], force)
    return path
