"""CUDA inference backends: their arithmetic (run on the CPU here), the CLI's errors without a
GPU, and -- on a machine with one -- the graph capture, the event timing and `bench --device cuda`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch

import lightnets
from lightnets.cli import main
from lightnets.deploy.bench import benchmark, calibrate_batchnorm
from lightnets.deploy.cuda import (
    CUDA_BACKENDS,
    CUDA_TOLERANCE,
    CudaBackend,
    check_cuda_output,
    cuda_latency,
    require_cuda,
    resolve_cuda_backends,
)
from lightnets.deploy.devices import DEVICES
from lightnets.errors import InvalidArgumentError, MissingDependencyError

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture(scope="module")
def model():
    """MobileNet V2 0.35x with BatchNorm statistics of unit-scale activations (as if trained)."""
    torch.manual_seed(0)
    net = lightnets.create_model("mobilenet_v2", num_classes=10, variant="cifar", width_mult=0.35)
    return calibrate_batchnorm(net, (3, 32, 32))


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on machines without a GPU")
def test_bench_device_cuda_without_a_gpu_is_one_line_naming_what_is_missing(capsys):
    assert main(["bench", "mobilenet_v2", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--device cuda" in err and "--device cpu" in err
    assert ("CPU-only" in err) if torch.version.cuda is None else ("sees no GPU" in err)


def test_require_cuda_names_the_missing_build_or_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(MissingDependencyError, match=r"CUDA build of PyTorch.*CPU-only"):
        require_cuda()
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidArgumentError, match=r"PyTorch \(CUDA 13.0\) sees no GPU"):
        require_cuda()


def test_backend_names_are_checked_against_the_cuda_table():
    assert resolve_cuda_backends("cuda-graph, cuda-eager,cuda-graph") == [
        "cuda-graph",
        "cuda-eager",
    ]
    assert resolve_cuda_backends("best") == ["best"]
    with pytest.raises(InvalidArgumentError, match="unknown backend 'openvino' for --device cuda"):
        resolve_cuda_backends("openvino")
    with pytest.raises(InvalidArgumentError, match="allowed with --device cuda: cuda-eager"):
        resolve_cuda_backends(" , ")
    assert set(CUDA_BACKENDS) == {
        "cuda-eager",
        "cuda-fp16-cl",
        "cuda-bf16-cl",
        "cuda-graph",
        "cuda-graph-fp16",
        "tensorrt",
    }


def test_output_check_scales_the_tolerance_and_rejects_a_wrong_shape():
    reference = torch.tensor([[4.0, -2.0]])
    diff, tolerance = check_cuda_output(reference, reference + 0.03, "fp16")
    assert diff == pytest.approx(0.03, rel=1e-5) and tolerance == pytest.approx(
        4 * CUDA_TOLERANCE["fp16"]
    )
    assert check_cuda_output(reference, reference[:, :1], "fp32")[0] == float("inf")


@pytest.mark.parametrize("name", ["cuda-eager", "cuda-fp16-cl", "cuda-bf16-cl"])
def test_eager_backends_compute_the_model_within_their_precision(model, name):
    """The dtype / layout / BN folding of each backend, checked against eager fp32 on the CPU
    (they run on the example's device, so this runs on the CPU too)."""
    backend = CUDA_BACKENDS[name]()
    if name == "cuda-fp16-cl" and DEVICE.type == "cpu":
        try:
            torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3).half(), torch.ones(1, 1, 1, 1).half())
        except RuntimeError:
            pytest.skip("this PyTorch has no fp16 convolution on the CPU")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = model(x)
    run = backend.prepare(model, x.to(DEVICE))
    output = run(x.to(DEVICE))
    assert output.dtype == torch.float32 and output.shape == reference.shape
    diff, tolerance = check_cuda_output(reference, output, backend.precision)
    assert diff <= tolerance
    if backend.precision != "fp32":
        assert diff > 0  # it did run in reduced precision
    assert all(p.device.type == "cpu" for p in model.parameters())  # the model is left as it was


