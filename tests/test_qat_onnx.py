"""``quantize --qat`` for ONNX Runtime and OpenVINO (issue 21): the QAT network as QDQ ONNX.

A MobileNet V2 0.35x (CIFAR stem: 52 convolutions, 10 residual adds) is trained briefly by
``lightnets train`` on real Fashion-MNIST, fine-tuned quantization-aware once by ``quantize
--qat --method onnxruntime``, and written for both runtimes. The oracles are independent of
the code under test: the converted PT2E network in PyTorch, ONNX Runtime's own optimised graph
(its fused int8 operators) and OpenVINO's compiled model (the precision it runs each layer in).
"""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch

from conftest import FASHION, silent_one_line
from lightnets.cli import main
from lightnets.deploy import qat as deploy_qat
from lightnets.deploy.metadata import read_metadata
from lightnets.deploy.openvino_runtime import compile_model

pytest.importorskip("executorch")  # the PT2E quantizer (XNNPACK's annotation)
pytest.importorskip("torchao")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

SIZE = (3, 16, 16)  # trained at 16 px: a quarter of the work of 32
CONVOLUTIONS, ADDS = 52, 10  # MobileNet V2: stem, 17 blocks (16 expanding), head; 10 residuals
IMAGES = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """``lightnets train`` for two epochs on 2,048 Fashion-MNIST images at 16 px (about 67%
    test top-1 in 20 s): its last.pt."""
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed in /usr/share/datasets/fashion-mnist")
    folder = tmp_path_factory.mktemp("qat_onnx_run")
    args = "train --device cpu --model mobilenet_v2 --width-mult 0.35 --dataset fashion-mnist "
    args += "--input-size 16 --train-subset 2048 --val-size 0 --epochs 2 --batch-size 32 "
    args += "--lr 0.05 --recipe cosine --warmup-epochs 0 -o"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*args.split(), str(folder / "run")]) == 0
    finally:
        torch.set_num_threads(threads)
    return folder / "run" / "last.pt"


