"""Exported files are complete artefacts: metadata inside, usable by predict and bench, and
reproducible from their metadata alone by the script in docs/deploy.md."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightnets
from conftest import odd_size_images
from lightnets.cli import main
from lightnets.deploy.exported import open_exported
from lightnets.deploy.exporters import export
from lightnets.deploy.metadata import detect_format, metadata_for, read_metadata
from lightnets.train.checkpoint import save_checkpoint
from test_deploy_fuse import randomize_batchnorm

DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
DATASET = {
    "name": "fashion-mnist",
    "classes": CLASSES,
    "mean": [0.2860, 0.2860, 0.2860],
    "std": [0.3530, 0.3530, 0.3530],
    "input_size": [3, 32, 32],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A Fashion-MNIST-style checkpoint (5 classes) and three grayscale images of odd sizes."""
    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v1", variant="cifar", num_classes=5, width_mult=0.25)
    model = randomize_batchnorm(model).eval()
    folder = tmp_path_factory.mktemp("artefacts")
    path = folder / "fm.pt"
    save_checkpoint(
        path, {"hparams": model.hparams, "model": model.state_dict(), "dataset": DATASET}
    )
    images = odd_size_images(folder)
    return path, images, model


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def predict_json(capsys, name, images, *extra) -> list[dict]:
    code, out, err = cli(capsys, "predict", name, *images, "--topk", "5", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def exports(checkpoint, tmp_path_factory):
    """The checkpoint exported in every format, through the CLI."""
    path, _, _ = checkpoint
    folder = tmp_path_factory.mktemp("exp")
    formats = {"onnx": "onnx", "openvino": "xml", "torchscript": "pt"}
    for fmt in formats:
        assert main(["export", str(path), "--format", fmt, "-o", f"{folder}/"]) == 0
    return {fmt: folder / f"fm.{ext}" for fmt, ext in formats.items()}


def test_every_format_carries_the_checkpoints_metadata(checkpoint, exports, capsys):
    path, _, model = checkpoint
    state = torch.load(path, weights_only=True)
    expected = json.loads(json.dumps(metadata_for(model, state, (3, 32, 32))))
    for fmt, file in exports.items():
        assert detect_format(file) == fmt
        meta = read_metadata(file)
        assert meta == expected, fmt
        code, out, _ = cli(capsys, "export", "--print-metadata", file)
        assert code == 0 and json.loads(out) == expected
    assert expected["classes"] == CLASSES and expected["model"] == model.hparams
    rule = expected["preprocessing"]
    assert (rule["mode"], rule["filter"], rule["resize"], rule["crop"], rule["pad"]) == (
        "L",
        "bilinear",
        28,
        28,
        2,
    )
    assert rule["mean"] == [0.2860] and rule["final_resize"] is None
    assert expected["lightnets_version"] == lightnets.__version__
    assert detect_format(path) is None  # a checkpoint is not an exported file


def test_predict_on_an_exported_file_gives_the_checkpoints_answer(checkpoint, exports, capsys):
    path, images, _ = checkpoint
    want = predict_json(capsys, path, images)
    for fmt, file in exports.items():
        # TorchScript is a program: lightnets runs it only when told that the file is trusted.
        got = predict_json(
            capsys, file, images, *(["--trust-code"] if fmt == "torchscript" else [])
        )
        for a, b in zip(want, got, strict=True):
            assert [t["index"] for t in a["topk"]] == [t["index"] for t in b["topk"]], fmt
            assert [t["class"] for t in b["topk"]] == [CLASSES[t["index"]] for t in b["topk"]]
            for ta, tb in zip(a["topk"], b["topk"], strict=True):
                assert tb["probability"] == pytest.approx(ta["probability"], abs=1e-5)
    assert isinstance(open_exported(exports["onnx"]), torch.nn.Module)


def test_bench_times_an_exported_file_in_its_runtime(exports, capsys):
    code, out, err = cli(capsys, "bench", exports["openvino"], "--seconds", "0.02", "--json")
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["backend"] == "openvino file" and record["precision"] == "fp32"
    assert record["model"] == "mobilenet_v1" and record["latency_ms_median"] > 0


def _doc_script(tmp_path: Path) -> Path:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- predict-onnx -->\n```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "predict_onnx.py"
    script.write_text(block, encoding="utf-8")
    return script


def _run_script(script: Path, model: Path, images) -> list[list]:
    proc = subprocess.run(
        [sys.executable, str(script), str(model), *map(str, images)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = []
    for line in proc.stdout.splitlines():
        _, _, rest = line.partition(" ")
        rows.append(ast.literal_eval(rest))  # a Python list of (name, probability)
    return rows


def test_the_docs_onnx_only_script_reproduces_predict(checkpoint, exports, capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    _, images, _ = checkpoint
    script = _doc_script(tmp_path)
    want = predict_json(capsys, exports["onnx"], images)
    for rows, result in zip(_run_script(script, exports["onnx"], images), want, strict=True):
        assert [name for name, _ in rows] == [t["class"] for t in result["topk"]]
        for (_, prob), t in zip(rows, result["topk"], strict=True):
            assert prob == pytest.approx(t["probability"], abs=2e-6)
    # A bare model (library default metadata): ImageNet statistics, RGB, shorter side to
    # round(1.14 S), JPEG draft decoding, class indices.
    _, _, model = checkpoint
    bare = tmp_path / "bare.onnx"
    export(model, bare, "onnx", (3, 40, 40))
    photo = tmp_path / "photo.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (150, 120, 3), dtype=np.uint8)).save(photo)
    want = predict_json(capsys, bare, [photo])
    assert read_metadata(bare)["preprocessing"]["resize"] == 46
    (rows,) = _run_script(script, bare, [photo])
    assert [name for name, _ in rows] == [t["index"] for t in want[0]["topk"]]
    for (_, prob), t in zip(rows, want[0]["topk"], strict=True):
        assert prob == pytest.approx(t["probability"], abs=2e-6)


def test_a_file_without_metadata_is_refused_by_predict(checkpoint, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    _, images, model = checkpoint
    path = tmp_path / "plain.onnx"
    from lightnets.deploy.exporters import onnx_bytes

    path.write_bytes(onnx_bytes(model, torch.zeros(1, 3, 32, 32)))
    assert detect_format(path) == "onnx" and not onnx.load(str(path)).metadata_props
    assert open_exported(path).input_size == (3, 32, 32)  # from the runtime: bench can time it
    code, out, err = cli(capsys, "predict", path, images[0])
    assert code == 2 and out == "" and "no lightnets metadata" in err
    assert len(err.strip().splitlines()) == 1
