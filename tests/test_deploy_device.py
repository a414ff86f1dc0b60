"""Device formats: pt2, ExecuTorch .pte, LiteRT .tflite, Core ML .mlpackage.

Each file is exported once (module scope: ExecuTorch's lowering takes seconds even for the
smallest network), reloaded in its own runtime and compared with eager PyTorch; predict on it
gives the checkpoint's answer; int8 stays within the budget on Fashion-MNIST; bad files and
requests are one line, exit status 2, nothing written.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import lightnets
from conftest import FASHION, odd_size_images, train_briefly
from lightnets.cli import main
from lightnets.deploy import coreml
from lightnets.deploy.device_formats import DEVICE_FORMATS, describe
from lightnets.deploy.exported import open_exported
from lightnets.deploy.exporters import TORCHSCRIPT_NOTE, format_metadata
from lightnets.deploy.metadata import detect_format, metadata_for, read_metadata
from lightnets.train.checkpoint import save_checkpoint
from test_deploy_fuse import randomize_batchnorm

pytest.importorskip("executorch")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("coremltools")

SIZE = (3, 32, 32)
SUFFIXES = {"pt2": "pt2", "executorch": "pte", "litert": "tflite", "coreml": "mlpackage"}
needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST not installed")


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """MobileNet V1 0.25x (CIFAR stem, 10 classes) briefly trained on real Fashion-MNIST when
    it is installed (else BatchNorm randomised, Fashion-MNIST's metadata), and three odd-sized
    grayscale images."""
    from lightnets.data import load_splits, make_loader

    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v1", variant="cifar", num_classes=10, width_mult=0.25)
    if FASHION.is_dir():
        splits = load_splits("fashion-mnist", train_subset=4800)
        train_briefly(model, make_loader(splits.train, splits, batch_size=32, train=False))
        dataset = splits.metadata()
    else:
        randomize_batchnorm(model)
        dataset = {
            "name": "fashion-mnist",
            "classes": [f"class{i}" for i in range(10)],
            "mean": [0.2860] * 3,
            "std": [0.3530] * 3,
            "input_size": list(SIZE),
        }
    folder = tmp_path_factory.mktemp("device")
    path = folder / "fm.pt"
    save_checkpoint(
        path, {"hparams": model.hparams, "model": model.state_dict(), "dataset": dataset}
    )
    images = odd_size_images(folder)
    return path, images, model.eval()


@pytest.fixture(scope="module")
def exports(checkpoint, tmp_path_factory):
    """The checkpoint exported in every device format, through the CLI."""
    path, _, _ = checkpoint
    folder = tmp_path_factory.mktemp("device_exports")
    outputs = {}
    for fmt, ext in SUFFIXES.items():
        code = main(["export", str(path), "--format", fmt, "-o", f"{folder}/"])
        assert code == 0, fmt
        outputs[fmt] = folder / f"fm.{ext}"
    return outputs


def reference(model, batch: int, seed: int = 3):
    x = torch.randn(batch, *SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).numpy()


def assert_close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))


def test_each_file_reproduces_eager_in_its_own_runtime(checkpoint, exports):
    _, _, model = checkpoint
    x, expected = reference(model, 1)
    # ExecuTorch: the runtime an app links, through its Python bindings.
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(exports["executorch"]).load_method("forward")
    assert_close(method.execute([x])[0].numpy(), expected)
    # LiteRT: ai_edge_litert's Interpreter, XNNPACK delegate, NCHW float input.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(exports["litert"]))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(inp["shape"]) == [1, *SIZE] and inp["dtype"] == np.float32
    interpreter.set_tensor(inp["index"], x.numpy())
    interpreter.invoke()
    assert_close(interpreter.get_tensor(out["index"]), expected)
    # pt2: torch.export.load, with a dynamic batch.
    program = torch.export.load(str(exports["pt2"])).module()
    x5, expected5 = reference(model, 5)
    assert_close(program(x5).detach().numpy(), expected5)
    # The mobile files take any batch through lightnets, one image per call.
    for fmt in ("executorch", "litert"):
        assert_close(open_exported(exports[fmt])(x5).numpy(), expected5)
    assert np.abs(expected5).max() > 1e-2  # a real output scale: the comparison means something


def test_core_ml_package_declares_an_image_input_and_the_logits(checkpoint, exports):
    _, _, model = checkpoint
    summary = coreml.spec_summary(exports["coreml"])
    assert summary["image"] == {"width": 32, "height": 32, "color_space": "GRAYSCALE"}
    assert summary["input_name"] == "image" and summary["output_name"] == "logits"
    assert summary["output_shape"] == [1, 10]
    # Fashion-MNIST has one std: ImageType folds all of (p / 255 - mean) / std, and the
    # network Core ML runs (gray repeated to 3 channels) equals eager on the same pixels.
    meta = read_metadata(exports["coreml"])
    std, mean = meta["preprocessing"]["std"][0], meta["preprocessing"]["mean"]
    assert meta["input"]["image_scale"] == pytest.approx(1 / (255 * std))
    assert meta["input"]["image_bias"] == pytest.approx([-mean[0] / std])
    assert meta["input"]["per_channel_scale_in_model"] is None
    norm = coreml.ImageNormalisation.from_metadata(meta)
    pixels = torch.randint(0, 256, (2, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    wrapped = coreml.PixelInput(model, norm.channel_scale, norm.gray).eval()
    normalised = ((pixels / 255 - mean[0]) / std).expand(-1, 3, -1, -1)
    with torch.no_grad():
        assert_close(wrapped(norm.apply(pixels)).numpy(), model(normalised).numpy())


def test_per_channel_std_is_a_first_multiply_inside_the_core_ml_model(checkpoint, tmp_path):
    _, _, model = checkpoint
    meta = format_metadata("coreml", metadata_for(model, None, SIZE), SIZE)  # ImageNet stats
    norm = coreml.ImageNormalisation.from_metadata(meta)
    assert not norm.gray and norm.scale == pytest.approx(1 / 255)
    assert norm.channel_scale == pytest.approx([1 / 0.229, 1 / 0.224, 1 / 0.225])
    pixels = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(2))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    wrapped = coreml.PixelInput(model, norm.channel_scale, norm.gray).eval()
    with torch.no_grad():
        assert_close(
            wrapped(norm.apply(pixels)).numpy(), model((pixels / 255 - mean) / std).numpy()
        )


def test_metadata_travels_inside_every_file(checkpoint, exports, capsys):
    path, _, model = checkpoint
    state = torch.load(path, weights_only=True)
    for fmt, file in exports.items():
        assert detect_format(file) == fmt
        want = json.loads(json.dumps(format_metadata(fmt, metadata_for(model, state, SIZE), SIZE)))
        assert read_metadata(file) == want, fmt
        code, out, _ = cli(capsys, "export", "--print-metadata", file)
        assert code == 0 and json.loads(out) == want
        assert want["classes"] == state["dataset"]["classes"]
    assert not any(p.name.endswith(".json") for p in exports["pt2"].parent.iterdir())  # no sidecar
    assert {row["format"]: row["runs_code"] for row in describe()} == {
        "pt2": True,
        "executorch": False,
        "litert": False,
        "coreml": False,
    }


def predictions(capsys, name, images, *extra) -> list[dict]:
    code, out, err = cli(capsys, "predict", name, *images, "--topk", "5", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_predict_on_a_device_file_gives_the_checkpoints_answer(checkpoint, exports, capsys):
    path, images, _ = checkpoint
    want = predictions(capsys, path, images)
    for fmt in ("executorch", "litert", "pt2"):
        got = predictions(capsys, exports[fmt], images, *(["--trust-code"] if fmt == "pt2" else []))
        for a, b in zip(want, got, strict=True):
            assert [t["class"] for t in a["topk"]] == [t["class"] for t in b["topk"]], fmt
            for ta, tb in zip(a["topk"], b["topk"], strict=True):
                assert tb["probability"] == pytest.approx(ta["probability"], abs=1e-5)


def test_bench_times_a_device_file_in_its_runtime(exports, capsys, monkeypatch):
    import lightnets.deploy.bench

    monkeypatch.setattr(lightnets.deploy.bench, "_peak_gflops", lambda: None)  # not tested here
    code, out, err = cli(capsys, "bench", exports["litert"], "--seconds", "0.02", "--json")
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["backend"] == "litert file" and record["model"] == "mobilenet_v1"
    assert record["latency_ms_median"] > 0


def test_a_pt2_is_not_loaded_without_trust(checkpoint, exports, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("torch.export.load called on an untrusted file")

    monkeypatch.setattr(torch.export, "load", never)
    code, out, err = cli(capsys, "predict", exports["pt2"], checkpoint[1][0])
    assert code == 2 and out == ""
    assert "--trust-code" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "bench", exports["pt2"])
    assert code == 2 and "--trust-code" in err


def _with_foreign_tflite_op(source, target):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(source.read_bytes(), 0)
    code = model.operatorCodes[0]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "FlexReadFile"
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    target.write_bytes(bytes(builder.Output()))


def _with_foreign_pte_delegate(source, target):
    from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary
    from executorch.exir.schema import Operator

    pte = deserialize_pte_binary(source.read_bytes())
    plan = pte.program.execution_plan[0]
    plan.delegates[0].id = "SomeVendorBackend"
    plan.operators.append(Operator("llama::update_cache", "out"))
    target.write_bytes(bytes(serialize_pte_binary(pte, extract_delegate_segments=True)))


def test_operators_outside_the_allowlist_are_refused_unless_trusted(
    checkpoint, exports, tmp_path, capsys
):
    tflite, pte = tmp_path / "custom.tflite", tmp_path / "vendor.pte"
    _with_foreign_tflite_op(exports["litert"], tflite)
    _with_foreign_pte_delegate(exports["executorch"], pte)
    foreign = {tflite: ["FlexReadFile"], pte: ["SomeVendorBackend", "llama::update_cache"]}
    for file, names in foreign.items():
        code, out, err = cli(capsys, "predict", file, checkpoint[1][0])
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert all(name in err for name in names) and "--trust-code" in err
        # Trusted, it reaches the runtime, which has no such operator: still one line.
        code, _, err = cli(capsys, "bench", file, "--trust-code", "--seconds", "0.01")
        assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_bad_files_and_requests_are_one_line_and_write_nothing(
    checkpoint, exports, tmp_path, capsys
):
    png = tmp_path / "photo.pte"  # a PNG named .pte
    Image.new("L", (8, 8)).save(png, format="PNG")
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(exports["litert"].read_bytes()[:4096])
    for file, expected in ((png, "not an ExecuTorch program"), (truncated, "TFLite")):
        code, out, err = cli(capsys, "predict", file, checkpoint[1][0])
        assert code == 2 and out == "" and expected in err, err
        assert len(err.strip().splitlines()) == 1
    before = sorted(tmp_path.iterdir())
    # Core ML packages are ML Programs (.mlpackage); the older .mlmodel is refused first.
    code, out, err = cli(
        capsys, "export", "squeezenet1_1", "--format", "coreml", "-o", tmp_path / "m.mlmodel"
    )
    assert code == 2 and ".mlpackage" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(
        capsys, "quantize", "squeezenet1_1", "--method", "coreml", "-o", tmp_path / "m.onnx"
    )
    assert code == 2 and ".mlpackage" in err and len(err.strip().splitlines()) == 1
    assert sorted(tmp_path.iterdir()) == before


def test_a_missing_extra_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch", None)  # as if it were not installed
    code, out, err = cli(
        capsys,
        "export",
        "mobilenet_v1",
        "--variant",
        "cifar",
        "--format",
        "executorch",
        "-o",
        tmp_path / "m.pte",
    )
    assert code == 2 and out == ""
    assert err.strip() == (
        "lightnets export: error: executorch is not installed: pip install 'lightnets[mobile]'"
    )
    code, _, err = cli(
        capsys, "bench", "mobilenet_v1", "--variant", "cifar", "--backend", "executorch"
    )
    assert code == 2 and "pip install 'lightnets[mobile]'" in err
    assert list(tmp_path.iterdir()) == []


def test_torchscript_export_says_pytorch_deprecates_it(tmp_path, capsys):
    code, out, _ = cli(
        capsys,
        "export",
        "mobilenet_v1",
        "--width-mult",
        "0.25",
        "--variant",
        "cifar",
        "--format",
        "torchscript",
        "-o",
        tmp_path / "m.pt",
    )
    assert code == 0 and f"note: {TORCHSCRIPT_NOTE}" in out
    assert "pt2" in TORCHSCRIPT_NOTE and "deprecates" in TORCHSCRIPT_NOTE


def test_device_backends_are_candidates_for_best():
    from lightnets.deploy.bench import best_candidates

    assert {"executorch", "litert"} <= set(best_candidates())
    assert not {"executorch-int8", "litert-int8"} & set(best_candidates())
    assert {"executorch-int8", "litert-int8"} <= set(best_candidates(allow_int8=True))
    assert set(DEVICE_FORMATS) == set(SUFFIXES)


@needs_fashion
@pytest.mark.parametrize("method", ["executorch", "litert", "coreml"])
def test_int8_stays_within_the_budget_on_fashion_mnist(checkpoint, method, tmp_path, capsys):
    path, _, _ = checkpoint
    out_path = tmp_path / f"int8.{SUFFIXES[method]}"
    code, out, err = cli(
        capsys,
        "quantize",
        path,
        "--method",
        method,
        "--calibration-images",
        "128",
        "--eval-images",
        "1000",
        "--max-drop",
        "1",
        "-o",
        out_path,
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["eval_metric"] == "accuracy" and report["eval_images"] == 1000
    assert report["fp32_top1"] > 55.0  # trained: the comparison is not vacuous
    assert report["within_budget"] and report["top1_change"] >= -1.0
    assert report["int8_size_mb"] < report["fp32_size_mb"] / 2.5
    meta = read_metadata(out_path)
    assert meta["precision"] == "int8" and meta["int8"]["method"] == method
    assert meta["int8"]["change"] == pytest.approx(report["top1_change"])
    if method == "coreml":
        assert report["calibration_images"] == 0 and report["int8_latency_ms"] is None
        assert coreml.spec_summary(out_path)["image"]["color_space"] == "GRAYSCALE"
        return
    # The saved file, run by lightnets in its runtime, has exactly the reported accuracy on
    # the same held-out images (the first 1,000 of the test split).
    from lightnets.deploy.quantization import calibration_data

    _, evals, _ = calibration_data("fashion-mnist", input_size=SIZE, calibration_images=1)
    int8 = open_exported(out_path)
    correct = sum(int((int8(x).argmax(1) == y).sum()) for x, y in evals)
    assert 100.0 * correct / 1000 == pytest.approx(report["int8_top1"])
    if method == "litert":
        assert meta["input"]["dtype"] == "int8" and meta["input"]["scale"] > 0


def test_core_ml_int8_weights_are_per_channel_roundings_of_the_folded_ones(checkpoint):
    _, _, model = checkpoint
    folded = lightnets.deploy.fuse(model)
    meta = format_metadata("coreml", metadata_for(model, None, SIZE), SIZE)
    converted = coreml.convert(folded, SIZE, meta)
    module, count = coreml.int8_weights_model(converted, coreml.quantize_weights(converted.mlmodel))
    weights = {n: p for n, p in folded.named_parameters() if n.endswith("weight")}
    assert count == len(weights) == 28  # 27 convolutions and the classifier
    for name, original in weights.items():
        got = dict(module.named_parameters())[f"model.{name}"].detach()
        w = original.detach().flatten(1)
        scale = w.abs().amax(1, keepdim=True) / 127  # symmetric, one scale per output channel
        steps = got.flatten(1) / scale
        assert torch.allclose(steps, steps.round(), atol=1e-3), name  # on the int8 grid
        assert (got.flatten(1) - w).abs().le(scale / 2 + 1e-7).all(), name  # the nearest point