def run_quantize(checkpoint, method, out) -> dict:
    """``lightnets quantize CHECKPOINT --qat --method METHOD -o OUT --json``: its report."""
    import contextlib
    import io

    # One thread: the resume test compares its own fine-tune with this one bit for bit. 7-bit
    # weights on every CPU (the default only where the kernels would saturate): one grid for
    # the assertions below, which hold with both.
    args = ["quantize", checkpoint, "--qat", "--method", method, "--device", "cpu", "--threads", 1]
    args += ["--reduce-range"]
    # No --input-size: quantize takes the size the run trained at (16 px, not the variant's 32).
    args += ["--eval-images", IMAGES, "-o", out, "--json"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([str(a) for a in args])
    assert code == 0
    return json.loads(buffer.getvalue())


@pytest.fixture(scope="module")
def written(checkpoint, tmp_path_factory):
    """The QAT fine-tune (run once, by the onnxruntime command) written as .onnx and as
    OpenVINO IR: {method: (path, report)}, and the converted PT2E network both came from."""
    folder = tmp_path_factory.mktemp("qat_onnx_files")
    results = []
    finetune = deploy_qat.finetune_qat

    def recorded(*args, **kwargs):
        if not results:  # the openvino command reuses the same fine-tuned network
            results.append(finetune(*args, **kwargs))
        return results[0]

    from lightnets.deploy import quantization

    exports = []
    export = quantization.exported_onnx_bytes

    def counted(*args, **kwargs):
        exports.append(args[1].shape)
        return export(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deploy_qat, "finetune_qat", recorded)
        patch.setattr(quantization, "exported_onnx_bytes", counted)
        files = {
            method: (path, run_quantize(checkpoint, method, path))
            for method, path in (
                ("onnxruntime", folder / "qat.onnx"),
                ("openvino", folder / "qat.xml"),
            )
        }
    # The OpenVINO IR is made from the very QDQ ONNX the first command exported: one export.
    assert exports == [(2, *SIZE)]
    return files, results[0]


def fashion_test_images() -> tuple[torch.Tensor, torch.Tensor]:
    from lightnets.deploy.quantization import calibration_data

    _, evals, _ = calibration_data(
        "fashion-mnist", input_size=SIZE, calibration_images=1, eval_images=IMAGES, val_size=0
    )
    return torch.cat([x for x, _ in evals]), torch.cat([y for _, y in evals])


def ort_session(path, *, optimize: bool = True, optimized=None):
    """ONNX Runtime on the CPU; ``optimize`` False: no graph optimisation (no int8 fusion);
    ``optimized``: where to save the optimised graph."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def output_step(converted: torch.nn.Module) -> float:
    """The scale of the int8 grid the converted network's logits are dequantized from."""
    (output,) = [n for n in converted.graph.nodes if n.op == "output"]
    dequantize = output.args[0][0]
    assert "dequantize_per_tensor" in str(dequantize.target)
    return float(dequantize.args[1])


def test_qat_onnx_is_qdq_and_runs_as_the_converted_network_in_int8_kernels(written, tmp_path):
    files, result = written
    path, report = files["onnxruntime"]
    assert report["training"] == "QAT" and report["calibration_images"] == 0
    assert report["fp32_top1"] > 50.0  # trained: agreeing on top-1 means something
    assert report["weights"] == "int8 symmetric per-channel, 7-bit range (-63..63)"
    assert report["activations"].startswith("uint8 asymmetric per-tensor")
    assert report["note"] == ""  # --reduce-range was asked for: nothing to explain
    assert "1 epoch on 2,048 fashion-mnist training images" in report["scheme"]
    graph = onnx.load(str(path)).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["Conv"] == CONVOLUTIONS and ops["QuantizeLinear"] > CONVOLUTIONS
    assert ops["DequantizeLinear"] > ops["QuantizeLinear"]  # and one per int8 weight
    int8 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8]
    assert len(weights) == CONVOLUTIONS + 1  # and the classifier's: stored as int8
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    largest = max(int(np.abs(stored[n.input[0]].astype(int)).max()) for n in weights)
    assert largest == 63  # the 7-bit grid the network trained on
    # The file is the converted network: ONNX Runtime without graph optimisations computes the
    # QDQ graph as ONNX defines it (dequantize, float convolution, quantize), and gives the
    # converted PT2E network's logits, on the same int8 grid, on real images. Measured on 1,000
    # test images: 99.6% of the logits identical, the rest 1 to 3 steps of the grid apart
    # (float sums in another order), top-1 the same on every image.
    images, labels = fashion_test_images()
    with torch.no_grad():
        expected = result.converted(images).numpy()
    step = output_step(result.converted)
    reference = ort_session(path, optimize=False).run(None, {"input": images.numpy()})[0]
    steps = np.abs(reference - expected) / step
    assert np.allclose(steps, np.round(steps), atol=1e-3)  # whole steps of the one grid
    assert steps.max() <= 3.001 and (steps < 0.5).mean() >= 0.98, (steps.max(), steps.mean())
    assert np.array_equal(reference.argmax(1), expected.argmax(1))
    # Run as it is served, ONNX Runtime fuses every quantize/dequantize pattern into its int8
    # kernels: no float convolution is left.
    optimized = tmp_path / "optimized.onnx"
    session = ort_session(path, optimized=optimized)
    fused = collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    assert fused["QLinearConv"] == CONVOLUTIONS and fused["Conv"] == 0
    assert fused["QLinearAdd"] == ADDS and fused["QGemm"] == 1
    # Integer requantization rounds differently from float: measured on 1,000 images, 74% of
    # the logits identical, top-1 the same on 93.9% (67.3% accurate against 67.5%).
    int8 = session.run(None, {"input": images.numpy()})[0]
    assert (int8.argmax(1) == expected.argmax(1)).mean() >= 0.85
    # The report measured that very runtime on those very images.
    assert report["int8_top1"] == pytest.approx(100.0 * (int8.argmax(1) == labels.numpy()).mean())
    meta = read_metadata(path)
    assert meta["precision"] == "int8" and meta["int8"]["scheme"] == report["scheme"]


def test_qat_openvino_ir_is_int8_and_agrees_with_onnxruntime(written):
    files, _ = written
    xml, report = files["openvino"]
    onnx_path, onnx_report = files["onnxruntime"]
    assert xml.with_suffix(".bin").is_file()
    assert report["training"] == "QAT" and report["scheme"] == onnx_report["scheme"]
    core = ov.Core()
    model = core.read_model(str(xml))
    kinds = collections.Counter(op.get_type_name() for op in model.get_ops())
    assert kinds["FakeQuantize"] > CONVOLUTIONS
    # f32 where not int8: OpenVINO's default on CPUs with bf16 instructions is bf16.
    compiled = compile_model(model, {"INFERENCE_PRECISION_HINT": "f32"})
    runs = collections.Counter(
        tuple(op.get_rt_info()[key].astype(str) for key in ("layerType", "runtimePrecision"))
        for op in compiled.get_runtime_model().get_ops()
    )
    # Every convolution and the classifier run in int8 (u8 activations, i8 weights).
    assert runs[("Convolution", "u8")] == CONVOLUTIONS and runs[("FullyConnected", "u8")] == 1
    images, labels = fashion_test_images()
    from_ov = compiled(images.numpy())[0]
    from_ort = ort_session(onnx_path).run(None, {"input": images.numpy()})[0]
    # Two runtimes' int8 arithmetic on one file: each rounds its requantization its own way,
    # so top-1 is not equal image for image. Measured on 1,000 test images: the same on 90.2%,
    # 66.8% accurate against ONNX Runtime's 67.3% (and the converted network's 67.5%).
    assert (from_ov.argmax(1) == from_ort.argmax(1)).mean() >= 0.8
    ov_top1 = 100.0 * (from_ov.argmax(1) == labels.numpy()).mean()
    ort_top1 = 100.0 * (from_ort.argmax(1) == labels.numpy()).mean()
    assert abs(ov_top1 - ort_top1) <= 10.0
    assert report["int8_top1"] == pytest.approx(ov_top1)  # the report ran the same IR
    meta = read_metadata(xml)
    assert meta["int8"]["training"] == "QAT" and meta["int8"]["method"] == "openvino"


