"""CUDA inference backends, checked and timed like the CPU ones (``lightnets bench --device cuda``).

What a small CNN needs on a GPU is fewer launches, not more arithmetic: at batch 1 MobileNet V2
runs ~150 kernels of a few microseconds each, so eager PyTorch is bound by the CPU issuing them
(issue 9: 2.85 ms eager fp32 against 0.49 ms replayed as a CUDA graph on an H100). The backends:

  cuda-eager        eager fp32, NCHW -- the baseline every other one is compared with;
  cuda-fp16-cl      BatchNorm folded, fp16 weights and activations, channels_last (NHWC), which
                    is the layout cuDNN's tensor-core kernels use;
  cuda-bf16-cl      the same in bfloat16;
  cuda-graph        BatchNorm folded, fp32, the whole forward captured once in a CUDA graph
                    (``torch.cuda.CUDAGraph``) and replayed: one launch per call;
  cuda-graph-fp16   cuda-fp16-cl captured in a CUDA graph;
  tensorrt          Torch-TensorRT (fp16 allowed), only where ``torch_tensorrt`` is installed.

"fp32" here means fp32: TF32 tensor-core math is switched off while the backends run, so the fp32
backends are held to the fp32 tolerance against eager fp32 on the CPU. Every backend's output is
checked before it is timed; timing is by CUDA events around each call, after warm-up calls
(cuDNN's algorithm search and the graph capture happen in :meth:`Backend.prepare` and the
warm-up, never in the timed loop). A call's time includes the CPU launching its kernels: at
batch 1 that is what the graph removes.

This module is the CUDA device's parts: its backend table, its check, its timer and its context.
The race they run in (check, time briefly, choose, time fully) is the CPU's, in
:mod:`lightnets.deploy.bench`; :data:`lightnets.deploy.devices.DEVICES` puts the parts together.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import statistics
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from lightnets.analysis.timing import LatencyStats
from lightnets.deploy.backends import Backend, Runner, backend_names
from lightnets.deploy.fusion import fuse
from lightnets.errors import InvalidArgumentError, MissingDependencyError

__all__ = [
    "CUDA_BACKENDS",
    "CUDA_TOLERANCE",
    "check_cuda_output",
    "cuda_latency",
    "require_cuda",
    "resolve_cuda_backends",
    "strict_fp32",
]

#: Allowed max |diff| to eager fp32, as a fraction of the largest |logit| (at least 1). fp32 as on
#: the CPU (lightnets.deploy.accuracy.TOLERANCE). The fp16 / bf16 backends keep weights and every
#: activation in 16 bits end to end, so rounding compounds over ~50 layers: MobileNet V2 0.35x
#: (cifar, 32 px) measured 1.1e-2 (fp16) and 6.2e-2 (bf16); the tolerances are about twice that.
CUDA_TOLERANCE = {"fp32": 1e-4, "fp16": 2.5e-2, "bf16": 1e-1}
#: Default batch sizes on CUDA: latency (1) and throughput.
DEFAULT_BATCH_SIZES = (1, 256)


def require_cuda() -> torch.device:
    """The CUDA device, or a one-line error saying what is missing (the build or the GPU)."""
    if torch.version.cuda is None:
        raise MissingDependencyError(
            f"--device cuda needs a CUDA build of PyTorch; this one ({torch.__version__}) is "
            "CPU-only: install a CUDA wheel of torch, or use --device cpu"
        )
    if not torch.cuda.is_available():
        raise InvalidArgumentError(
            f"--device cuda, but PyTorch (CUDA {torch.version.cuda}) sees no GPU: check the "
            "NVIDIA driver and CUDA_VISIBLE_DEVICES, or use --device cpu"
        )
    return torch.device("cuda", torch.cuda.current_device())


class CudaBackend(Backend):
    """A backend running on the example's device: ``prepare`` moves a copy of the model there.

    ``dtype`` and ``channels_last`` set the arithmetic and layout; ``fold_bn`` folds BatchNorm
    first (:func:`lightnets.deploy.fusion.fuse`); ``graph`` replays a captured CUDA graph. The
    runner takes fp32 NCHW input on the device and returns fp32 logits, whatever runs inside.
    """

    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    fold_bn: bool = False
    graph: bool = False

    def available(self) -> bool:
        return torch.cuda.is_available() and super().available()

    def require(self) -> None:
        require_cuda()
        super().require()

    def module(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model as this backend runs it: folded, on ``device``, in its dtype and layout."""
        module = fuse(model) if self.fold_bn else copy.deepcopy(model).eval()
        module = module.to(device=device, dtype=self.dtype)
        if self.channels_last:
            # Module.to takes memory_format at run time; torch's overloads leave it out.
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return module

    def forward(self, model: nn.Module, device: torch.device) -> Runner:
        module = self.module(model, device)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format

        def run(x: torch.Tensor) -> torch.Tensor:
            x = x.to(dtype=self.dtype, memory_format=memory_format)
            return module(x).float()

        return run

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        forward = self.forward(model, example.device)
        if self.graph:
            return capture_graph(forward, example)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return forward(x)

        return run


