"""Backends are checked against eager fp32 before they are timed; best picks a passing one."""

from __future__ import annotations

import re
import time

import pytest
import torch

import lightnets
from lightnets.analysis import machine
from lightnets.deploy import backends as backends_module
from lightnets.deploy.accuracy import top1_change
from lightnets.deploy.backends import (
    BACKENDS,
    Backend,
    get_backend,
    physical_cores,
    resolve_backends,
)
from lightnets.deploy.bench import benchmark, best_candidates, build_backend, parse_batch_sizes
from lightnets.deploy.devices import DEVICES
from lightnets.errors import InvalidArgumentError, MissingDependencyError, max_threads
from test_deploy_fuse import randomize_batchnorm

SIZE = (3, 32, 32)
RECORD_KEYS = {
    "model",
    "backend",
    "batch_size",
    "latency_ms_median",
    "latency_ms_p90",
    "images_per_sec",
    "max_abs_diff",
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = lightnets.create_model("mobilenet_v2", variant="cifar", num_classes=10, width_mult=0.35)
    return randomize_batchnorm(net)


def test_every_quick_backend_passes_its_check_and_is_timed(model):
    # The device runtimes (seconds to lower each) are checked once, by the best test below.
    names = [
        n
        for n, cls in BACKENDS.items()
        if cls.precision != "int8"
        and not cls.slow_to_prepare
        and cls.extra != "mobile"
        and cls().available()
    ]
    assert {"eager", "channels_last", "fused", "torchscript"} <= set(names)
    records = benchmark(model, names, model_name="mobilenet_v2", input_size=SIZE, min_seconds=0.01)
    assert [r.backend for r in records] == names
    x = torch.randn(1, *SIZE, generator=torch.Generator().manual_seed(0))  # bench's batch
    with torch.no_grad():
        scale = model(x).abs().max().item()
    for r in records:
        assert r.status == "ok", (r.backend, r.note)
        assert set(r.as_dict()) >= RECORD_KEYS
        factor = {"fp32": 1e-4, "bf16": 5e-2}[r.precision]
        assert r.max_abs_diff <= r.tolerance == pytest.approx(factor * max(1.0, scale))
        assert 0 < r.latency_ms_median <= r.latency_ms_p90
        assert r.images_per_sec == pytest.approx(r.batch_size * 1e3 / r.latency_ms_median)
        assert r.gflops_per_sec > 0
        # Share of the float32 peak: only for float32 rows, never above 1.
        if r.precision == "fp32":
            assert 0 < r.peak_fraction <= 1
        else:
            assert r.peak_fraction is None
        assert isinstance(r.as_dict()["stable"], bool) and r.as_dict()["timing_note"]
    by_name = {r.backend: r for r in records}
    for name in ("eager", "fused", "onnxruntime-opt", "openvino-opt"):
        if name in by_name:
            assert by_name[name].precision == "fp32"


def test_several_batch_sizes(model):
    records = benchmark(
        model,
        ["eager", "fused"],
        model_name="m",
        batch_sizes=[1, 3],
        input_size=SIZE,
        min_seconds=0.01,
    )
    assert [(r.backend, r.batch_size) for r in records] == [
        ("eager", 1),
        ("fused", 1),
        ("eager", 3),
        ("fused", 3),
    ]
    assert all(r.status == "ok" for r in records)


class NoisyBackend(Backend):
    """A broken runtime: right shape, wrong numbers."""

    name = "noisy"

    def prepare(self, model, example):
        return lambda x: model(x) + 0.1


def test_a_backend_that_disagrees_is_reported_wrong_not_fast(model, monkeypatch):
    monkeypatch.setitem(BACKENDS, "noisy", NoisyBackend)
    (record,) = benchmark(model, ["noisy"], model_name="m", input_size=SIZE, min_seconds=0.01)
    assert record.status == "wrong"
    assert record.max_abs_diff == pytest.approx(0.1, rel=1e-3)
    assert record.latency_ms_median is None and record.images_per_sec is None


def test_best_picks_the_fastest_passing_fp32_backend(model, monkeypatch):
    monkeypatch.setitem(BACKENDS, "noisy", NoisyBackend)  # fp32, fast, wrong: never chosen
    records = benchmark(model, ["best"], model_name="m", input_size=SIZE, min_seconds=0.05)
    best = [r for r in records if r.best]
    assert len(best) == 1 and best[0].status == "ok"
    assert best[0].precision == "fp32" and best[0].backend != "noisy"
    quick = best[0].extra["candidates"]
    assert best[0].backend == min(quick, key=quick.get)
    assert "int8" not in quick and "openvino-bf16" not in quick
    # The device runtimes are candidates, and passed the fp32 check (only those are timed).
    device = {n for n in ("executorch", "litert") if BACKENDS[n]().available()}
    assert device <= set(quick)
    assert [r.backend for r in records if not r.best] == ["noisy"]


def test_best_candidates_respect_precision_flags():
    fp32 = best_candidates()
    assert "compile" not in fp32 and "int8" not in fp32 and "eager" in fp32
    if BACKENDS["int8"]().available():
        assert "int8" in best_candidates(allow_int8=True)


def test_missing_runtime_names_the_extra(model, monkeypatch):
    real = backends_module.importlib.util.find_spec
    monkeypatch.setattr(
        backends_module.importlib.util,
        "find_spec",
        lambda name: None if name == "onnxruntime" else real(name),
    )
    monkeypatch.setattr(backends_module, "require", _fake_require)
    with pytest.raises(MissingDependencyError, match=r"pip install 'lightnets\[onnx\]'"):
        benchmark(model, ["onnxruntime"], model_name="m", input_size=SIZE)
    skipped: list[str] = []
    monkeypatch.setattr(
        DEVICES["cpu"], "backends", {k: BACKENDS[k] for k in ("eager", "onnxruntime-opt")}
    )
    records = benchmark(
        model, ["all"], model_name="m", input_size=SIZE, min_seconds=0.01, on_skip=skipped.append
    )
    assert [r.status for r in records] == ["ok", "unavailable"]
    assert skipped == ["onnxruntime-opt: not installed: pip install 'lightnets[onnx]'"]


def _fake_require(module, extra):
    if module == "onnxruntime":
        raise MissingDependencyError(f"{module} is not installed: pip install 'lightnets[{extra}]'")
    return __import__(module)


def test_backend_and_batch_size_parsing():
    assert resolve_backends("eager, onnxruntime,eager") == ["eager", "onnxruntime"]
    assert resolve_backends("all") == ["all"] and resolve_backends("best") == ["best"]
    with pytest.raises(InvalidArgumentError, match="allowed: eager, channels_last"):
        resolve_backends("eager,tensorrt")
    with pytest.raises(InvalidArgumentError, match="cannot be combined"):
        resolve_backends("best,eager")
    assert parse_batch_sizes("1,32") == [1, 32]
    for bad in ("0", "a", "", "1,-2"):
        with pytest.raises(InvalidArgumentError, match="--batch-size"):
            parse_batch_sizes(bad)
    assert get_backend("fused", threads=max_threads()).threads == max_threads()
    with pytest.raises(InvalidArgumentError, match=r"threads=.* in 1\.\."):
        get_backend("fused", threads=max_threads() + 1)
    assert 1 <= physical_cores() <= (torch.get_num_threads() + 64)


def test_calibrate_batchnorm_gives_untrained_networks_a_real_output_scale():
    from lightnets.deploy.bench import calibrate_batchnorm

    model = lightnets.create_model("mobilenet_v2", variant="cifar", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        raw = model(x).abs().max()
        calibrated = calibrate_batchnorm(model, (3, 32, 32))
        scaled = calibrated(x).abs().max()
    assert raw < 1e-6 < 1e-3 < scaled  # default init shrinks activations layer after layer
    assert not calibrated.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    bns = [m for m in calibrated.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 for m in bns)
    assert all(int(m.num_batches_tracked) == 4 for m in bns)


def test_a_device_is_a_row_of_the_device_table(model):
    assert set(DEVICES) == {"cpu", "cuda"} and DEVICES["cpu"].backends is BACKENDS
    with pytest.raises(InvalidArgumentError, match=r"unknown device 'tpu'; allowed: cpu, cuda"):
        benchmark(model, "eager", device="tpu", input_size=SIZE)
    with pytest.raises(InvalidArgumentError, match="unknown backend 'cuda-graph'; allowed: eager"):
        benchmark(model, "eager,cuda-graph", input_size=SIZE)  # CUDA's row, not the CPU's


@pytest.mark.parametrize("name", ["onnxruntime", "onnxruntime-opt"])
def test_onnxruntime_sessions_are_built_with_spinning_off(model, name):
    # A pool spinning after its call would take the cores of the runtime timed next.
    backend = build_backend(DEVICES["cpu"], name, 1, {})
    if not backend.available():
        pytest.skip("onnxruntime not installed")
    x = torch.randn(1, *SIZE)
    options = backend._session(model, x).get_session_options()  # what the session holds
    for pool in ("intra_op", "inter_op"):
        assert options.get_session_config_entry(f"session.{pool}.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1
    # The runtime's plain default, as benchmarks compare against it, keeps its spinning.
    plain = type(backend)(None, spinning=True)._session(model, x).get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        plain.get_session_config_entry("session.intra_op.allow_spinning")


class SlowTunedBackend(Backend):
    """A 'tuned' runtime that is slower here than the plain default it refines."""

    name = "slow-opt"

    def prepare(self, model, example):
        def run(x):
            time.sleep(0.02)
            with torch.inference_mode():
                return model(x)

        return run


class SlowInt8Backend(SlowTunedBackend):
    """An int8 path that passes its check but runs slower than fp32 (int8 without VNNI)."""

    name = "slow-int8"
    precision = "int8"

    def __init__(
        self, threads=None, calibration=None, evaluation=None, max_drop=1.0, calibration_name=""
    ):
        super().__init__(threads)
        self.max_drop = max_drop

    def top1_change(self, model):
        batches = [(torch.randn(4, *SIZE, generator=torch.Generator().manual_seed(1)), None)]
        with torch.inference_mode():
            return top1_change(model, model, batches, max_drop=self.max_drop)


def test_best_picks_a_plain_default_faster_than_the_tuned_options(model, monkeypatch):
    table = {"slow-opt": SlowTunedBackend, "eager": BACKENDS["eager"]}
    monkeypatch.setattr(DEVICES["cpu"], "backends", table)
    (best,) = benchmark(model, "best", model_name="m", input_size=SIZE, min_seconds=0.05)
    assert best.best and best.backend == "eager"
    assert set(best.extra["candidates"]) == {"slow-opt", "eager"}
    assert "int8_note" not in best.extra  # no int8 candidate: nothing to explain


@pytest.mark.parametrize(
    ("dot_product", "why"), [(False, " (no VNNI/AMX int8 instructions)"), (True, "")]
)
def test_int8_slower_than_fp32_is_not_chosen_and_the_report_says_why(
    model, monkeypatch, dot_product, why
):
    table = {"eager": BACKENDS["eager"], "slow-int8": SlowInt8Backend}
    monkeypatch.setattr(DEVICES["cpu"], "backends", table)
    monkeypatch.setattr(machine, "has_int8_dot_product", lambda: dot_product)
    (best,) = benchmark(
        model, "best", model_name="m", input_size=SIZE, min_seconds=0.05, allow_int8=True
    )
    assert best.backend == "eager" and set(best.extra["candidates"]) == {"eager", "slow-int8"}
    quick = best.extra["candidates"]
    note = re.fullmatch(
        r"int8 not chosen: slow-int8 runs (\d+\.\d\d)x slower than fp32 \(eager\) on this CPU(.*)",
        best.extra["int8_note"],
    )
    assert note and note.group(2) == why
    assert float(note.group(1)) == pytest.approx(quick["slow-int8"] / quick["eager"], abs=0.01)
    assert float(note.group(1)) > 1


class Bf16ByDefaultBackend(Backend):
    """A runtime whose plain default computes in bf16 on this CPU (as OpenVINO's does on CPUs
    with bf16 instructions): declared fp32, it says bf16 once prepared; faster than slow-opt."""

    name = "bf16-default"

    def prepare(self, model, example):
        self.precision = "bf16"

        def run(x):
            with torch.inference_mode():
                return model(x)

        return run


def test_a_faster_default_in_another_precision_is_timed_held_back_and_named(model, monkeypatch):
    table = {"slow-opt": SlowTunedBackend, "bf16-default": Bf16ByDefaultBackend}
    monkeypatch.setattr(DEVICES["cpu"], "backends", table)
    (best,) = benchmark(model, "best", model_name="m", input_size=SIZE, min_seconds=0.05)
    assert best.backend == "slow-opt" and set(best.extra["candidates"]) == {"slow-opt"}
    held = best.extra["held_back"]["bf16-default"]
    assert held["precision"] == "bf16" and held["quick"] < best.extra["candidates"]["slow-opt"]
    note = re.fullmatch(
        r"bf16-default ran (\d+\.\d\d)x faster than slow-opt \((\S+) against (\S+) ms\) but "
        r"computes in bf16 here \(its runtime's default on this CPU\), which best does not take "
        r"without --allow-bf16",
        best.extra["precision_note"],
    )
    assert note and float(note.group(2)) == pytest.approx(held["quick"], abs=1e-3)
    assert float(note.group(1)) > 1
    # Allowed, the same path races and wins; nothing is held back, nothing to explain.
    (allowed,) = benchmark(
        model, "best", model_name="m", input_size=SIZE, min_seconds=0.05, allow_bf16=True
    )
    assert allowed.backend == "bf16-default" and allowed.precision == "bf16"
    assert "held_back" not in allowed.extra and "precision_note" not in allowed.extra


def test_int8_dot_product_instructions_read_from_the_cpu_flags():
    assert machine.has_int8_dot_product(frozenset({"sse4_2", "avx2", "fma"})) is False
    assert machine.has_int8_dot_product(frozenset({"avx2", "avx512f", "avx512_vnni"})) is True
    assert machine.has_int8_dot_product(frozenset({"avx2", "avx_vnni"})) is True
    assert machine.has_int8_dot_product(frozenset({"asimd", "fp"})) is None  # not x86
    assert machine.has_int8_dot_product(frozenset()) is None
    # u8 x s8 pair sums saturate on x86 without VNNI/AMX only (reduce_range's default).
    assert machine.int8_pairs_saturate(frozenset({"sse4_2", "avx2", "fma"})) is True
    assert machine.int8_pairs_saturate(frozenset({"avx2", "avx512f", "avx512_vnni"})) is False
    assert machine.int8_pairs_saturate(frozenset({"avx2", "amx_int8"})) is False
    assert machine.int8_pairs_saturate(frozenset({"asimd", "asimddp"})) is False  # Arm
    assert machine.int8_pairs_saturate(frozenset()) is False


def test_records_carry_the_thread_policy_choice(model):
    lines: list[str] = []
    threads_before = torch.get_num_threads()
    (record,) = benchmark(
        model,
        ["eager"],
        model_name="m",
        input_size=SIZE,
        min_seconds=0.01,
        threads=1,
        announce=lines.append,
    )
    assert record.threads == 1
    assert record.as_dict()["thread_policy"]["threads"] == 1
    assert "--threads 1" in record.as_dict()["thread_policy"]["reason"]
    assert torch.get_num_threads() == threads_before  # given back