def test_qat_for_coreml_is_refused_in_one_line(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.mlpackage"
    code = main(["quantize", str(checkpoint), "--qat", "--method", "coreml", "-o", str(out)])
    silent_one_line(
        capsys, code, "--qat supports only --method executorch, litert, onnxruntime or openvino"
    )
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_the_fine_tune_then_the_same_command_resumes_it_bitwise_equal(
    checkpoint, written, tmp_path, monkeypatch, capsys, ctrl_c
):
    """``quantize --qat`` keeps its fine-tune beside OUT: a Ctrl-C leaves its exact position
    there, the same command continues it and writes the very file an uninterrupted run does;
    other settings, or a changed checkpoint, are refused without touching it."""
    import shutil

    from lightnets.deploy.qat import SOURCE_FIELD
    from lightnets.train.checkpoint import load_checkpoint, save_checkpoint
    from lightnets.train.rundir import MARKER, read_marker
    from test_train_resume import _interrupt_at

    source = tmp_path / "last.pt"
    shutil.copy(checkpoint, source)

    def command(out, *extra, checkpoint=source):
        return ["quantize", str(checkpoint), "--qat", "--method", "onnxruntime", "--device", "cpu",
                "--threads", "1", "--eval-images", "16", "--reduce-range", "-o", str(out),
                *extra]  # fmt: skip

    def network(path) -> bytes:
        """The ONNX graph and its weights (the metadata names the checkpoint's path)."""
        model = onnx.load(str(path))
        model.ClearField("metadata_props")
        return model.SerializeToString()

    files, _ = written  # the same fine-tune, uninterrupted (its run removed once written)
    straight = files["onnxruntime"][0]
    assert sorted(p.name for p in straight.parent.iterdir()) == ["qat.bin", "qat.onnx", "qat.xml"]
    out = tmp_path / "qat.onnx"
    run_dir = out.with_suffix(".qat-run")
    _interrupt_at(monkeypatch, epoch=0, batch=20)  # after its 21st step of 64
    assert main(command(out)) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert f"interrupted: saved {run_dir / 'last.pt'} (epoch 1, step 21/64)" in err, err
    assert f"continue with the same command (lightnets quantize {source} --qat" in err, err
    assert not out.exists()
    saved = run_dir / "last.pt"
    assert load_checkpoint(saved)["step"] == 21
    marker = read_marker(run_dir / MARKER, "run")
    assert marker is not None and marker[SOURCE_FIELD]["path"] == str(source.resolve())
    before = saved.read_bytes()

    # Other settings, or another checkpoint under the same name: one line, the run kept.
    code = main(command(out, "--epochs", "2"))
    silent_one_line(capsys, code, f"{run_dir} holds an interrupted fine-tune", "--epochs 2, not 1")
    code = main(command(out, "--no-reduce-range"))  # another weight grid: another fine-tune
    silent_one_line(capsys, code, "--no-reduce-range, not --reduce-range")
    state = load_checkpoint(source)
    save_checkpoint(source, {**state, "note": "trained further"})
    code = main(command(out))
    silent_one_line(capsys, code, "a checkpoint other than", "(its bytes differ)", "--force")
    assert saved.read_bytes() == before and not out.exists()
    shutil.copy(checkpoint, source)

    # The same command resumes the fine-tune; a Ctrl-C after its last step, before the file is
    # written, keeps the finished run, from which the same command writes the file without
    # training again: the very bytes of the uninterrupted run.
    from lightnets.cli import quantize as quantize_command

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize_command, "_quantize", interrupted)
    moved = source.rename(tmp_path / "moved.pt")  # the same bytes under another name resume
    assert main(command(out, checkpoint=moved)) == 130
    monkeypatch.undo()
    moved.rename(source)
    assert "resuming at epoch 1" in capsys.readouterr().err
    assert load_checkpoint(saved)["epoch"] == 1 and not out.exists()
    assert main(command(out)) == 0
    err = capsys.readouterr().err
    assert "resuming after its last epoch" in err and "epoch 1/1" not in err, err
    assert network(out) == network(straight)
    assert not run_dir.exists()

    # --force starts a fine-tune of other settings over: the interrupted one is replaced.
    out.unlink()
    _interrupt_at(monkeypatch, epoch=0, batch=5)
    assert main(command(out)) == 130
    _interrupt_at(monkeypatch, epoch=0, batch=3)
    assert main(command(out, "--epochs", "2", "--force")) == 130
    monkeypatch.undo()
    capsys.readouterr()
    state = load_checkpoint(saved)
    assert state["step"] == 4 and state["config"]["recipe"]["epochs"] == 2
