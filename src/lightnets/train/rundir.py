"""The run directory: who may write it, and keeping its files consistent after a crash.

- Ownership (:func:`check_new_run_dir`): a new run goes into a missing or empty directory, or
  one holding only lightnets' own leftovers (a stale lock, temporary files, a run that stopped
  before its first checkpoint). Our runs are recognised by a marker file only lightnets writes
  (``RUN_DIR/.lightnets-run``), or, for runs made before it existed, by a checkpoint that loads
  as ours. A directory holding a run's checkpoints is refused (continue it with ``--resume``),
  and so is one holding anything else.
- Exclusion (:class:`RunLock`): one process at a time trains in a run directory. It holds an
  exclusive ``flock`` on ``RUN_DIR/.lightnets.lock``, which records its PID and is created with
  ``O_EXCL | O_NOFOLLOW`` (never written through a symlink). The kernel drops the lock when the
  process ends however it ends (even ``kill -9``), so a lock file left behind is stale: the
  next run takes it over and says whose it was.
- Consistency (:func:`repair_best`): at an epoch's end the trainer writes ``last.pt`` first, then
  ``best.pt`` when the epoch improved. ``last.pt`` records the best epoch, so a crash between the
  two writes leaves a ``best.pt`` older than ``last.pt`` says; the best epoch is then the last
  one, and resuming copies ``last.pt`` to ``best.pt``.
- Leftovers (:func:`remove_stray_temps`): an atomic write killed half-way leaves its temporary
  file (``.last.pt.<random>.tmp``); a run removes those of its own files when it starts.
- Fault injection for tests: :func:`lightnets.train.checkpoint.fault_point`, where the files
  are written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

from lightnets.errors import LightnetsError
from lightnets.fileio import atomic_path, write_text_atomic
from lightnets.train.config import BEST_CHECKPOINT, LAST_CHECKPOINT

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"
LOCK = ".lightnets.lock"
#: Written by lightnets alone, first, into every run directory it makes: what tells our runs
#: from a folder that merely holds files of the same names.
MARKER = ".lightnets-run"
#: Largest marker file read (a marker is a few lines of JSON).
MARKER_BYTES = 64 * 1024
#: Every name a run writes in its directory.
RUN_FILES = (
    CONFIG,
    METRICS,
    LAST_CHECKPOINT,
    BEST_CHECKPOINT,
    SUMMARY,
    CURVES,
    TENSORBOARD,
    LOCK,
    MARKER,
)


class RunDirError(LightnetsError):
    """The run directory is in use, foreign, or already holds a run."""


def _is_temp_of_ours(name: str) -> bool:
    return name.endswith(".tmp") and any(name.startswith(f".{own}.") for own in RUN_FILES)


def read_marker(path: Path, kind: str) -> dict[str, Any] | None:
    """The contents of the marker file ``path`` when it is lightnets' marker of ``kind``
    (``"run"``, ``"sweep"``); None when there is none or it is not ours."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode) or os.lstat(path).st_size > MARKER_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("format") == f"lightnets-{kind}":
        return data
    return None


def write_marker(path: Path, kind: str, **fields: Any) -> None:
    """Write lightnets' marker of ``kind`` at ``path`` (atomically)."""
    from lightnets.jsonio import dumps
    from lightnets.version import __version__

    record = {"format": f"lightnets-{kind}", "lightnets_version": __version__, **fields}
    write_text_atomic(path, dumps(record, indent=2) + "\n")


