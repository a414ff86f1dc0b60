"""int8 post-training static quantization for CPU, calibrated on real images.

Post-training static quantization (Jacob et al., 2018, "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", Section 2) stores weights as int8 and
runs convolutions on int8 activations whose ranges are fixed beforehand by feeding calibration
images through the network. Two maintained implementations are offered:

- ``openvino`` (default): NNCF's post-training quantization of the OpenVINO model (symmetric
  per-channel weights, activation ranges from calibration, fast bias correction), saved as
  OpenVINO IR and run by OpenVINO's int8 kernels (AVX-512 VNNI where the CPU has it).
- ``onnxruntime``: ONNX Runtime's ``quantize_static`` (QDQ format, per-channel int8 weights,
  uint8 activations, min-max calibration), saved as ONNX.

On the 2-core Zen 4 development machine the OpenVINO path was both faster and closer to fp32
(docs/deploy.md has the measurements), hence the default.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightnets.deploy.exporters import INPUT_NAME, onnx_bytes, openvino_model
from lightnets.deploy.fusion import fuse
from lightnets.deploy.openvino_runtime import ensure_signal_stack
from lightnets.errors import InvalidArgumentError, require
from lightnets.fileio import atomic_path, check_writable, commit

__all__ = [
    "CALIBRATION_SOURCES",
    "METHODS",
    "QuantizationReport",
    "calibration_data",
    "quantize",
    "quantize_onnxruntime",
    "quantize_openvino",
    "synthetic_batches",
]

METHODS = ("openvino", "onnxruntime")
CALIBRATION_SOURCES = ("fashion-mnist", "cifar10", "cifar100", "folder", "synthetic")


@dataclass(frozen=True)
class QuantizationReport:
    """Size, speed and accuracy of the int8 model next to its fp32 original."""

    path: str
    method: str
    calibration: str
    calibration_images: int
    fp32_size_mb: float
    int8_size_mb: float
    fp32_latency_ms: float
    int8_latency_ms: float
    speedup: float
    eval_images: int
    #: "accuracy" (top-1 against labels) or "agreement" (top-1 equal to fp32's, no labels).
    eval_metric: str
    fp32_top1: float
    int8_top1: float
    top1_change: float
    max_abs_diff: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def synthetic_batches(
    input_size: tuple[int, int, int], *, count: int = 64, batch_size: int = 8, seed: int = 0
) -> list[torch.Tensor]:
    """``count`` standard-normal images (already "normalised") in batches of ``batch_size``."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [batch_size] * (count // batch_size) + (
        [count % batch_size] if count % batch_size else []
    )
    return [torch.randn(n, *input_size, generator=generator) for n in sizes]


def calibration_data(
    source: str,
    *,
    input_size: tuple[int, int, int],
    data_dir: str | None = None,
    calibration_images: int = 300,
    eval_images: int = 1000,
    batch_size: int = 32,
) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor | None]], list[str] | None]:
    """Calibration batches (from the training split) and evaluation batches (test split).

    ``source`` is a data set name understood by :func:`lightnets.data.load_splits`
    (``fashion-mnist``, ``cifar10``, ``cifar100``, ``folder`` with ``data_dir``) or
    ``synthetic`` (random images, no labels: the evaluation then measures top-1 agreement with
    fp32). Returns (calibration images, [(images, labels or None)], class names or None).
    """
    if source not in CALIBRATION_SOURCES:
        raise InvalidArgumentError(
            f"unknown calibration source {source!r}; allowed: {', '.join(CALIBRATION_SOURCES)}"
        )
    if calibration_images < 1 or eval_images < 0:
        raise InvalidArgumentError("--calibration-images must be >= 1 and --eval-images >= 0")
    if source == "synthetic":
        calib = synthetic_batches(input_size, count=calibration_images, batch_size=batch_size)
        evals = synthetic_batches(input_size, count=eval_images, batch_size=batch_size, seed=1)
        return calib, [(x, None) for x in evals], None
    from lightnets.data import load_splits, make_loader

    splits = load_splits(source, data_dir=data_dir, image_size=input_size[1])
    calib = [
        x
        for x, _ in _take(
            make_loader(splits.train, splits, batch_size=batch_size, train=False),
            calibration_images,
        )
    ]
    held_out = splits.test if splits.test is not None else splits.val
    evals = _take(make_loader(held_out, splits, batch_size=batch_size, train=False), eval_images)
    return calib, evals, list(splits.classes)