def capture_graph(forward: Runner, example: torch.Tensor, warmup: int = 3) -> Runner:
    """``forward`` captured in a CUDA graph for inputs shaped like ``example``.

    Warm-up runs on a side stream first (cuDNN picks its algorithms, the caching allocator
    settles), as ``torch.cuda.graphs`` requires; then one capture. A call copies its input into
    the graph's static input and replays; the result is a copy of the static output, so a later
    call does not overwrite what an earlier one returned.
    """
    static_input = example.detach().clone()
    stream = torch.cuda.Stream(example.device)
    stream.wait_stream(torch.cuda.current_stream(example.device))
    with torch.inference_mode():
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                forward(static_input)
        torch.cuda.current_stream(example.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = forward(static_input)

    def run(x: torch.Tensor) -> torch.Tensor:
        static_input.copy_(x)
        graph.replay()
        return static_output.clone()

    return run


class CudaEagerBackend(CudaBackend):
    name = "cuda-eager"
    description = "PyTorch eager on CUDA, fp32, NCHW (the baseline)"


class CudaFp16Backend(CudaBackend):
    name = "cuda-fp16-cl"
    description = "CUDA, BatchNorm folded, fp16, channels_last"
    precision = "fp16"
    dtype = torch.float16
    channels_last = fold_bn = True


class CudaBf16Backend(CudaFp16Backend):
    name = "cuda-bf16-cl"
    description = "CUDA, BatchNorm folded, bfloat16, channels_last"
    precision = "bf16"
    dtype = torch.bfloat16


class CudaGraphBackend(CudaBackend):
    name = "cuda-graph"
    description = "CUDA graph of the BatchNorm-folded model, fp32: one launch per call"
    fold_bn = graph = True


class CudaGraphFp16Backend(CudaFp16Backend):
    name = "cuda-graph-fp16"
    description = "CUDA graph of cuda-fp16-cl: one launch per call"
    graph = True


class TensorRtBackend(CudaBackend):
    name = "tensorrt"
    description = "Torch-TensorRT (dynamo), BatchNorm folded, fp16 allowed, static shape"
    precision = "fp16"
    extra = "tensorrt"
    modules = ("torch_tensorrt",)
    slow_to_prepare = True

    def available(self) -> bool:
        return torch.cuda.is_available() and importlib.util.find_spec("torch_tensorrt") is not None

    def require(self) -> None:
        require_cuda()
        if importlib.util.find_spec("torch_tensorrt") is None:
            raise MissingDependencyError(
                "the tensorrt backend needs torch_tensorrt: pip install torch-tensorrt "
                "(the wheel matching this torch and CUDA)"
            )

    def prepare(self, model: nn.Module, example: torch.Tensor) -> Runner:
        import torch_tensorrt

        module = fuse(model).to(example.device)
        compiled = torch_tensorrt.compile(
            module,
            ir="dynamo",
            inputs=[example],
            enabled_precisions={torch.float16, torch.float32},
        )

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return compiled(x).float()

        return run


CUDA_BACKENDS: dict[str, type[CudaBackend]] = {
    cls.name: cls
    for cls in (
        CudaEagerBackend,
        CudaFp16Backend,
        CudaBf16Backend,
        CudaGraphBackend,
        CudaGraphFp16Backend,
        TensorRtBackend,
    )
}


def resolve_cuda_backends(spec: str | Sequence[str]) -> list[str]:
    """Parse ``--backend`` for ``--device cuda``: names, ``all`` or ``best``."""
    return backend_names(spec, CUDA_BACKENDS, "--device cuda")


def check_cuda_output(
    reference: torch.Tensor, output: torch.Tensor, precision: str
) -> tuple[float, float]:
    """(max |diff|, tolerance) of ``output`` against the eager fp32 ``reference`` (on the CPU)."""
    scale = max(1.0, float(reference.abs().max()))
    if output.shape != reference.shape:
        return float("inf"), CUDA_TOLERANCE[precision] * scale
    diff = float((output.detach().float().cpu() - reference).abs().max())
    return diff, CUDA_TOLERANCE[precision] * scale


def cuda_latency(
    fn: Callable[[], object], *, warmup: int = 10, min_iters: int = 20, min_seconds: float = 1.0
) -> LatencyStats:
    """Per-call GPU time of ``fn()`` by CUDA events, after ``warmup`` calls.

    Each call sits between two events on the current stream, with the stream idle before it,
    so the time is that of the GPU finishing the call's work, launch gaps included.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    while len(times) < min_iters or sum(times) < 1e3 * min_seconds:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    ordered = sorted(times)
    p90 = statistics.quantiles(ordered, n=10, method="inclusive")[-1]
    return LatencyStats(
        median_ms=statistics.median(ordered),
        p90_ms=p90,
        mean_ms=statistics.fmean(ordered),
        iters=len(ordered),
        min_ms=ordered[0],
    )


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """No TF32 for convolutions and matrix products inside the block (restored after)."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True  # static shapes: let cuDNN pick the fastest kernels
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul
        torch.backends.cudnn.benchmark = benchmark
