"""Check, then time, inference backends side by side: one race for every device.

:func:`benchmark` runs the same four steps on the CPU, on CUDA and on the device runtimes
(ExecuTorch, LiteRT, which run on this CPU and are rows of its table); a device is a row of
:data:`lightnets.deploy.devices.DEVICES` (its backend table, check, timer and context):

1. **Check** every backend's output before it is timed (:mod:`lightnets.deploy.accuracy`): fp32,
   bf16 and fp16 backends by their largest logit difference to eager fp32 (computed on the
   device's reference, the CPU) on a fixed random batch, int8 by its top-1 change on held-out
   images against the ``max_drop`` budget, the rule ``lightnets quantize`` applies. A backend
   that fails its check is reported as ``wrong`` and gets no speed.
2. **Time briefly** (``best`` only): every backend that passed, in :data:`QUICK_ROUNDS`
   interleaved rounds (each round times every candidate once, in turn, so that load from other
   processes falls on all of them alike), at most half a second per candidate in all; its
   quick timing is the median of its rounds' medians.
3. **Choose** (``best`` only): the fastest of them (:func:`choose_best`). The candidates are the
   runtimes' plain defaults (``eager``, ``onnxruntime``, ``openvino``) beside lightnets' tuned
   settings of them, so the options kept are those measured fastest on this CPU, and ``best``
   cannot lose to a runtime it contains at that runtime's defaults but by the timing noise.
   int8 is chosen only when it measured faster here; when it did not, the best record says
   why (``extra["int8_note"]``: how much slower, and whether the CPU has VNNI / AMX int8
   instructions).
4. **Time fully** with the device's timer: on the CPU
   :func:`lightnets.analysis.timing.measure_latency` (warm-up, rounds until the median is
   known, busy rounds re-measured; the median, p10 and p90, and ``stable`` with a one-line
   note), on CUDA CUDA events. Achieved GFLOP/s is the model's FLOPs (2 x MACs, from
   :func:`lightnets.profile`) per second, on the CPU also given for float32 rows as a fraction
   of the machine's measured float32 peak (:func:`lightnets.analysis.roofline.
   measure_machine_peak`, measured with the same threads), capped at 100% and flagged as a
   measurement error above it.

Threads on the CPU follow :func:`lightnets.analysis.threads.apply_thread_policy` (the cores
free at start, at most the physical ones; ``threads=`` overrides), said once and recorded in
every record (``extra["thread_policy"]``). No runtime's thread pool spins between calls (see
:class:`lightnets.deploy.backends.OnnxRuntimeBackend`): a runtime that is not being timed holds
no core the timed one needs.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, TypeVar

import torch
from torch import nn

from lightnets.analysis.timing import LatencyStats
from lightnets.deploy.accuracy import DEFAULT_MAX_DROP, TOLERANCE, check_outputs
from lightnets.deploy.backends import Backend
from lightnets.deploy.devices import BenchDevice, get_device
from lightnets.errors import InvalidArgumentError, LightnetsError, first_line

__all__ = [
    "QUICK_ROUNDS",
    "TOLERANCE",
    "BenchRecord",
    "Int8Data",
    "benchmark",
    "benchmark_exported",
    "best_candidates",
    "build_backend",
    "calibrate_batchnorm",
    "check_outputs",
    "choose_best",
    "parse_batch_sizes",
]

#: Any module type: calibrate_batchnorm returns a copy of the type it was given.
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def calibrate_batchnorm(
    model: ModuleT,
    input_size: tuple[int, int, int],
    *,
    batches: int = 4,
    batch_size: int = 8,
    seed: int = 0,
) -> ModuleT:
    """An eval-mode copy whose BatchNorm running statistics are estimated on random inputs.

    A freshly initialised network has running mean 0 and variance 1 everywhere; with the
    reference initialisations its activations then shrink layer after layer (MobileNet V2's
    logits are about 1e-11), so comparing a backend's outputs with eager fp32 would prove
    nothing. Re-estimating the statistics (cumulative average over ``batches`` random batches)
    gives every layer unit-scale activations, as a trained network has. The original model is
    left untouched; a model without BatchNorm is returned as an eval-mode copy.
    """
    model = copy.deepcopy(model)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average over the calibration batches
    if norms:
        generator = torch.Generator().manual_seed(seed)
        model.train()
        with torch.no_grad():
            for _ in range(batches):
                model(torch.randn(batch_size, *input_size, generator=generator))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return model.eval()


@dataclass
class BenchRecord:
    """One backend at one batch size. ``status`` is ok, wrong, unavailable or failed."""

    model: str
    backend: str
    batch_size: int
    precision: str
    status: str
    latency_ms_median: float | None = None
    latency_ms_p90: float | None = None
    images_per_sec: float | None = None
    max_abs_diff: float | None = None
    tolerance: float | None = None
    top1_change: float | None = None  # int8: points of top-1 on held-out images
    max_drop: float | None = None  # int8: the budget top1_change is held to
    gflops_per_sec: float | None = None
    peak_fraction: float | None = None
    iters: int | None = None
    threads: int | None = None
    best: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        extra = record.pop("extra")
        return {**record, **extra}


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,32"`` -> ``[1, 32]``; every size must be a positive integer."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(size < 1 for size in sizes):
        raise InvalidArgumentError(
            f"--batch-size must be positive integers separated by commas, got {text!r}"
        )
    return list(dict.fromkeys(sizes))


def best_candidates(
    *,
    device: str | BenchDevice = "cpu",
    allow_int8: bool = False,
    allow_bf16: bool = False,
    allow_fp16: bool = False,
) -> list[str]:
    """Backends ``--backend best`` chooses among on ``device``: available, quick to prepare,
    of fp32 or an allowed precision."""
    allowed = precisions(int8=allow_int8, bf16=allow_bf16, fp16=allow_fp16)
    return quick_candidates(get_device(device).backends, allowed)


def precisions(**allowed: bool) -> set[str]:
    """fp32 and every precision flagged True (``int8=``, ``bf16=``, ``fp16=``)."""
    return {"fp32"} | {name for name, allow in allowed.items() if allow}


def quick_candidates(registry: Mapping[str, type[Backend]], allowed: set[str]) -> list[str]:
    """Backends of ``registry`` that are available, quick to prepare and of an allowed precision."""
    return [
        name
        for name, cls in registry.items()
        if cls.precision in allowed and not cls.slow_to_prepare and cls().available()
    ]


@dataclass
class Int8Data:
    """Where int8 backends get their calibration images and held-out batches.

    ``source`` names a data set (:data:`lightnets.deploy.quantization.CALIBRATION_SOURCES`);
    ``None`` takes the one recorded in ``checkpoint`` (the state a model was loaded from, with
    its run's folder, split and seed), else synthetic images, whose check is top-1 agreement with
    fp32. Nothing is read until an int8 backend is about to run (:meth:`load`): the same choice
    ``lightnets quantize`` makes, 300 training images to calibrate, 1,000 held-out ones to judge.
    ``calibration`` / ``evaluation`` may also be given as batches, then used as they are.
    """

    source: str | None = None
    data_dir: str | None = None
    checkpoint: Mapping[str, Any] | None = None
    calibration_images: int = 300
    eval_images: int = 1000
    calibration: Sequence[torch.Tensor] | None = None
    evaluation: Sequence[tuple[torch.Tensor, torch.Tensor | None]] | None = None
    #: The data set the batches came from, once :meth:`load` has run ("" before).
    loaded_from: str = ""

    def load(self, input_size: tuple[int, int, int]) -> None:
        """Choose the data set and read its batches (once); synthetic leaves them ``None``, for
        each int8 backend to draw its own random images."""
        if self.loaded_from:
            return
        if self.calibration is not None or self.evaluation is not None:
            self.loaded_from = self.source or "given"
            return
        from lightnets.deploy.quantization import calibration_data, calibration_source

        name, options = calibration_source(
            dict(self.checkpoint) if self.checkpoint else None, self.source, self.data_dir
        )
        if name != "synthetic":
            self.calibration, self.evaluation, _ = calibration_data(
                name,
                input_size=input_size,
                calibration_images=self.calibration_images,
                eval_images=self.eval_images,
                **options,
            )
        self.loaded_from = name


def _flops_per_image(model: nn.Module, input_size: tuple[int, int, int]) -> float | None:
    try:
        from lightnets.analysis import profile

        return float(profile(model, input_size).flops)
    except (ImportError, AttributeError, LightnetsError):
        return None


def _peak_gflops() -> float | None:
    try:
        from lightnets.analysis.roofline import measure_machine_peak

        return float(measure_machine_peak(device="cpu").gflops)
    except (ImportError, AttributeError):
        return None


def prepare_once(
    backend: Backend, model: nn.Module, x: torch.Tensor, record: BenchRecord, missing: str = ""
) -> tuple[Callable, torch.Tensor] | None:
    """(runner, its output on ``x``), or None with ``record`` marked unavailable or failed.

    ``missing`` is the note's reason when the backend has no extra to install.
    """
    if not backend.available():
        extra = f"pip install 'lightnets[{backend.extra}]'" if backend.extra else missing
        record.status, record.note = "unavailable", f"not installed: {extra}".strip()
        return None
    try:
        run = backend.prepare(model, x)
        return run, run(x)
    except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError) as exc:
        record.status = "failed"
        record.note = first_line(exc)
        return None


def keep_unrun(
    record: BenchRecord,
    select_best: bool,
    on_skip: Callable[[str], None] | None,
    records: list[BenchRecord],
) -> None:
    """A backend that did not pass: noted through ``on_skip`` when not installed, and listed
    unless ``best`` is choosing and it is merely unavailable."""
    if record.status == "unavailable" and on_skip is not None:
        on_skip(f"{record.backend}: {record.note}")
    if not select_best or record.status in ("wrong", "failed"):
        records.append(record)


#: Interleaved rounds of ``best``'s brief timing: three, so that one round slowed by another
#: process cannot decide the choice (the median of three discards it).
QUICK_ROUNDS = 3


def choose_best(passed: list, label: str = "backend") -> tuple[BenchRecord, Callable]:
    """The ``best`` policy: of the (record, runner) pairs that passed their check, the one with
    the fastest quick timing; an error when none passed."""
    if not passed:
        raise InvalidArgumentError(f"no {label} passed the accuracy check")
    return min(passed, key=lambda item: item[0].extra["quick"])


def mark_best(record: BenchRecord, passed: list, held_back: Sequence = ()) -> BenchRecord:
    """Flag ``record`` as the best, its quick timing replaced by every candidate's, with the
    reason int8 was not chosen when an int8 candidate passed its check (:func:`int8_note`), and
    the faster paths held back because their precision was not allowed (:func:`precision_note`).
    """
    record.best = True
    note = int8_note(record, [r for r, _ in passed])
    held = precision_note(record, [r for r, _ in held_back])
    record.extra = {
        **{k: v for k, v in record.extra.items() if k != "quick"},
        "candidates": {r.backend: round(r.extra["quick"], 4) for r, _ in passed},
    }
    if held_back:
        record.extra["held_back"] = {
            r.backend: {"precision": r.precision, "quick": round(r.extra["quick"], 4)}
            for r, _ in held_back
        }
    if note:
        record.extra["int8_note"] = note
    if held:
        record.extra["precision_note"] = held
    return record


def precision_note(chosen: BenchRecord, held_back: Sequence[BenchRecord]) -> str:
    """The fastest path held back from ``best`` because its precision was not allowed, when it
    ran faster than the chosen one ("" else).

    A runtime's own default may compute in reduced precision: OpenVINO's CPU plugin runs bf16
    by default on CPUs with bf16 instructions. ``best`` compares like with like (fp32 unless
    ``--allow-bf16`` and friends), so such a default can be faster than the path chosen; the
    report says by how much and which flag races it.
    """
    faster = [r for r in held_back if r.extra["quick"] < chosen.extra["quick"]]
    if not faster:
        return ""
    fastest = min(faster, key=lambda r: r.extra["quick"])
    return (
        f"{fastest.backend} ran {chosen.extra['quick'] / fastest.extra['quick']:.2f}x faster "
        f"than {chosen.backend} ({fastest.extra['quick']:.3f} against "
        f"{chosen.extra['quick']:.3f} ms) but computes in {fastest.precision} here (its "
        f"runtime's default on this CPU), which best does not take without "
        f"--allow-{fastest.precision}"
    )


def int8_note(chosen: BenchRecord, candidates: Sequence[BenchRecord]) -> str:
    """Why no int8 candidate was chosen, when one passed its check but timed slower ("" else).

    The decision is the measurement's; the CPU's flags only explain it: int8 kernels gain over
    float32 through dot-product instructions (VNNI, AMX), and without them often lose.
    """
    if chosen.precision == "int8":
        return ""
    int8 = [r for r in candidates if r.precision == "int8"]
    fp32 = [r for r in candidates if r.precision == "fp32"]
    if not int8 or not fp32:
        return ""
    fastest_int8 = min(int8, key=lambda r: r.extra["quick"])
    fastest_fp32 = min(fp32, key=lambda r: r.extra["quick"])
    ratio = fastest_int8.extra["quick"] / fastest_fp32.extra["quick"]
    if ratio < 1.0:  # faster than fp32, yet another precision (bf16) won
        return ""
    from lightnets.analysis.machine import has_int8_dot_product

    why = {True: "", False: " (no VNNI/AMX int8 instructions)", None: ""}[has_int8_dot_product()]
    return (
        f"int8 not chosen: {fastest_int8.backend} runs {ratio:.2f}x slower than fp32 "
        f"({fastest_fp32.backend}) on this CPU{why}"
    )


def _check_top1(backend: Backend, model: nn.Module, record: BenchRecord) -> None:
    """The int8 rule: top-1 change on held-out images within the budget."""
    change = backend.top1_change(model)
    record.top1_change, record.max_drop = change.change, change.max_drop
    record.max_abs_diff = change.max_abs_diff
    record.extra["top1"] = change.as_dict()
    if not change.within_budget:
        record.status = "wrong"
        record.note = f"{change.describe()}: beyond the budget"
    elif change.metric == "agreement":
        record.note = f"top-1 agreement {change.int8_top1:.1f}% on synthetic images"


def _fill_timing(
    record: BenchRecord,
    stats: LatencyStats,
    flops: float | None,
    peak: float | None,
    assessed: bool = True,
) -> None:
    """Latency, throughput and GFLOP/s into ``record``; with an ``assessed`` timer's stats (the
    CPU's), also p10 and its verdict on stability."""
    from lightnets.analysis.roofline import of_peak

    record.latency_ms_median = stats.median_ms
    record.latency_ms_p90 = stats.p90_ms
    record.iters = stats.iters
    record.images_per_sec = record.batch_size * 1e3 / stats.median_ms
    if assessed:
        record.extra.update(
            latency_ms_p10=stats.p10_ms, stable=stats.stable, timing_note=stats.note
        )
    notes = [record.note] if record.note else []
    if not stats.stable:
        notes.append(f"NOT STABLE: {stats.note}")
    if flops is not None:
        record.gflops_per_sec = flops * record.images_per_sec / 1e9
        # The peak is float32's: a bf16 or int8 row's share of it would mean nothing.
        fp32_peak = peak if record.precision == "fp32" else None
        record.peak_fraction, flag = of_peak(record.gflops_per_sec, fp32_peak)
        notes += [flag] if flag else []
    record.note = "; ".join(notes)


def benchmark(
    model: nn.Module,
    backends: str | Sequence[str] = "best",
    *,
    device: str | BenchDevice = "cpu",
    model_name: str | None = None,
    batch_sizes: Sequence[int] | None = None,
    input_size: tuple[int, int, int] = (3, 224, 224),
    threads: int | None = None,
    allow_int8: bool = False,
    allow_bf16: bool = False,
    allow_fp16: bool = False,
    int8_data: Int8Data | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    min_seconds: float = 2.0,
    on_skip: Callable[[str], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> list[BenchRecord]:
    """Check and time ``backends`` of ``device`` on ``model``: one record per backend and batch.

    ``backends`` is names (a list, or ``"a,b"``), ``"all"`` or ``"best"``. ``best`` checks
    every candidate (:func:`best_candidates`: fp32, and int8 / bf16 / fp16 when allowed), times
    each briefly, then times the fastest one that passed in full and returns its record
    (``best=True``, the others' quick timings in ``extra["candidates"]``; a path whose runtime
    chose a precision not allowed, such as OpenVINO's bf16 default, is timed alongside but held
    back: ``extra["held_back"]``, and ``extra["precision_note"]`` when it was faster). ``all``
    runs every backend of the device, noting through ``on_skip`` those that cannot run here. int8
    backends are calibrated and judged on ``int8_data`` (synthetic images when ``None``: top-1
    agreement with fp32): their top-1 change must stay within ``max_drop`` points, else they
    are ``wrong`` and ``best`` never picks them. ``batch_sizes`` default to the device's (1 on
    the CPU; 1 and 256 on CUDA); ``threads`` to the thread policy's choice
    (:func:`lightnets.analysis.threads.apply_thread_policy`, the CPU's threads only: its line
    goes to ``announce``, default stderr).
    """
    target = get_device(device)
    place = target.place()  # a device that is missing says so first
    allowed = precisions(int8=allow_int8, bf16=allow_bf16, fp16=allow_fp16)
    names, select_best = _selected(target, backends, allowed)
    int8_data = int8_data or Int8Data()
    if any(target.backends[name].precision == "int8" for name in names):
        int8_data.load(input_size)
    model = model.eval()
    torch_count = torch.get_num_threads()  # the policy sets it; given back at the end
    threads, policy = _thread_policy(target, threads, announce)
    race = _Race(
        device=target,
        model_name=model_name or str(getattr(model, "hparams", {}).get("name", "model")),
        names=names,
        select_best=select_best,
        allowed=allowed,
        threads=threads,
        int8={
            "calibration": int8_data.calibration,
            "evaluation": int8_data.evaluation,
            "max_drop": max_drop,
            "calibration_name": int8_data.loaded_from or "synthetic",
        },
        min_seconds=min_seconds,
        flops=_flops_per_image(model, input_size),
        on_skip=on_skip,
        policy=policy,
    )
    try:
        return race.run(model, place, batch_sizes or target.default_batch_sizes, input_size)
    finally:
        torch.set_num_threads(torch_count)


def _thread_policy(
    device: BenchDevice, threads: int | None, announce: Callable[[str], None] | None
) -> tuple[int | None, dict[str, Any]]:
    """(threads to run with, what records keep of the choice): the thread policy on a device
    that measures the CPU's threads; on CUDA the threads asked for, unrecorded."""
    if not device.follows_thread_policy:  # the GPU runs the work; CPU threads only launch it
        return threads, {}
    from lightnets.analysis.threads import apply_thread_policy, thread_record

    choice = apply_thread_policy(threads, announce=announce)
    return choice.threads, {"thread_policy": thread_record(choice)}


def _selected(
    device: BenchDevice, backends: str | Sequence[str], allowed: set[str]
) -> tuple[list[str], bool]:
    """(names to run, whether choosing the best): ``best`` -> :func:`best_candidates`, ``all``
    -> the device's whole table, else the names given, each required to be installed."""
    names = device.resolve(backends)
    if names == ["best"]:
        flags = {f"allow_{precision}": True for precision in allowed - {"fp32"}}
        return best_candidates(device=device, **flags), True
    if names == ["all"]:
        return list(device.backends), False
    for name in names:
        device.backends[name]().require()  # a one-line error naming what to install
    return names, False


def build_backend(
    device: BenchDevice, name: str, threads: int | None, int8: Mapping[str, Any]
) -> Backend:
    """Backend ``name`` of ``device``, built with its options: the one place they are chosen.

    Today every backend gets the threads asked for (``None``: its runtime's default), and an
    int8 backend its calibration and held-out data and budget (``int8``: ``calibration``,
    ``evaluation``, ``max_drop``). ONNX Runtime's sessions are built with their thread pools'
    spinning off (the class default): in a race, a pool spinning after its call takes the
    cores of the runtime timed next.
    """
    cls = device.backends[name]
    if cls.precision == "int8":
        return cls(threads, **int8)
    return cls(threads)


@dataclass
class _Race:
    """One :func:`benchmark` run: the backends of a device, how to build and time them."""

    device: BenchDevice
    model_name: str
    names: list[str]
    select_best: bool
    allowed: set[str]
    threads: int | None
    int8: dict[str, Any]
    min_seconds: float
    flops: float | None
    on_skip: Callable[[str], None] | None
    policy: dict[str, Any] = field(default_factory=dict)
    peak: float | None = None
    used_threads: int | None = None

    def run(
        self,
        model: nn.Module,
        place: torch.device,
        batch_sizes: Sequence[int],
        input_size: tuple[int, int, int],
    ) -> list[BenchRecord]:
        records: list[BenchRecord] = []
        generator = torch.Generator().manual_seed(0)
        with self.device.context(self.threads) as used:
            self.used_threads = used  # the records' threads: None where they are not set
            if self.flops is not None and self.device.measures_peak:
                self.peak = _peak_gflops()  # with the threads timed below
            for batch_size in batch_sizes:
                x = torch.randn(batch_size, *input_size, generator=generator)
                with torch.inference_mode():
                    reference = model(x.to(self.device.reference))
                x = x.to(place)
                passed = self.check_and_time(model, x, reference, records)
                if self.select_best:
                    # Paths whose runtime chose a precision not allowed (OpenVINO's default is
                    # bf16 on bf16 CPUs) are timed in the same rounds but never chosen.
                    candidates = [item for item in passed if item[0].precision in self.allowed]
                    held_back = [item for item in passed if item[0].precision not in self.allowed]
                    self.time_briefly(passed, x)
                    records.append(self.time_best(candidates, held_back, x))
        for record in records:
            record.extra.update(self.policy)
        return records

    def check_and_time(
        self, model: nn.Module, x: torch.Tensor, reference: torch.Tensor, records: list
    ) -> list[tuple[BenchRecord, Callable]]:
        """Check every backend on ``x``; time it in full (appended to ``records``) or, when
        choosing the best, return it among the passed (record, runner) pairs."""
        passed: list[tuple[BenchRecord, Callable]] = []
        for name in self.names:
            backend = build_backend(self.device, name, self.threads, self.int8)
            record = BenchRecord(
                self.model_name,
                name,
                x.shape[0],
                backend.precision,
                "ok",
                threads=self.used_threads,
            )
            record.extra.update(self.device.describe(x.device))
            run = self.check(backend, model, x, reference, record)
            if run is None:
                keep_unrun(record, self.select_best, self.on_skip, records)
            elif not self.select_best:
                self.fill(record, self.device.timer(partial(run, x), self.min_seconds))
                records.append(record)
            else:
                passed.append((record, run))
        return passed

    def time_briefly(self, passed: list, x: torch.Tensor) -> None:
        """Each candidate's quick timing (``extra["quick"]``): the median of its medians over
        :data:`QUICK_ROUNDS` interleaved rounds, at most half a second per candidate in all."""
        seconds = min(0.5, self.min_seconds) / QUICK_ROUNDS
        medians: list[list[float]] = [[] for _ in passed]
        for _ in range(QUICK_ROUNDS):
            for (_record, run), times in zip(passed, medians, strict=True):
                times.append(self.device.timer(partial(run, x), seconds).median_ms)
        for (record, _run), times in zip(passed, medians, strict=True):
            record.extra["quick"] = statistics.median(times)

    def check(
        self,
        backend: Backend,
        model: nn.Module,
        x: torch.Tensor,
        reference: torch.Tensor,
        record: BenchRecord,
    ) -> Callable | None:
        """Prepare and check one backend; fills ``record`` and returns its runner when it passes."""
        prepared = prepare_once(backend, model, x, record, missing=self.device.missing)
        if prepared is None:
            return None
        run, output = prepared
        record.precision = backend.precision  # the runtime's default may be reduced precision
        if backend.precision == "int8":
            _check_top1(backend, model, record)
            scheme = backend.scheme()
            if scheme:
                record.extra["scheme"] = scheme
        else:
            diff, tolerance = self.device.check(reference, output, backend.precision)
            record.max_abs_diff, record.tolerance = diff, tolerance
            if not diff <= tolerance:
                record.status = "wrong"
                record.note = f"outputs differ from eager fp32 by {diff:.3g}"
        return run if record.status == "ok" else None

    def fill(self, record: BenchRecord, stats: LatencyStats) -> None:
        _fill_timing(record, stats, self.flops, self.peak, self.device.timer_assesses)

    def time_best(self, passed: list, held_back: list, x: torch.Tensor) -> BenchRecord:
        """The fastest passing candidate (by its quick timing), timed in full."""
        record, run = choose_best(passed, self.device.label)
        self.fill(record, self.device.timer(partial(run, x), self.min_seconds))
        return mark_best(record, passed, held_back)


def benchmark_exported(
    exported: Any,
    *,
    batch_sizes: Sequence[int] = (1,),
    threads: int | None = None,
    min_seconds: float = 2.0,
) -> list[BenchRecord]:
    """Time an exported file (:class:`lightnets.deploy.exported.ExportedModel`) in its runtime.

    There is no PyTorch model to check it against here: ``lightnets export`` checked it when it
    was written, and ``quantize`` measured an int8 file's top-1 change (kept in its metadata).
    """
    from lightnets.models.memory import check_input_memory, check_stored_model

    size = exported.input_size
    # The file's metadata says the model and its input: both checked before anything is built.
    if exported.hparams:
        check_stored_model(exported.hparams, list(size), max(batch_sizes))
    else:
        check_input_memory(list(size), max(batch_sizes))
    flops = _flops_per_image(exported.reference_model(), size) if exported.hparams else None
    cpu = get_device("cpu")
    torch_count = torch.get_num_threads()  # the policy sets it; given back at the end
    threads, policy = _thread_policy(cpu, threads, None)
    records = []
    generator = torch.Generator().manual_seed(0)
    with cpu.context(threads) as used:
        peak = _peak_gflops() if flops is not None else None  # with the threads timed below
        for batch_size in batch_sizes:
            x = torch.randn(batch_size, *size, generator=generator)
            record = BenchRecord(exported.name, f"{exported.format} file", batch_size, "", "ok")
            record.precision, record.note = exported.precision, "checked when exported, not here"
            record.threads = used
            record.extra.update(policy)
            _fill_timing(record, cpu.timer(partial(exported.run, x), min_seconds), flops, peak)
            records.append(record)
    torch.set_num_threads(torch_count)
    return records
