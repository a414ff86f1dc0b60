"""Shared test helpers: parameter and MAC counting, the Fashion-MNIST files, running the CLI.

Plain functions (import them: ``from conftest import n_params``) and fixtures wrapping them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import lightnets

#: Debian's dataset-fashion-mnist installs the four IDX files here (CI installs it).
FASHION = Path("/usr/share/datasets/fashion-mnist")
#: Skip marker for tests that need the real Fashion-MNIST files.
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed in /usr/share/datasets/fashion-mnist "
    "(apt-get install dataset-fashion-mnist; CI installs it)",
)


def train_briefly(model: nn.Module, loader, lr: float = 3e-3) -> nn.Module:
    """One Adam pass over ``loader`` on one thread (small batches: faster on a shared 2-core
    box), returned in eval mode: a checkpoint with real accuracy for the deploy tests."""
    optimizer = torch.optim.Adam(model.parameters(), lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def one_line(capsys, code: int, *needles: str, silent: bool = False) -> str:
    """The captured command failed as a user error should: exit status 2, exactly one line on
    stderr holding every needle (``silent``: and nothing on stdout). Returns that line."""
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, out, err)
    assert not silent or out == "", (code, out, err)
    for needle in needles:
        assert needle in err, err
    return err


def silent_one_line(capsys, code: int, *needles: str) -> str:
    """:func:`one_line` with nothing printed on stdout (no partial answer)."""
    return one_line(capsys, code, *needles, silent=True)


def odd_size_images(folder: Path) -> list[Path]:
    """Three random grayscale PNGs of odd sizes (28x28, 40x31, 64x90) in ``folder``: inputs that
    exercise resizing and padding the way a user's photos do."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for i, size in enumerate([(28, 28), (40, 31), (64, 90)]):
        image = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8)).save(image)
        images.append(image)
    return images


def n_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (each counted once)."""
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **kwargs) -> nn.Module:
    """``create_model(name, **kwargs)`` on the meta device: shapes only, no weights drawn."""
    with torch.device("meta"):
        return lightnets.create_model(name, **kwargs)


def _count_macs(name: str, size: int = 224, **kwargs) -> float:
    """Multiply-accumulates of one image (FlopCounterMode's FLOPs / 2), on the meta device."""
    with torch.device("meta"):
        model = lightnets.create_model(name, **kwargs).eval()
        x = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


def run_cli(
    args: Sequence[str | bytes],
    *,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``python -m lightnets ARGS`` in a new process (PYTHONPATH inherited); text output."""
    return subprocess.run(
        [sys.executable, "-m", "lightnets", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


@dataclass(frozen=True)
class MeasuredRun:
    """A finished process: exit status, output, and its own peak resident memory."""

    returncode: int
    stdout: str
    stderr: str
    peak_bytes: int


def run_cli_measured(args: Sequence[str | os.PathLike[str]], **kwargs) -> MeasuredRun:
    """``python -m lightnets ARGS`` with its own peak memory measured (:func:`run_measured`)."""
    return run_measured(["-m", "lightnets", *args], **kwargs)


def run_measured(
    args: Sequence[str | os.PathLike[str]],
    *,
    address_limit: int = 4 << 30,
    timeout: float = 120,
    cwd: str | Path | None = None,
) -> MeasuredRun:
    """``python ARGS`` in a new process, its own peak resident memory measured
    (``tests/measured_run.py``: VmHWM, since ru_maxrss would include this test process's).

    ``address_limit`` caps its address space (``ulimit -v``), so a regression fails as an error
    instead of exhausting a shared machine; lightnets' memory check sees that limit too. A
    process still running after ``timeout`` seconds is killed and fails the test (a hang)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak"
        launcher = Path(__file__).with_name("measured_run.py")
        command = [sys.executable, launcher, peak_file, str(address_limit), *args]
        try:
            done = subprocess.run(
                [str(part) for part in command],
                capture_output=True,
                timeout=timeout,
                cwd=cwd,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        except subprocess.TimeoutExpired as exc:
            tail = (exc.stdout or b"")[-2000:].decode(errors="replace")
            command_line = " ".join(map(str, args))
            pytest.fail(f"python {command_line} still ran after {timeout} s; its output: {tail}")
        peak = int(peak_file.read_text()) if peak_file.exists() else 0
        return MeasuredRun(
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
            peak,
        )


@pytest.fixture
def count_macs() -> Callable[..., float]:
    """``count_macs(name, size=224, **create_model_kwargs)`` -> MACs of one image."""
    return _count_macs


@pytest.fixture
def ctrl_c():
    """Ctrl-C reaches this process as it does in a terminal (Python's default handler), even
    when the test run itself was started with SIGINT ignored: a background job of a shell
    without job control (``pytest &``) inherits SIG_IGN, and lightnets rightly leaves an
    ignored Ctrl-C ignored. The handler is given back afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def default_ctrl_c() -> None:
    """``preexec_fn`` for a child that must receive Ctrl-C whatever this process ignores."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