class TF32Probe(CudaBackend):
    """cuda-eager that notes whether TF32 was allowed when it was prepared."""

    name = "tf32-probe"
    seen: ClassVar[list[bool]] = []

    def prepare(self, model, example):
        self.seen.append(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
        return super().prepare(model, example)


def test_the_cuda_device_runs_in_the_one_race(model, monkeypatch):
    """Everything of --device cuda but the GPU: CUDA's table, check, context and record in the
    routine every device shares. Its backends run on the example's device (here the CPU), so
    only the place and the timer (CUDA events) are swapped for the CPU's."""
    monkeypatch.setattr(CudaBackend, "available", lambda self: True)
    monkeypatch.setattr(CudaBackend, "require", lambda self: None)
    monkeypatch.setitem(CUDA_BACKENDS, "tf32-probe", TF32Probe)
    monkeypatch.setattr(TF32Probe, "seen", [])
    here = dataclasses.replace(
        DEVICES["cuda"], place=lambda: torch.device("cpu"), timer=DEVICES["cpu"].timer,
        describe=lambda place: {"device": f"{place.type} standing in"},
    )  # fmt: skip
    names = ["cuda-eager", "cuda-bf16-cl", "tf32-probe"]
    records = benchmark(
        model, names, device=here, batch_sizes=(2,), input_size=(3, 32, 32), min_seconds=0.01
    )
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # bench's batch
    with torch.inference_mode():
        scale = max(1.0, model(x).abs().max().item())
    assert [(r.backend, r.precision, r.status) for r in records] == [
        ("cuda-eager", "fp32", "ok"),
        ("cuda-bf16-cl", "bf16", "ok"),
        ("tf32-probe", "fp32", "ok"),
    ]
    for r in records:
        assert r.tolerance == pytest.approx(CUDA_TOLERANCE[r.precision] * scale)
        assert r.max_abs_diff <= r.tolerance and r.latency_ms_median > 0
        assert r.threads is None and r.as_dict()["device"] == "cpu standing in"
        assert "stable" not in r.as_dict()  # CUDA events give no verdict on stability
    assert records[1].max_abs_diff > 0  # bf16 did run in bf16
    assert TF32Probe.seen == [False]  # prepared inside CUDA's context: fp32 means fp32
    # best: fp32 candidates only, unless bf16 is allowed; the fastest of them, timed again.
    (best,) = [r for r in benchmark(
        model, "best", device=here, batch_sizes=(1,), input_size=(3, 32, 32), min_seconds=0.01
    ) if r.best]  # fmt: skip
    assert best.precision == "fp32" and best.status == "ok"
    assert "cuda-bf16-cl" not in best.extra["candidates"]
    assert best.backend == min(best.extra["candidates"], key=best.extra["candidates"].get)


@needs_cuda
@pytest.mark.parametrize("name", ["cuda-graph", "cuda-graph-fp16"])
def test_graph_backends_replay_the_model_for_new_inputs(model, name):
    backend = CUDA_BACKENDS[name]()
    generator = torch.Generator().manual_seed(2)
    first, second = (torch.randn(8, 3, 32, 32, generator=generator) for _ in range(2))
    run = backend.prepare(model, first.cuda())
    out_first = run(first.cuda())
    out_second = run(second.cuda())  # the same graph, another input
    for x, out in ((first, out_first), (second, out_second)):
        with torch.inference_mode():
            reference = model(x)
        diff, tolerance = check_cuda_output(reference, out, backend.precision)
        assert diff <= tolerance


@needs_cuda
def test_bench_device_cuda_checks_and_times_every_backend(model):
    records = benchmark(
        model, ["all"], device="cuda", model_name="mobilenet_v2", batch_sizes=(1,),
        input_size=(3, 32, 32), min_seconds=0.05,
    )  # fmt: skip
    by_name = {r.backend: r for r in records}
    for name in ("cuda-eager", "cuda-fp16-cl", "cuda-bf16-cl", "cuda-graph", "cuda-graph-fp16"):
        assert by_name[name].status == "ok", by_name[name].note
        assert by_name[name].latency_ms_median > 0
    (best,) = benchmark(
        model, ["best"], device="cuda", model_name="m", batch_sizes=(1,), input_size=(3, 32, 32),
        min_seconds=0.05,
    )  # fmt: skip
    assert best.best and best.precision == "fp32"
    assert set(best.extra["candidates"]) == {"cuda-eager", "cuda-graph"}


@needs_cuda
def test_cuda_event_timing_sees_the_gpu_work():
    a = torch.randn(2048, 2048, device="cuda")
    one = cuda_latency(lambda: a @ a, warmup=2, min_iters=5, min_seconds=0)
    four = cuda_latency(lambda: [a @ a for _ in range(4)], warmup=2, min_iters=5, min_seconds=0)
    assert 2.5 < four.median_ms / one.median_ms < 6