def is_lightnets_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a regular file that loads as a lightnets checkpoint (memory-mapped:
    the tensors are not read), as every run made before the marker existed has."""
    import torch

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not ours, whatever torch makes of it
        return False
    return isinstance(state, dict) and state.get("format") == "lightnets-checkpoint"


def is_run_dir(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a lightnets run: our marker, or (a run made before the marker
    existed) a ``last.pt`` or ``best.pt`` that loads as a lightnets checkpoint."""
    if read_marker(run_dir / MARKER, "run") is not None:
        return True
    return any(is_lightnets_checkpoint(run_dir / n) for n in (LAST_CHECKPOINT, BEST_CHECKPOINT))


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse an ``--output`` that is a file, holds a run, or holds anything not lightnets'.

    Our runs are recognised by the marker only lightnets writes (:data:`MARKER`), not by the
    names of their files: a folder with the user's own ``config.json`` and ``metrics.jsonl``
    is someone else's. A run that saved no checkpoint (it stopped in its first epoch) holds
    nothing worth keeping: a new run may start over in its directory.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--output {run_dir} exists and is not a directory")
    if not run_dir.exists():
        return
    names = sorted(p.name for p in run_dir.iterdir())
    checkpoints = [n for n in (LAST_CHECKPOINT, BEST_CHECKPOINT) if n in names]
    marked = read_marker(run_dir / MARKER, "run") is not None
    if checkpoints and (marked or is_run_dir(run_dir)):
        if LAST_CHECKPOINT in checkpoints:
            raise RunDirError(
                f"{run_dir} already holds a lightnets run ({', '.join(checkpoints)}): continue "
                f"it with `lightnets train --resume {run_dir}`, or choose another --output"
            )
        raise RunDirError(
            f"{run_dir} already holds a lightnets run's {BEST_CHECKPOINT} (its "
            f"{LAST_CHECKPOINT} is gone, so it cannot be resumed): choose another --output"
        )
    ours = {LOCK} | ({MARKER, CONFIG, METRICS, TENSORBOARD} if marked else set())
    foreign = [n for n in names if n not in ours and not _is_temp_of_ours(n)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunDirError(
            f"--output {run_dir} is not empty and is not a lightnets run (it holds {shown}): "
            "choose a new or empty directory"
        )


def cannot_resume(run_dir: Path) -> str:
    """Why ``run_dir``, which holds no ``last.pt``, cannot be resumed, and what to do instead."""
    if (run_dir / BEST_CHECKPOINT).exists():
        return (
            f"cannot resume: {run_dir} holds {BEST_CHECKPOINT} but no {LAST_CHECKPOINT}, and a "
            f"run continues only from {LAST_CHECKPOINT}; its best weights stay usable "
            f"(lightnets eval --checkpoint {run_dir / BEST_CHECKPOINT}): train anew with "
            "another --output"
        )
    return (
        f"cannot resume: {run_dir} holds no {LAST_CHECKPOINT} (the run saved no checkpoint): "
        "start a new run with --output"
    )


def remove_stray_temps(run_dir: Path) -> list[str]:
    """Delete the temporary files our killed atomic writes left in ``run_dir``; their names."""
    removed = []
    for path in run_dir.iterdir():
        if path.is_file() and _is_temp_of_ours(path.name):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return sorted(removed)


def repair_best(
    run_dir: Path, last_state: dict[str, Any], *, write: bool
) -> tuple[str | None, bool]:
    """Make ``best.pt`` the checkpoint ``last.pt`` names as best: (a note or None, lost).

    When the best epoch is the last one, ``last.pt`` is that checkpoint: a missing or older
    ``best.pt`` is replaced by a copy of it (when ``write``; other ranks only read). Otherwise
    a missing or mismatched ``best.pt`` cannot be rebuilt: ``lost`` is True and the caller
    forgets the best epoch. Every rank reaches the same answer from the same files.
    """
    from lightnets.train.checkpoint import load_checkpoint

    best_epoch = last_state.get("best_epoch")
    best = run_dir / BEST_CHECKPOINT
    if best_epoch is None:
        return None, False
    found = None
    if best.exists():
        try:
            found = load_checkpoint(best).get("epoch")
        except LightnetsError:
            found = None
    if found == best_epoch:
        return None, False
    if best_epoch == last_state.get("epoch") and not last_state.get("step"):
        if write:
            with atomic_path(best) as temp:
                shutil.copyfile(run_dir / LAST_CHECKPOINT, temp)
        return f"repaired {best}: it holds epoch {best_epoch}, the best, again", False
    note = (
        f"{best} of epoch {best_epoch} is missing or damaged and cannot be rebuilt; "
        "the best epoch is chosen anew from here on"
    )
    return note, True


class RunLock:
    """An exclusive lock on a run directory for this process (see the module docstring).

    The lock file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``: lightnets writes only a
    file it has just created, never through a symbolic link planted in its place. An existing
    lock file is taken over (a stale lock of a process that ended) only when it is what we
    leave behind: a regular file with one link, holding nothing but a PID; anything else there
    (a symlink, a hard link to another file, a FIFO, someone's notes) is refused, untouched.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.fd: int | None = None
        #: PID recorded in a stale lock file this process took over (None: there was none).
        self.stale_pid: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        while True:
            fd = self._open()
            if fd is None:  # the file vanished between two calls (its holder released it)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise RunDirError(
                    f"{self.path.parent} is in use by another lightnets process (PID {holder}): "
                    "wait for it to end, or choose another --output"
                ) from None
            # A holder releasing the lock unlinks the file: ours must still be the one there.
            if self._is_ours(fd):
                break
            os.close(fd)
        previous = _read_pid(fd)
        self.stale_pid = previous if previous not in (None, os.getpid()) else None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def _open(self) -> int | None:
        """A descriptor of the lock file: a new one we created, or an existing lock file
        checked to be one (class docstring); None when it vanished meanwhile."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                raise RunDirError(_not_a_lock(self.path, "a symbolic link")) from None
            raise
        info = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "not a regular file"
        elif info.st_nlink != 1:
            problem = f"a file with {info.st_nlink} hard links"
        elif not _holds_only_a_pid(fd):
            problem = "a file that holds something other than a process ID"
        if problem is not None:
            os.close(fd)
            raise RunDirError(_not_a_lock(self.path, problem))
        return fd

    def _is_ours(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.lstat(self.path))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is None:
            return
        if self._is_ours(self.fd):
            self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing drops the flock
        self.fd = None


def _not_a_lock(path: Path, what: str) -> str:
    return (
        f"{path} is {what}, not a lightnets lock file: lightnets will not write it; remove it "
        "if it is not yours to keep, or choose another --output"
    )


def _holds_only_a_pid(fd: int) -> bool:
    """Whether the file holds what a lock file holds: nothing, or a PID and a newline."""
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 33)
    return (len(data) <= 32 and data.rstrip(b"\n").isdigit()) or data in (b"", b"\n")


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
