"""Export: each file runs in its own runtime, has a dynamic batch, and is written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import lightnets
from lightnets.deploy import exporters as export_module
from lightnets.deploy.exporters import ExportVerificationError, export
from lightnets.errors import InvalidArgumentError
from test_deploy_fuse import randomize_batchnorm

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = lightnets.create_model("shufflenet_v2", variant="cifar", num_classes=10, width_mult=0.5)
    return randomize_batchnorm(net)


def reference(model, batch: int, seed: int = 5):
    x = torch.randn(batch, *SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).numpy()


def test_onnx_has_dynamic_batch_no_batchnorm_and_matches(model, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "m.onnx"
    result = export(model, path, "onnx", SIZE)
    assert result.files == (path,) and result.fused and result.max_abs_diff < 1e-4
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version >= 17
    assert "BatchNormalization" not in {node.op_type for node in graph.graph.node}
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, expected = reference(model, 5)
    got = session.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4 * max(1, np.abs(expected).max()))
    assert np.abs(expected).max() > 1e-2
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_torchscript_loads_with_torch_jit_and_matches(model, tmp_path):
    path = tmp_path / "m.pt"
    export(model, path, "torchscript", SIZE, fuse=False)
    loaded = torch.jit.load(str(path))
    x, expected = reference(model, 4)
    np.testing.assert_allclose(loaded(x).detach().numpy(), expected, atol=1e-5)


def test_openvino_ir_keeps_fp32_weights_and_dynamic_batch(model, tmp_path):
    ov = pytest.importorskip("openvino")
    path = tmp_path / "m.xml"
    result = export(model, path, "openvino", SIZE)
    assert result.files == (path, tmp_path / "m.bin")
    params = sum(p.numel() for p in lightnets.deploy.fuse(model).parameters())
    assert (tmp_path / "m.bin").stat().st_size >= 4 * params  # float32, not fp16
    read = ov.Core().read_model(str(path))
    assert read.input(0).get_partial_shape()[0].is_dynamic
    compiled = ov.Core().compile_model(read, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x, expected = reference(model, 2)
    np.testing.assert_allclose(compiled(x.numpy())[0], expected, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]


def test_failed_verification_keeps_the_existing_file(model, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous export")

    def wrong(*args, **kwargs):
        raise ExportVerificationError("exported model disagrees with PyTorch at batch 1")

    monkeypatch.setattr(export_module, "_compare", wrong)
    with pytest.raises(ExportVerificationError):
        export(model, path, "onnx", SIZE)
    assert path.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp file left


def test_unknown_format_and_unwritable_paths(model, tmp_path):
    with pytest.raises(InvalidArgumentError, match="allowed: onnx, torchscript, openvino"):
        export(model, tmp_path / "m.x", "tflite", SIZE)
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        export(model, tmp_path / "missing" / "m.onnx", "onnx", SIZE)
    with pytest.raises(InvalidArgumentError, match="directory"):
        export(model, tmp_path, "onnx", SIZE)
    with pytest.raises(InvalidArgumentError, match=r"\.xml"):
        export(model, tmp_path / "m.onnx", "openvino", SIZE)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InvalidArgumentError, match="not writable"):
            export(model, Path(locked, "m.onnx"), "onnx", SIZE)
