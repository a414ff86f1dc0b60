"""Check, then time, inference backends side by side.

Every backend's output is checked before it is timed (:mod:`lightnets.deploy.accuracy`):
fp32 and bf16 backends by their largest logit difference to eager fp32 on a fixed batch, int8 by
its top-1 change on held-out images against the ``max_drop`` budget, the rule ``lightnets
quantize`` applies. A backend that fails its check is reported as ``wrong`` and gets no
speed. Timing is :func:`lightnets.analysis.timing.measure_latency` (warm-up, rounds until the
median is known, busy rounds re-measured; the median, p10 and p90, and ``stable`` with a one-line
note); achieved GFLOP/s is the model's FLOPs (2 x MACs, from :func:`lightnets.profile`) per
second, also given for float32 rows as a fraction of the machine's measured float32 peak
(:func:`lightnets.analysis.roofline.measure_machine_peak`, measured with the same threads),
capped at 100% and flagged as a measurement error above it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from lightnets.analysis.timing import torch_threads
from lightnets.deploy.accuracy import DEFAULT_MAX_DROP, TOLERANCE, max_abs_diff, tolerance
from lightnets.deploy.backends import BACKENDS, Backend, get_backend
from lightnets.errors import InvalidArgumentError, LightnetsError, first_line

__all__ = [
    "TOLERANCE",
    "BenchRecord",
    "benchmark",
    "benchmark_exported",
    "best_candidates",
    "calibrate_batchnorm",
    "check_outputs",
    "parse_batch_sizes",
]


def calibrate_batchnorm(
    model: nn.Module,
    input_size: tuple[int, int, int],
    *,
    batches: int = 4,
    batch_size: int = 8,
    seed: int = 0,
) -> nn.Module:
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


def check_outputs(
    reference: torch.Tensor, output: torch.Tensor, precision: str
) -> tuple[float, float]:
    """(max |diff|, tolerance) of ``output`` against eager fp32 ``reference`` (fp32, bf16)."""
    return max_abs_diff(reference, output.detach().float()), tolerance(reference, precision)


def best_candidates(*, allow_int8: bool = False, allow_bf16: bool = False) -> list[str]:
    """Backends ``--backend best`` chooses among: available, quick to prepare, precise enough."""
    return quick_candidates(BACKENDS, precisions(int8=allow_int8, bf16=allow_bf16))


def precisions(**allowed: bool) -> set[str]:
    """fp32 and every precision flagged True (``int8=``, ``bf16=``, ``fp16=``)."""
    return {"fp32"} | {name for name, allow in allowed.items() if allow}


def quick_candidates(registry: dict[str, type[Backend]], allowed: set[str]) -> list[str]:
    """Backends of ``registry`` that are available, quick to prepare and of an allowed precision."""
    return [
        name
        for name, cls in registry.items()
        if cls.precision in allowed and not cls.slow_to_prepare and cls().available()
    ]


def select_names(
    backends: Sequence[str],
    registry: dict[str, type[Backend]],
    candidates: Callable[[], list[str]],
    make: Callable[[str], Backend],
) -> tuple[list[str], bool]:
    """(names to run, whether choosing the best): ``best`` -> ``candidates()``, ``all`` -> the
    whole ``registry``, else the names given, each ``make(name)`` required to be installed."""
    if list(backends) == ["best"]:
        return candidates(), True
    if list(backends) == ["all"]:
        return list(registry), False
    for name in backends:
        make(name).require()
    return list(backends), False


def _time(run: Callable, x: torch.Tensor, min_seconds: float):
    from lightnets.analysis.timing import measure_latency

    return measure_latency(lambda: run(x), warmup=5, min_iters=10, min_seconds=min_seconds)


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


def _run_backend(
    backend: Backend,
    model: nn.Module,
    x: torch.Tensor,
    reference: torch.Tensor,
    record: BenchRecord,
    min_seconds: float,
) -> Callable | None:
    """Prepare and check one backend; fills ``record`` and returns its runner when it passes."""
    prepared = prepare_once(backend, model, x, record)
    if prepared is None:
        return None
    run, output = prepared
    record.precision = backend.precision  # the runtime's default may be reduced precision
    if backend.precision == "int8":
        _check_top1(backend, model, record)
    else:
        record.max_abs_diff, record.tolerance = check_outputs(reference, output, backend.precision)
        if not record.max_abs_diff <= record.tolerance:
            record.status = "wrong"
            record.note = f"outputs differ from eager fp32 by {record.max_abs_diff:.3g}"
    return run if record.status == "ok" else None


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


def choose_best(passed: list, label: str = "backend") -> tuple[BenchRecord, Callable]:
    """The (record, runner) with the fastest quick timing; an error when none passed."""
    if not passed:
        raise InvalidArgumentError(f"no {label} passed the accuracy check")
    return min(passed, key=lambda item: item[0].extra["quick"])


def mark_best(record: BenchRecord, passed: list) -> BenchRecord:
    """Flag ``record`` as the best, its quick timing replaced by every candidate's."""
    record.best = True
    record.extra = {
        **{k: v for k, v in record.extra.items() if k != "quick"},
        "candidates": {r.backend: round(r.extra["quick"], 4) for r, _ in passed},
    }
    return record


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


