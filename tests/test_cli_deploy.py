"""The deploy commands end to end, on a small network trained here on real Fashion-MNIST."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import lightnets
from conftest import FASHION, train_briefly
from lightnets.cli import main
from lightnets.train.checkpoint import save_checkpoint

needs_fashion = pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST not installed")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """MobileNet V1 (0.25x, CIFAR stem) trained for 300 Adam steps: about 75% test top-1."""
    if not FASHION.is_dir():
        pytest.skip("Fashion-MNIST not installed")
    from lightnets.data import load_splits, make_loader

    splits = load_splits("fashion-mnist", train_subset=9600)
    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v1", variant="cifar", num_classes=10, width_mult=0.25)
    train_briefly(model, make_loader(splits.train, splits, batch_size=32, train=False))
    folder = tmp_path_factory.mktemp("trained")
    path = folder / "fmnist.pt"
    save_checkpoint(
        path, {"hparams": model.hparams, "model": model.state_dict(), "dataset": splits.metadata()}
    )
    images = []
    for i in range(3):
        image = folder / f"test{i}.png"
        Image.fromarray(splits.test.images[i, 0, 2:30, 2:30].numpy()).save(image)
        images.append(image)
    return path, images, splits


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@needs_fashion
def test_predict_names_the_checkpoints_classes(trained, capsys):
    path, images, splits = trained
    code, out, err = run_cli(capsys, "predict", path, *images, "--topk", "3", "--json")
    assert code == 0, err
    results = json.loads(out)
    model, _ = lightnets.train.checkpoint.model_from_checkpoint(path)
    from lightnets.data import make_loader

    batch, _ = next(iter(make_loader(splits.test, splits, batch_size=3, train=False)))
    with torch.no_grad():
        expected = model(batch).softmax(1)
    for i, result in enumerate(results):
        top = result["topk"]
        assert len(top) == 3 and result["image"] == str(images[i])
        assert top[0]["index"] == int(expected[i].argmax())
        assert top[0]["class"] == splits.classes[top[0]["index"]]
        assert top[0]["probability"] == pytest.approx(float(expected[i].max()), abs=1e-5)
    code, out, _ = run_cli(capsys, "predict", path, images[0])
    assert code == 0 and splits.classes[results[0]["topk"][0]["index"]] in out


@needs_fashion
def test_quantize_keeps_fashion_mnist_accuracy(trained, capsys, tmp_path):
    pytest.importorskip("nncf")
    path, _, splits = trained
    out_path = tmp_path / "int8.xml"
    code, out, err = run_cli(
        capsys,
        "quantize",
        path,  # calibration and evaluation default to the checkpoint's data set
        "--calibration-images",
        "256",
        "--eval-images",
        "1000",
        "-o",
        out_path,
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["calibration"] == "fashion-mnist" and report["max_drop"] == 1.0
    assert report["eval_metric"] == "accuracy" and report["eval_images"] == 1000
    assert report["within_budget"] == (report["top1_change"] >= -1.0)
    assert report["fp32_top1"] > 60.0  # the model learned something: the check is not vacuous
    assert abs(report["top1_change"]) <= 2.0
    assert report["int8_size_mb"] < report["fp32_size_mb"] / 2  # the .xml graph is ~0.2 MB
    assert out_path.exists() and out_path.with_suffix(".bin").exists()
    from lightnets.deploy.metadata import read_metadata

    meta = read_metadata(out_path)
    assert meta["precision"] == "int8" and meta["classes"] == list(splits.classes)
    assert meta["int8"]["change"] == pytest.approx(report["top1_change"])


@needs_fashion
def test_bench_and_export_a_checkpoint(trained, capsys, tmp_path):
    path, _, _ = trained
    code, out, err = run_cli(
        capsys,
        "bench",
        path,
        "--backend",
        "eager,fused",
        "--batch-size",
        "1,4",
        "--seconds",
        "0.05",
        "--json",
    )
    assert code == 0, err
    records = json.loads(out)
    assert [(r["backend"], r["batch_size"]) for r in records] == [
        ("eager", 1),
        ("fused", 1),
        ("eager", 4),
        ("fused", 4),
    ]
    for r in records:
        assert r["model"] == "mobilenet_v1" and r["status"] == "ok"
        assert r["latency_ms_median"] > 0 and r["max_abs_diff"] < 1e-4
        # The thread policy's choice, and its reason, recorded with every record.
        policy = r["thread_policy"]
        assert policy["threads"] == r["threads"] >= 1
        assert policy["reason"].startswith(f"threads: {r['threads']} of {policy['cores']} (")
    code, out, err = run_cli(capsys, "bench", path, "--backend", "fused", "--seconds", "0.05")
    assert code == 0 and "fused" in out and "median ms" in out
    target = tmp_path / "m.pt"
    code, out, err = run_cli(capsys, "export", path, "--format", "torchscript", "-o", target)
    assert code == 0, err
    assert "verified" in out and target.exists()


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in err


def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00garbage" * 10)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"PNG? no")
    pte = tmp_path / "q.pte"
    cases = [
        (["predict", foreign, image], ["not a lightnets checkpoint"]),
        (["bench", garbage, "--backend", "eager"], ["garbage.pt"]),
        (["bench", "mobilenet_v2", "--backend", "tensorrt"], ["tensorrt", "allowed: eager"]),
        (["bench", "mobilenet_v2", "--batch-size", "0"], ["--batch-size"]),
        (
            ["export", "mobilenet_v2", "--format", "tflite", "-o", tmp_path / "m"],
            ["allowed: onnx, torchscript, openvino"],
        ),
        (
            ["export", "mobilenet_v2", "--format", "onnx", "-o", tmp_path / "no" / "m.onnx"],
            ["does not exist"],
        ),
        (
            ["quantize", "mobilenet_v2", "--calibration", "imagenet", "-o", tmp_path / "q.xml"],
            ["allowed: fashion-mnist"],
        ),
        (
            [
                "quantize",
                "mobilenet_v2",
                "--calibration",
                "synthetic",
                "--method",
                "x",
                "-o",
                tmp_path / "q.xml",
            ],
            ["allowed: openvino, onnxruntime"],
        ),
        (
            ["quantize", "mobilenet_v2", "--method", "executorch", "--reduce-range", "-o", pte],
            ["--reduce-range applies to onnxruntime or openvino", "do not saturate"],
        ),
        (["predict", "squeezenet1_1", tmp_path / "missing.png"], ["missing.png"]),
        (["predict", "squeezenet1_1", "--variant", "cifar", broken], ["broken.png"]),
    ]
    for argv, needles in cases:
        code, out, err = run_cli(capsys, *argv)
        assert_one_line_error(code, out, err, *needles)


def test_subprocess_error_has_no_traceback(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": [1, 2, 3]}, foreign)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightnets",
            "export",
            str(foreign),
            "--format",
            "onnx",
            "-o",
            str(tmp_path / "m.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "not a lightnets checkpoint")
    assert not (tmp_path / "m.onnx").exists()


def test_a_checkpoint_is_exported_at_the_size_it_was_trained_at(tmp_path, capsys):
    # No --input-size: the checkpoint's recorded size (16 px here), not the variant's 32 px.
    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v1", variant="cifar", num_classes=4, width_mult=0.25)
    dataset = {
        "name": "folder",
        "classes": ["a", "b", "c", "d"],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "input_size": [3, 16, 16],
    }
    path = tmp_path / "small.pt"
    save_checkpoint(
        path, {"hparams": model.hparams, "model": model.state_dict(), "dataset": dataset}
    )
    for size, flags in ((16, []), (24, ["--input-size", "24"])):
        onnx_path = tmp_path / f"small{size}.onnx"
        code, _, err = run_cli(capsys, "export", path, "--format", "onnx", "-o", onnx_path, *flags)
        assert code == 0, err
        code, out, _ = run_cli(capsys, "export", "--print-metadata", onnx_path)
        assert code == 0 and json.loads(out)["input"]["shape"] == ["batch", 3, size, size]