def _take(loader: Iterable, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    taken: list[tuple[torch.Tensor, torch.Tensor]] = []
    remaining = count
    for images, labels in loader:
        if remaining <= 0:
            break
        taken.append((images[:remaining], labels[:remaining]))
        remaining -= len(taken[-1][0])
    return taken


def quantize_openvino(
    model: nn.Module, batches: Iterable[torch.Tensor], input_size: tuple[int, int, int]
):  # -> openvino.Model
    """NNCF post-training int8 quantization of the BN-folded model, as an ``openvino.Model``."""
    require("openvino", "openvino")
    nncf = require("nncf", "openvino")
    items = [np.ascontiguousarray(b.numpy(), dtype=np.float32) for b in batches]
    if not items:
        raise InvalidArgumentError("quantization needs at least one calibration image")
    ov_model = openvino_model(fuse(model), torch.zeros(1, *input_size))
    subset = sum(len(b) for b in items)
    # NNCF draws rich progress bars on stdout, which must stay clean for --json.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        nncf.set_log_level(logging.ERROR)
        quantized = nncf.quantize(
            ov_model,
            nncf.Dataset(items),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=subset,
        )
    ensure_signal_stack()  # NNCF compiles with OpenVINO while calibrating
    return quantized


def quantize_onnxruntime(
    model: nn.Module, batches: Iterable[torch.Tensor], input_size: tuple[int, int, int]
) -> bytes:
    """ONNX Runtime static quantization (QDQ, per-channel int8 weights) of the folded model."""
    require("onnx", "onnx")
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    items = [np.ascontiguousarray(b.numpy(), dtype=np.float32) for b in batches]
    if not items:
        raise InvalidArgumentError("quantization needs at least one calibration image")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items: Iterator[np.ndarray] = iter(items)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else {INPUT_NAME: item}

    data = onnx_bytes(fuse(model), torch.zeros(1, *input_size))
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "fp32.onnx"), Path(folder, "int8.onnx")
        source.write_bytes(data)
        ort = require("onnxruntime", "onnx")
        ort.set_default_logger_severity(3)  # no per-initializer warnings
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs a generic pre-processing hint
        try:
            quantize_static(
                str(source),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        finally:
            root.setLevel(level)
        return target.read_bytes()


class _Runner:
    """An int8 or fp32 model in its runtime, for evaluation and timing."""

    def __init__(self, method: str, model: Any) -> None:
        if method == "openvino":
            from lightnets.deploy.backends import OpenVinoOptBackend

            ov = require("openvino", "openvino")
            if isinstance(model, (str, Path)):
                model = ov.Core().read_model(str(model))
            self._compiled = OpenVinoOptBackend().compile(model)
            self._fn = lambda x: self._compiled(x)[0]
        else:
            ort = require("onnxruntime", "onnx")
            from lightnets.deploy.backends import physical_cores

            options = ort.SessionOptions()
            options.intra_op_num_threads = physical_cores()
            session = ort.InferenceSession(
                model if isinstance(model, bytes) else str(model),
                options,
                providers=["CPUExecutionProvider"],
            )
            self._fn = lambda x: session.run(None, {INPUT_NAME: x})[0]

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return np.asarray(self._fn(np.ascontiguousarray(x.numpy())))


def _save(method: str, quantized: Any, path: Path) -> list[Path]:
    """Write atomically: temp files beside ``path``, then rename (.bin before .xml)."""
    with atomic_path(path, path.suffix) as temp:
        if method != "openvino":
            temp.write_bytes(quantized)
            return [path]
        ov = require("openvino", "openvino")
        temp_bin = temp.with_suffix(".bin")
        try:
            ov.save_model(quantized, str(temp), compress_to_fp16=False)
            commit(temp_bin, path.with_suffix(".bin"))
        finally:
            temp_bin.unlink(missing_ok=True)
    return [path, path.with_suffix(".bin")]


def _fp32_size_mb(method: str, model: nn.Module, input_size: tuple[int, int, int]) -> float:
    if method == "onnxruntime":
        return len(onnx_bytes(fuse(model), torch.zeros(1, *input_size))) / 1e6
    ov = require("openvino", "openvino")
    with tempfile.TemporaryDirectory() as folder:
        xml = Path(folder, "fp32.xml")
        ov.save_model(
            openvino_model(fuse(model), torch.zeros(1, *input_size)),
            str(xml),
            compress_to_fp16=False,
        )
        return (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 1e6


def _latency_ms(run: _Runner, input_size: tuple[int, int, int]) -> float:
    from lightnets.analysis.timing import measure_latency

    x = torch.randn(1, *input_size)
    return measure_latency(lambda: run(x), warmup=5, min_iters=20, min_seconds=1.0).median_ms


def quantize(
    model: nn.Module,
    path: str | Path,
    calibration: Sequence[torch.Tensor],
    evaluation: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    input_size: tuple[int, int, int],
    *,
    method: str = "openvino",
    calibration_name: str = "synthetic",
) -> QuantizationReport:
    """Quantize ``model`` to int8, write it to ``path`` and measure what changed.

    ``path`` ends in ``.xml`` (OpenVINO IR, with ``.bin`` beside it) for ``openvino`` and in
    ``.onnx`` for ``onnxruntime``. ``evaluation`` batches with labels give top-1 accuracy of
    fp32 and int8; without labels, the share of images whose int8 top-1 equals fp32's.
    """
    if method not in METHODS:
        raise InvalidArgumentError(
            f"unknown quantization method {method!r}; allowed: {', '.join(METHODS)}"
        )
    path = check_writable(path)
    suffix = ".xml" if method == "openvino" else ".onnx"
    if path.suffix != suffix:
        raise InvalidArgumentError(f"--method {method} writes a {suffix} file; got {path}")
    model = model.eval()
    if method == "openvino":
        quantized: Any = quantize_openvino(model, calibration, input_size)
    else:
        quantized = quantize_onnxruntime(model, calibration, input_size)
    files = _save(method, quantized, path)
    int8_run = _Runner(method, path)
    if method == "openvino":
        fp32_run = _Runner(method, openvino_model(fuse(model), torch.zeros(1, *input_size)))
    else:
        fp32_run = _Runner(method, onnx_bytes(fuse(model), torch.zeros(1, *input_size)))

    correct_fp32 = correct_int8 = total = 0
    worst = 0.0
    labelled = bool(evaluation) and all(labels is not None for _, labels in evaluation)
    for images, labels in evaluation:
        with torch.inference_mode():
            reference = model(images).numpy()
        got = int8_run(images)
        worst = max(worst, float(np.abs(got - reference).max()))
        top_fp32, top_int8 = reference.argmax(1), got.argmax(1)
        if labelled:
            truth = labels.numpy()
            correct_fp32 += int((top_fp32 == truth).sum())
            correct_int8 += int((top_int8 == truth).sum())
        else:
            correct_fp32 += len(images)
            correct_int8 += int((top_fp32 == top_int8).sum())
        total += len(images)
    top1_fp32 = 100.0 * correct_fp32 / total if total else float("nan")
    top1_int8 = 100.0 * correct_int8 / total if total else float("nan")

    fp32_ms, int8_ms = _latency_ms(fp32_run, input_size), _latency_ms(int8_run, input_size)
    return QuantizationReport(
        path=str(path),
        method=method,
        calibration=calibration_name,
        calibration_images=sum(len(b) for b in calibration),
        fp32_size_mb=_fp32_size_mb(method, model, input_size),
        int8_size_mb=sum(f.stat().st_size for f in files) / 1e6,
        fp32_latency_ms=fp32_ms,
        int8_latency_ms=int8_ms,
        speedup=fp32_ms / int8_ms,
        eval_images=total,
        eval_metric="accuracy" if labelled else "agreement",
        fp32_top1=top1_fp32,
        int8_top1=top1_int8,
        top1_change=top1_int8 - top1_fp32,
        max_abs_diff=worst,
    )
