"""The run directory: who may write it, and keeping its files consistent after a crash.

- Ownership (:func:`check_new_run_dir`): a new run goes into a missing or empty directory, or
  one holding only lightnets' own leftovers (a stale lock, temporary files, a run that stopped
  before its first checkpoint). A directory holding a run's checkpoints is refused (continue it
  with ``--resume``), and so is one holding anything else.
- Exclusion (:class:`RunLock`): one process at a time trains in a run directory. It holds an
  exclusive ``flock`` on ``RUN_DIR/.lightnets.lock``, which records its PID. The kernel drops the
  lock when the process ends however it ends (even ``kill -9``), so a lock file left behind is
  stale: the next run takes it over and says whose it was.
- Consistency (:func:`repair_best`): at an epoch's end the trainer writes ``last.pt`` first, then
  ``best.pt`` when the epoch improved. ``last.pt`` records the best epoch, so a crash between the
  two writes leaves a ``best.pt`` older than ``last.pt`` says; the best epoch is then the last
  one, and resuming copies ``last.pt`` to ``best.pt``.
- Leftovers (:func:`remove_stray_temps`): an atomic write killed half-way leaves its temporary
  file (``.last.pt.<random>.tmp``); a run removes those of its own files when it starts.
- Fault injection for tests (:func:`fault_point`): ``LIGHTNETS_FAULT_AT=POINT[@EPOCH]`` kills the
  process (``os._exit(137)``, as ``kill -9`` would) when it reaches that point.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from lightnets.errors import LightnetsError
from lightnets.fileio import atomic_path
from lightnets.train.config import BEST_CHECKPOINT, LAST_CHECKPOINT

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"
LOCK = ".lightnets.lock"
#: Every name a run writes in its directory.
RUN_FILES = (CONFIG, METRICS, LAST_CHECKPOINT, BEST_CHECKPOINT, SUMMARY, CURVES, TENSORBOARD, LOCK)
FAULT_ENV = "LIGHTNETS_FAULT_AT"


class RunDirError(LightnetsError):
    """The run directory is in use, foreign, or already holds a run."""


def fault_point(name: str, epoch: int | None = None) -> None:
    """Die here, as ``kill -9`` would, if ``$LIGHTNETS_FAULT_AT`` is ``name`` or ``name@epoch``."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, at = spec.partition("@")
    if point == name and (not at or (epoch is not None and at == str(epoch))):
        os._exit(137)


def _is_temp_of_ours(name: str) -> bool:
    return name.endswith(".tmp") and any(name.startswith(f".{own}.") for own in RUN_FILES)


def _holds_run_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"model", "recipe", "output"} <= set(data)


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse an ``--output`` that is a file, holds a run, or holds anything not lightnets'.

    A run that saved no checkpoint (it stopped in its first epoch) holds nothing worth
    keeping: a new run may start over in its directory.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--output {run_dir} exists and is not a directory")
    if not run_dir.exists():
        return
    names = sorted(p.name for p in run_dir.iterdir())
    checkpoints = [n for n in (LAST_CHECKPOINT, BEST_CHECKPOINT) if n in names]
    if checkpoints:
        raise RunDirError(
            f"{run_dir} already holds a lightnets run ({', '.join(checkpoints)}): continue it "
            f"with --resume {run_dir}, or choose another --output"
        )
    ours = {LOCK}
    if CONFIG in names and _holds_run_config(run_dir / CONFIG):
        ours |= {CONFIG, METRICS, TENSORBOARD}
    foreign = [n for n in names if n not in ours and not _is_temp_of_ours(n)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunDirError(
            f"--output {run_dir} is not empty and is not a lightnets run (it holds {shown}): "
            "choose a new or empty directory"
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
    """An exclusive lock on a run directory for this process (see the module docstring)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.fd: int | None = None
        #: PID recorded in a stale lock file this process took over (None: there was none).
        self.stale_pid: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
            try:
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        previous = _read_pid(fd)
        self.stale_pid = previous if previous not in (None, os.getpid()) else None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing drops the flock
        self.fd = None


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
