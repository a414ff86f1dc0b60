"""int8 post-training quantization: both methods write a smaller model that still agrees."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import lightnets
from lightnets.deploy.quantization import calibration_data, quantize, synthetic_batches
from lightnets.errors import InvalidArgumentError
from test_deploy_fuse import randomize_batchnorm

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = lightnets.create_model("mobilenet_v1", variant="cifar", num_classes=10, width_mult=0.5)
    return randomize_batchnorm(net)


@pytest.mark.parametrize(
    ("method", "suffix", "modules"),
    [("openvino", ".xml", ("openvino", "nncf")), ("onnxruntime", ".onnx", ("onnxruntime",))],
)
def test_quantize_writes_a_smaller_int8_model(model, tmp_path, method, suffix, modules):
    for module in modules:
        pytest.importorskip(module)
    calib, evals, classes = calibration_data(
        "synthetic", input_size=SIZE, calibration_images=32, eval_images=64, batch_size=16
    )
    assert classes is None and all(labels is None for _, labels in evals)
    path = tmp_path / f"int8{suffix}"
    loggers = [logging.getLogger(), logging.getLogger("nncf")]
    before = [(lg.level, [(h, h.level) for h in lg.handlers], list(lg.filters)) for lg in loggers]
    report = quantize(model, path, calib, evals, SIZE, method=method)
    after = [(lg.level, [(h, h.level) for h in lg.handlers], list(lg.filters)) for lg in loggers]
    assert after == before  # NNCF's and ONNX Runtime's logging changes are undone
    assert path.exists() and report.path == str(path)
    params = sum(p.numel() for p in model.parameters())
    assert report.fp32_size_mb >= 4 * params / 1e6 * 0.95
    assert report.int8_size_mb < report.fp32_size_mb / 2.5  # int8 weights, not float
    assert report.eval_metric == "agreement" and report.eval_images == 64
    assert report.fp32_top1 == 100.0 and report.int8_top1 >= 50.0
    assert report.top1_change == pytest.approx(report.int8_top1 - 100.0)
    assert 0 < report.max_abs_diff < 0.5 * _logit_range(model, evals)
    assert report.speedup == pytest.approx(report.fp32_latency_ms / report.int8_latency_ms)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _logit_range(model, evals) -> float:
    with torch.no_grad():
        out = torch.cat([model(x) for x, _ in evals])
    return float(out.max() - out.min())


def test_bad_arguments(model, tmp_path):
    calib = synthetic_batches(SIZE, count=4, batch_size=4)
    with pytest.raises(InvalidArgumentError, match="allowed: openvino, onnxruntime"):
        quantize(model, tmp_path / "m.xml", calib, [], SIZE, method="tflite")
    with pytest.raises(InvalidArgumentError, match=r"writes a \.onnx file"):
        quantize(model, tmp_path / "m.xml", calib, [], SIZE, method="onnxruntime")
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        quantize(model, tmp_path / "no" / "m.xml", calib, [], SIZE)
    with pytest.raises(InvalidArgumentError, match="allowed: fashion-mnist, mnist, cifar10"):
        calibration_data("imagenet", input_size=SIZE)


def test_synthetic_batches_are_seeded_and_sized():
    a = synthetic_batches(SIZE, count=10, batch_size=4)
    assert [len(b) for b in a] == [4, 4, 2]
    b = synthetic_batches(SIZE, count=10, batch_size=4)
    assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b, strict=True))