def _fill_timing(record: BenchRecord, stats, flops: float | None, peak: float | None) -> None:
    from lightnets.analysis.roofline import of_peak

    record.latency_ms_median = stats.median_ms
    record.latency_ms_p90 = stats.p90_ms
    record.iters = stats.iters
    record.images_per_sec = record.batch_size * 1e3 / stats.median_ms
    record.extra.update(latency_ms_p10=stats.p10_ms, stable=stats.stable, timing_note=stats.note)
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
    backends: Sequence[str],
    *,
    model_name: str,
    batch_sizes: Sequence[int] = (1,),
    input_size: tuple[int, int, int] = (3, 224, 224),
    threads: int | None = None,
    allow_int8: bool = False,
    allow_bf16: bool = False,
    calibration: Sequence[torch.Tensor] | None = None,
    evaluation: Sequence[tuple[torch.Tensor, torch.Tensor | None]] | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    min_seconds: float = 2.0,
    on_skip: Callable[[str], None] | None = None,
) -> list[BenchRecord]:
    """Check and time ``backends`` (names, or ``["all"]`` / ``["best"]``) on ``model``.

    ``best`` checks every candidate (:func:`best_candidates`), times each briefly, then times
    the fastest one that passed in full and returns its record (``best=True``, the others'
    quick timings in ``extra["candidates"]``). ``all`` runs every backend, noting through
    ``on_skip`` those whose runtime is not installed. ``calibration`` images feed the int8
    backend (random images when ``None``) and ``evaluation`` batches (images, labels or None)
    judge it: its top-1 change must stay within ``max_drop`` points (synthetic images, when
    ``None``: top-1 agreement with fp32), else it is ``wrong`` and ``best`` never picks it.
    """
    model = model.eval()
    names, select_best = select_names(
        backends,
        BACKENDS,
        partial(best_candidates, allow_int8=allow_int8, allow_bf16=allow_bf16),
        get_backend,
    )
    flops = _flops_per_image(model, input_size)
    int8 = {"calibration": calibration, "evaluation": evaluation, "max_drop": max_drop}
    records: list[BenchRecord] = []
    generator = torch.Generator().manual_seed(0)
    with torch_threads(threads):
        peak = _peak_gflops() if flops is not None else None  # with the threads timed below
        batch = _Batch(
            model_name=model_name,
            names=names,
            select_best=select_best,
            allowed=precisions(int8=allow_int8, bf16=allow_bf16),
            threads=threads,
            int8=int8,
            min_seconds=min_seconds,
            flops=flops,
            peak=peak,
            on_skip=on_skip,
        )
        for batch_size in batch_sizes:
            x = torch.randn(batch_size, *input_size, generator=generator)
            with torch.inference_mode():
                reference = model(x)
            passed = batch.run(model, x, reference, records)
            if select_best:
                records.append(_pick_best(passed, x, min_seconds, flops, peak))
    return records


@dataclass
class _Batch:
    """What :func:`benchmark` runs on each batch: the backends, how to time them, where to note."""

    model_name: str
    names: list[str]
    select_best: bool
    allowed: set[str]
    threads: int | None
    int8: dict[str, Any]
    min_seconds: float
    flops: float | None
    peak: float | None
    on_skip: Callable[[str], None] | None

    def run(
        self, model: nn.Module, x: torch.Tensor, reference: torch.Tensor, records: list
    ) -> list[tuple[BenchRecord, Callable]]:
        """Check every backend on ``x``; time it in full (appended to ``records``) or, when
        choosing the best, briefly (returned among the passed (record, runner) pairs)."""
        passed: list[tuple[BenchRecord, Callable]] = []
        for name in self.names:
            int8 = BACKENDS[name].precision == "int8"
            backend = get_backend(name, self.threads, **(self.int8 if int8 else {}))
            used = self.threads or torch.get_num_threads()
            record = BenchRecord(
                self.model_name, name, x.shape[0], backend.precision, "ok", threads=used
            )
            run = _run_backend(backend, model, x, reference, record, self.min_seconds)
            if run is None:
                keep_unrun(record, self.select_best, self.on_skip, records)
            elif not self.select_best:
                _fill_timing(record, _time(run, x, self.min_seconds), self.flops, self.peak)
                records.append(record)
            elif record.precision in self.allowed:  # not e.g. OpenVINO's default, bf16 here
                record.extra["quick"] = _time(run, x, min(0.5, self.min_seconds)).median_ms
                passed.append((record, run))
        return passed


def _pick_best(passed, x: torch.Tensor, min_seconds: float, flops, peak) -> BenchRecord:
    """The fastest passing candidate (by its quick timing), timed in full."""
    record, run = choose_best(passed)
    _fill_timing(record, _time(run, x, min_seconds), flops, peak)
    return mark_best(record, passed)


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
    records = []
    generator = torch.Generator().manual_seed(0)
    with torch_threads(threads):
        peak = _peak_gflops() if flops is not None else None  # with the threads timed below
        for batch_size in batch_sizes:
            x = torch.randn(batch_size, *size, generator=generator)
            record = BenchRecord(exported.name, f"{exported.format} file", batch_size, "", "ok")
            record.precision, record.note = exported.precision, "checked when exported, not here"
            record.threads = threads or torch.get_num_threads()
            _fill_timing(record, _time(exported.run, x, min_seconds), flops, peak)
            records.append(record)
    return records
