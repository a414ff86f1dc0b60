"""Quantization-aware training (issue 21): the fake-quantized network, ``quantize --qat`` and
``train --qat-epochs``.

A MobileNet V1 0.25x (CIFAR stem) is trained by ``lightnets train`` on real Fashion-MNIST (a
subset, so the module stays short); the written int8 files are inspected with their runtime's
own tools (XNNPACK's serialised graph decompiled by flatc, the LiteRT interpreter's tensors) and
run in that runtime.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shlex
import tempfile

import numpy as np
import pytest
import torch

import lightnets
from conftest import FASHION
from lightnets.cli import main
from lightnets.deploy.exported import open_exported
from lightnets.train.checkpoint import load_checkpoint, model_from_checkpoint
from lightnets.train.qat import QatNetwork, fake_quant_modules

pytest.importorskip("executorch")
pytest.importorskip("litert_torch")
pytest.importorskip("torchao")

SIZE = (3, 32, 32)
EVAL_IMAGES = 1000


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of `lightnets train` on 4,096 Fashion-MNIST images, 2 epochs: its last.pt."""
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed in /usr/share/datasets/fashion-mnist")
    folder = tmp_path_factory.mktemp("qat_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(
            [
                "train",
                "--device",
                "cpu",
                "--model",
                "mobilenet_v1",
                "--width-mult",
                "0.25",
                "--dataset",
                "fashion-mnist",
                "--train-subset",
                "4096",
                "--val-size",
                "0",
                "--epochs",
                "2",
                "--batch-size",
                "64",
                "--lr",
                "0.05",
                "-o",
                str(folder / "run"),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return folder / "run" / "last.pt"


def test_fake_quantization_trains_the_models_own_tensors_and_convert_removes_it():
    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v1", variant="cifar", num_classes=10, width_mult=0.25)
    qat = QatNetwork(model, "executorch", SIZE)
    fakes = fake_quant_modules(qat.module)
    # One per convolution weight (27) and the classifier's, plus the activations between them.
    assert len(fakes) > 28
    x, y = torch.randn(16, *SIZE), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)  # the fp32 model's parameters
    bn = model.features[0][1]
    before = bn.running_mean.clone()
    weight = model.features[0][0].weight.detach().clone()
    torch.nn.functional.cross_entropy(qat.module(x), y).backward()
    optimizer.step()
    # The prepared graph shares the model's tensors: its training moved them.
    assert not torch.equal(model.features[0][0].weight, weight)
    assert not torch.equal(bn.running_mean, before)
    qat.freeze_batchnorm()
    frozen = bn.running_mean.clone()
    qat.module(x)
    assert torch.equal(bn.running_mean, frozen)  # frozen statistics no longer move
    qat.module.eval()
    scales = [f.scale.clone() for f in fakes]
    with torch.no_grad():
        simulated = qat.module(x)
    assert all(torch.equal(f.scale, s) for f, s in zip(fakes, scales, strict=True))  # eval: fixed
    converted = qat.convert()
    assert fake_quant_modules(converted) == []
    assert fake_quant_modules(qat.module) == fakes  # the QAT network is left as it was
    ops = {str(n.target) for n in converted.graph.nodes if n.op == "call_function"}
    assert "quantized_decomposed.dequantize_per_channel.default" in ops
    assert "quantized_decomposed.quantize_per_tensor.default" in ops
    with torch.no_grad():
        int8 = converted(x)
    # The fake-quantized network computes what the int8 one does, up to rounding of a few
    # activations; fp32 is much further away.
    scale = simulated.abs().max()
    assert (int8 - simulated).abs().max() < 0.1 * scale
    model.eval()
    with torch.no_grad():
        assert (int8 - simulated).abs().max() < (model(x) - simulated).abs().max()


def test_reduced_range_trains_and_converts_the_weights_on_the_7_bit_grid():
    """ONNX Runtime's and OpenVINO's u8 x s8 kernels saturate on x86 without VNNI: there the
    weights train on -63..63 (two products of a uint8 activation sum to at most 32,130)."""
    from lightnets.analysis import machine
    from lightnets.errors import InvalidArgumentError
    from lightnets.train import qat as train_qat

    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v1", variant="cifar", num_classes=10, width_mult=0.25)
    reduced = QatNetwork(model, "onnxruntime", SIZE, reduce_range=True)
    assert reduced.weights == "int8 symmetric per-channel, 7-bit range (-63..63)"
    weights = [f for f in fake_quant_modules(reduced.module) if f.dtype == torch.int8]
    assert len(weights) == 28  # 27 convolutions and the classifier
    assert {(f.quant_min, f.quant_max) for f in weights} == {(-63, 63)}
    reduced.module(torch.randn(8, *SIZE))  # one training step's ranges
    converted = reduced.convert()
    stored = [t for t in converted.state_dict().values() if t.dtype == torch.int8]
    assert len(stored) == 28 and max(int(t.abs().max()) for t in stored) == 63
    full = train_qat.backend_quantizer("onnxruntime", qat=True).global_config.weight
    assert (full.quant_min, full.quant_max) == (-127, 127)  # without it: 8 bits, as XNNPACK's
    # The default follows the CPU, for the runtimes whose kernels saturate only.
    for saturates in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(machine, "int8_pairs_saturate", lambda answer=saturates: answer)
            assert train_qat.default_reduce_range("onnxruntime") is saturates
            assert train_qat.default_reduce_range("openvino") is saturates
            assert train_qat.default_reduce_range("executorch") is False
            assert train_qat.default_reduce_range("coreml") is False
    with pytest.raises(InvalidArgumentError, match="--reduce-range applies to onnxruntime or"):
        train_qat.check_reduce_range("litert", True, "--reduce-range")
    assert train_qat.check_reduce_range("litert", False, "--reduce-range") is False


def xnnpack_graph(path) -> str:
    """The .pte's XNNPACK delegate graph as JSON text, decompiled by flatc with XNNPACK's
    own schema (the program's first delegate)."""
    import executorch.backends.xnnpack.serialization as serialization
    from executorch.exir._serialize._flatbuffer import _flatc_decompile
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(path.read_bytes()).program
    delegate = program.execution_plan[0].delegates[0]
    assert delegate.id == "XnnpackBackend"
    blob = bytes(program.backend_delegate_data[delegate.processed.index].data)
    assert blob[4:8] == b"XH00"  # XNNPACK's header: flatbuffer offset and size follow
    offset, size = (int.from_bytes(blob[i : i + 4], "little") for i in (10, 14))
    schema = os.path.join(next(iter(serialization.__path__)), "schema.fbs")
    with tempfile.TemporaryDirectory() as folder:
        graph = os.path.join(folder, "graph.bin")
        with open(graph, "wb") as handle:
            handle.write(blob[offset : offset + size])
        _flatc_decompile(folder, schema, graph)
        with open(os.path.join(folder, "graph.json"), encoding="utf-8") as handle:
            return handle.read()


def tflite_conv_input_types(path) -> collections.Counter:
    """(operator, dtype of its input and weights) of every convolution LiteRT runs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found = collections.Counter()
    for op in interpreter._get_ops_details():
        if "CONV" in op["op_name"]:
            kinds = tuple(np.dtype(tensors[i]["dtype"]).name for i in op["inputs"][:2])
            found[(op["op_name"], kinds)] += 1
    return found


def quantize(capsys, checkpoint, method, out, *extra) -> dict:
    """``lightnets quantize ... --json`` run in this process; its report."""
    args = ["quantize", checkpoint, "--method", method, "--eval-images", EVAL_IMAGES]
    args += ["--calibration-images", 256, "-o", out, "--json", *extra]
    if capsys is not None:
        code, stdout, err = cli(capsys, *args)
    else:  # module fixtures have no capsys: read stdout directly
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            code = main([str(a) for a in args])
        stdout, err = buffer.getvalue(), "see stderr"
    assert code == 0, err
    return json.loads(stdout)


def held_out_top1(path) -> float:
    from lightnets.deploy.quantization import calibration_data

    _, evals, _ = calibration_data(
        "fashion-mnist", input_size=SIZE, calibration_images=1, eval_images=EVAL_IMAGES, val_size=0
    )
    run = open_exported(path)
    correct = sum(int((run(x).argmax(1) == y).sum()) for x, y in evals)
    return 100.0 * correct / EVAL_IMAGES


@pytest.fixture(scope="module")
def qat_files(trained, tmp_path_factory):
    """``quantize --qat`` of the run for each device method (default schedule: 1 epoch, 10%
    of the 2-epoch run rounded up): {method: (its file, its --json report)}."""
    folder = tmp_path_factory.mktemp("qat_files")
    files = {}
    for method, suffix in (("executorch", "pte"), ("litert", "tflite")):
        out = folder / f"qat.{suffix}"
        files[method] = (out, quantize(None, trained, method, out, "--qat", "--device", "cpu"))
    return files


@pytest.mark.parametrize("method", ["executorch", "litert"])
def test_quantize_qat_writes_an_int8_file_that_runs_in_its_runtime(qat_files, method):
    out, report = qat_files[method]
    assert report["training"] == "QAT" and report["calibration_images"] == 0
    assert report["weights"] == "int8 symmetric per-channel"
    assert report["activations"].startswith("int8 asymmetric per-tensor")
    assert "1 epoch on 4,096 fashion-mnist training images" in report["scheme"]
    assert report["fp32_top1"] > 60.0  # trained: the comparison means something
    assert report["within_budget"], report
    assert report["int8_size_mb"] < report["fp32_size_mb"] / 2.5
    if method == "executorch":
        graph = xnnpack_graph(out)
        types = collections.Counter(re.findall(r'"datatype": "(\w+)"', graph))
        # 27 convolutions with per-channel int8 weights (qcint8), int8 activations between.
        assert types["xnn_datatype_qcint8"] == 27 and types["xnn_datatype_qint8"] >= 27
        nodes = collections.Counter(re.findall(r'"xnode_union_type": "(\w+)"', graph))
        assert nodes["XNNConv2d"] + nodes["XNNDepthwiseConv2d"] == 27
    else:
        convs = tflite_conv_input_types(out)
        assert sum(convs.values()) == 27
        assert set(convs) == {
            ("CONV_2D", ("int8", "int8")),
            ("DEPTHWISE_CONV_2D", ("int8", "int8")),
        }
    # The runtime, run on the same held-out images, gives exactly the reported accuracy.
    assert held_out_top1(out) == pytest.approx(report["int8_top1"])
    meta = lightnets.deploy.metadata.read_metadata(out)
    assert meta["int8"]["training"] == "QAT" and meta["int8"]["scheme"] == report["scheme"]


def test_qat_loses_no_more_than_post_training_quantization(trained, qat_files, tmp_path, capsys):
    ptq = quantize(capsys, trained, "executorch", tmp_path / "ptq.pte", "--per-tensor")
    assert ptq["training"] == "PTQ" and ptq["weights"] == "int8 symmetric per-tensor"
    assert "256 fashion-mnist calibration images" in ptq["scheme"]
    _, qat = qat_files["executorch"]
    assert qat["fp32_top1"] == ptq["fp32_top1"]  # the same fp32 network and images
    assert qat["int8_top1"] >= ptq["int8_top1"], (qat["scheme"], ptq["scheme"])


@pytest.mark.parametrize(
    "args, expected",
    [
        (["mobilenet_v1", "--qat"], "--qat needs a training checkpoint"),
        (["CKPT", "--qat", "--epochs", "0"], "--epochs=0 is not allowed"),
        (["CKPT", "--qat", "--method", "nosuch"], "unknown quantization method 'nosuch'"),
        (["CKPT", "--qat", "--method", "coreml"], "--qat supports only --method executorch"),
        (["CKPT", "--lr", "0.01"], "--lr applies only with --qat"),
    ],
)
def test_bad_qat_requests_are_one_line_and_write_nothing(trained, args, expected, tmp_path, capsys):
    args = [str(trained) if a == "CKPT" else a for a in args]
    if "--method" not in args:
        args += ["--method", "executorch"]
    code, out, err = cli(capsys, "quantize", *args, "-o", tmp_path / "m.pte")
    assert code == 2 and out == ""
    assert err.startswith("lightnets quantize: error: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_qat_network_is_written_only_for_a_runtime_sharing_its_quantizer(tmp_path):
    from lightnets.deploy.qat import QatResult
    from lightnets.deploy.quantization import quantize as quantize_model
    from lightnets.errors import InvalidArgumentError

    model = lightnets.create_model("mobilenet_v1", variant="cifar", width_mult=0.25)
    fields = dict(converted=torch.nn.Identity(), quantizer=None, epochs=1, lr=1e-3)
    fields.update(train_images=1, dataset="synthetic", weights="", activations="")
    for trained_for, method, suffix in [
        ("executorch", "litert", ".tflite"),
        ("litert", "executorch", ".pte"),
        ("onnxruntime", "executorch", ".pte"),
    ]:
        result = QatResult(method=trained_for, **fields)
        with pytest.raises(InvalidArgumentError, match=f"fine-tuned .* for {trained_for}"):
            quantize_model(model, tmp_path / f"m{suffix}", [], [], SIZE, method=method, qat=result)
    assert list(tmp_path.iterdir()) == []
    # ONNX Runtime's and OpenVINO's int8 come from one quantizer: one fine-tune serves both
    # (tests/test_qat_onnx.py writes both from it).
    from lightnets.deploy.qat import check_qat_result

    check_qat_result(QatResult(method="onnxruntime", **fields), "openvino")


def test_the_fine_tune_keeps_the_runs_network_and_optimiser_and_names_its_own_schedule(tmp_path):
    """A 5-epoch SqueezeNet run records ``onecycle (...; squeezenet1_1's defaults: --optimizer
    adamw --lr 0.001 ... --batch-norm)``. Its default fine-tune trains that network (BatchNorm)
    with that optimiser, 1 epoch of cosine from 1% of the peak, and its first line says so (it
    said the run's one-cycle recipe, which the fine-tune does not run)."""
    from lightnets.deploy.qat import qat_finetune_config, qat_plan
    from lightnets.train.config import TrainConfig, flag_for
    from lightnets.train.recipes import resolve_recipe

    resolved = resolve_recipe("squeezenet1_1", epochs=5, model_hparams={})
    run = TrainConfig(
        model="squeezenet1_1",
        model_hparams=resolved.model_hparams,
        output=str(tmp_path / "run"),
        dataset="fashion-mnist",
        recipe=resolved.recipe,
        recipe_source=resolved.describe(flag_for),
    )
    assert run.recipe_source.startswith("onecycle") and "--batch-norm" in run.recipe_source
    stored, epochs, lr = qat_plan({"config": run.to_dict()}, "last.pt", epochs=None, lr=None)
    assert (epochs, lr) == (1, pytest.approx(1e-5))
    checkpoint = tmp_path / "run" / "last.pt"
    config = qat_finetune_config(
        stored, checkpoint, "litert", epochs=epochs, lr=lr, output=tmp_path / "qat"
    )
    assert config.recipe_source == (
        "cosine (a quantization-aware fine-tune of last.pt for litert: peak lr 1e-05, no warm-up)"
    )
    recipe = config.recipe
    assert (recipe.schedule, recipe.epochs, recipe.lr, recipe.warmup_epochs) == ("cosine", 1, lr, 0)
    assert (recipe.optimizer, recipe.batch_size) == ("adamw", 16)
    assert config.model_hparams == {"batch_norm": True}
    assert (config.weights, config.output) == (str(checkpoint), str(tmp_path / "qat"))
    assert (config.qat_epochs, config.qat_backend) == (1, "litert")


def test_train_qat_epochs_records_qat_and_eval_reports_both_precisions(trained, tmp_path, capsys):
    run = tmp_path / "qat_run"
    # The CPU everywhere: a GPU machine would default to CUDA (and bf16), which QAT's tests do not
    # cover.
    common = ["--model", "mobilenet_v1", "--width-mult", "0.25", "--dataset", "fashion-mnist"]
    common += ["--device", "cpu"]
    code, out, err = cli(
        capsys,
        "train",
        *common,
        "--train-subset",
        "1024",
        "--val-size",
        "0",
        "--epochs",
        "2",
        "--qat-epochs",
        "1",
        "--batch-size",
        "64",
        "-o",
        run,
    )
    assert code == 0, err
    assert "quantization-aware training from epoch 2" in out
    state = load_checkpoint(run / "last.pt")
    qat = state["qat"]
    assert qat["backend"] == "executorch" and qat["start_epoch"] == 1 and qat["epochs"] == 1
    assert qat["reduce_range"] is False  # XNNPACK's kernels do not saturate: 8-bit everywhere
    assert qat["freeze_bn_step"] == 16 + 8  # halfway through the 16 quantization-aware steps
    assert any(k.startswith("activation_post_process_") for k in qat["state"])
    model, _ = model_from_checkpoint(run / "last.pt")  # the fp32 weights load as a plain model
    assert sum(p.numel() for p in model.parameters()) == state["params"]
    summary = json.loads((run / "summary.json").read_text())
    code, out, err = cli(capsys, "eval", "--checkpoint", run / "last.pt", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["images"] == result["int8"]["images"] == 10000
    assert "QAT for executorch" in result["int8"]["scheme"]
    # The int8 network (quantize/dequantize) and the fake-quantized one the run tested agree.
    assert abs(result["int8"]["top1"] - summary["test_top1"]) <= 0.005
    # Refusals: settings an exported graph cannot take, and more QAT epochs than the run.
    for extra, expected in (
        (["--ema", "0.99"], "--qat-epochs does not combine with --ema"),
        (["--qat-epochs", "3"], "--qat-epochs=3 is not allowed"),
        (["--qat-reduce-range"], "--qat-reduce-range applies to onnxruntime or openvino"),
        (["--qat-epochs", "0", "--no-qat-reduce-range"], "applies only with --qat-epochs"),
    ):
        code, out, err = cli(
            capsys,
            "train",
            *common,
            "--epochs",
            "2",
            "--qat-epochs",
            "1",
            *extra,
            "-o",
            tmp_path / "refused",
        )
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "refused").exists()
    # A plain checkpoint has no int8 row in eval.
    code, out, _ = cli(capsys, "eval", "--checkpoint", trained, "--json")
    assert code == 0 and "int8" not in json.loads(out)


QAT_RUN = shlex.split(
    "train --model mobilenet_v1 --width-mult 0.25 --drop-rate 0.3 --dataset synthetic "
    "--input-size 16 --train-subset 96 --val-size 32 --batch-size 32 --epochs 2 "
    "--qat-epochs 1 --recipe cosine --warmup-epochs 0.5 --lr 0.2 --deterministic --seed 1 "
    "--device cpu"
)


def test_ctrl_c_in_the_qat_epochs_then_resume_is_bitwise_equal(
    tmp_path, monkeypatch, capsys, ctrl_c
):
    from test_train_resume import _interrupt_at

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*QAT_RUN, "--output", str(straight)]) == 0
    # Ctrl-C after the first quantization-aware step (3 steps an epoch; BatchNorm freezes at
    # step 5 of 6, after the resume).
    _interrupt_at(monkeypatch, epoch=1, batch=1)
    assert main([*QAT_RUN, "--output", str(resumed)]) == 130
    state = load_checkpoint(resumed / "last.pt")
    assert (state["epoch"], state["step"]) == (1, 2) and state["qat"]["freeze_bn_step"] == 5
    monkeypatch.undo()
    assert main(["train", "--resume", str(resumed)]) == 0
    capsys.readouterr()
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    for key in ("model",):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), name
    qa, qb = a["qat"]["state"], b["qat"]["state"]
    assert qa.keys() == qb.keys()
    for name in qa:
        assert torch.equal(qa[name], qb[name]), name
    summary_a = json.loads((straight / "summary.json").read_text())
    summary_b = json.loads((resumed / "summary.json").read_text())
    assert summary_a["test_top1"] == summary_b["test_top1"]
    assert summary_a["test_loss"] == summary_b["test_loss"]
