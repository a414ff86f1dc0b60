"""Where ``bench`` runs: one row per device, each the parts the benchmark routine needs.

:func:`lightnets.deploy.bench.benchmark` runs one race on every device (check every backend's
output, time the ones that pass briefly, choose, time the choice fully); what differs between a
CPU and a GPU is only what this table holds:

- ``backends``: the device's backend table (name -> :class:`~lightnets.deploy.backends.Backend`
  class). The CPU's is :data:`~lightnets.deploy.backends.BACKENDS`, the device runtimes
  (ExecuTorch, LiteRT) included: they run here, on this CPU, as a phone would run them.
- ``check``: (max |diff|, tolerance) of a backend's output against the reference, by precision.
- ``timer``: per-call latency of ``fn()`` over at least ``seconds``: on the CPU
  :func:`~lightnets.analysis.timing.measure_latency` (rounds, the machine watched, a verdict on
  stability), on CUDA :func:`~lightnets.deploy.cuda.cuda_latency` (CUDA events).
- ``context``: what holds while the device is measured, given the requested thread count, and
  yielding the count in effect (the records' ``threads``): the CPU sets PyTorch's threads, CUDA
  switches TF32 off (``fp32`` means fp32 there) and yields ``None``.
- ``reference``: where eager fp32 computes the outputs every backend is checked against. Always
  the CPU: PyTorch's CPU kernels are the oracle, independent of the GPU's kernel choice.
- ``place``: the torch device inputs go to, or a one-line error saying what is missing.

A new runtime on an existing device is one row of that device's backend table
(:func:`~lightnets.deploy.backends.register_backend`); a new device is one row of
:data:`DEVICES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lightnets.analysis.timing import LatencyStats, measure_latency, torch_threads
from lightnets.deploy import cuda
from lightnets.deploy.accuracy import check_outputs
from lightnets.deploy.backends import BACKENDS, Backend, backend_names
from lightnets.errors import InvalidArgumentError

__all__ = ["DEVICES", "BenchDevice", "get_device"]

Timer = Callable[[Callable[[], Any], float], LatencyStats]


@dataclass
class BenchDevice:
    """The parts of one device the benchmark routine needs (see the module's docstring)."""

    name: str
    backends: Mapping[str, type[Backend]]
    check: Callable[[torch.Tensor, torch.Tensor, str], tuple[float, float]]
    timer: Timer
    context: Callable[[int | None], contextlib.AbstractContextManager[int | None]]
    place: Callable[[], torch.device]
    default_batch_sizes: tuple[int, ...] = (1,)
    #: Whether "of peak" is measured: the CPU's float32 peak (``lightnets roofline``).
    measures_peak: bool = False
    #: Whether the CPU's threads do the work, their count chosen by the thread policy
    #: (:func:`lightnets.analysis.threads.apply_thread_policy`) unless ``--threads`` is given.
    follows_thread_policy: bool = False
    #: Whether the timer gives p10 and a verdict on stability (the CPU's rounds do; CUDA events
    #: give the median and p90 alone).
    timer_assesses: bool = False
    #: The note of a backend that cannot run and has no pip extra to name.
    missing: str = ""
    reference: str = "cpu"
    #: Facts about the device added to every record (its model name on CUDA).
    describe: Callable[[torch.device], dict[str, Any]] = field(default=lambda place: {})

    def resolve(self, spec: str | Sequence[str]) -> list[str]:
        """``--backend`` checked against this device's table (names, ``all`` or ``best``); the
        errors of a device other than the default one name its ``--device``."""
        where = "" if self.name == "cpu" else f"--device {self.name}"
        return backend_names(spec, self.backends, where)

    @property
    def label(self) -> str:
        """How errors name this device's backends: "backend", "CUDA backend"."""
        return "backend" if self.name == "cpu" else f"{self.name.upper()} backend"


def _cpu_timer(fn: Callable[[], Any], seconds: float) -> LatencyStats:
    return measure_latency(fn, warmup=5, min_iters=10, min_seconds=seconds)


def _cuda_timer(fn: Callable[[], Any], seconds: float) -> LatencyStats:
    return cuda.cuda_latency(fn, min_seconds=seconds)


@contextlib.contextmanager
def _cuda_context(threads: int | None) -> Iterator[None]:
    # The GPU runs the work; PyTorch's CPU threads only launch it, so they are left alone.
    with cuda.strict_fp32():
        yield None


def _cuda_description(place: torch.device) -> dict[str, Any]:
    return {"device": torch.cuda.get_device_name(place)}


#: The devices ``bench`` runs on: ``--device NAME``.
DEVICES: dict[str, BenchDevice] = {
    "cpu": BenchDevice(
        name="cpu",
        backends=BACKENDS,
        check=check_outputs,
        timer=_cpu_timer,
        context=torch_threads,
        place=lambda: torch.device("cpu"),
        measures_peak=True,
        timer_assesses=True,
        follows_thread_policy=True,
    ),
    "cuda": BenchDevice(
        name="cuda",
        backends=cuda.CUDA_BACKENDS,
        check=cuda.check_cuda_output,
        timer=_cuda_timer,
        context=_cuda_context,
        place=cuda.require_cuda,
        default_batch_sizes=cuda.DEFAULT_BATCH_SIZES,
        missing="no CUDA",
        describe=_cuda_description,
    ),
}


def get_device(device: str | BenchDevice) -> BenchDevice:
    """The device called ``device`` (a :class:`BenchDevice` is returned as it is)."""
    if isinstance(device, BenchDevice):
        return device
    if device not in DEVICES:
        raise InvalidArgumentError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    return DEVICES[device]
