"""`lightnets compress` end to end on real Fashion-MNIST, and the compressed file read by eval,
bench and predict wherever they read a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import lightnets
from conftest import FASHION, train_briefly
from lightnets.cli import main
from lightnets.data.idx import CLASSES
from lightnets.train.checkpoint import model_from_checkpoint, save_checkpoint
from lightnets.train.config import TrainConfig

pytestmark = [
    pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST not installed"),
    pytest.mark.slow,  # trains a small network (about 20 s on an idle 2-core box)
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """ShuffleNet V2 0.5x (CIFAR stem, 16 px) trained 150 Adam steps on Fashion-MNIST."""
    from lightnets.data import load_splits, make_loader

    splits = load_splits("fashion-mnist", train_subset=4800, val_size=500, image_size=16)
    torch.manual_seed(0)
    model = lightnets.create_model("shufflenet_v2", variant="cifar", num_classes=10, width_mult=0.5)
    train_briefly(model, make_loader(splits.train, splits, batch_size=32, train=False))
    folder = tmp_path_factory.mktemp("trained")
    path = folder / "fmnist.pt"
    save_checkpoint(
        path,
        {
            "hparams": model.hparams,
            "model": model.state_dict(),
            "dataset": splits.metadata(),
            "config": TrainConfig(
                model="shufflenet_v2", output=str(folder), dataset="fashion-mnist", val_size=500
            ).to_dict(),
        },
    )
    image = folder / "test0.png"
    Image.fromarray(splits.test.images[0, 0, 2:30, 2:30].numpy()).save(image)
    return path, image


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_compress_then_eval_bench_predict(trained, capsys, tmp_path):
    ckpt, image = trained
    target = tmp_path / "small.lnz"
    code, out, err = run_cli(
        capsys,
        "compress",
        ckpt,
        "-o",
        target,
        "--bits",
        "5",
        "--eval-dataset",
        "fashion-mnist",
        "--eval-images",
        "500",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["file_bytes"] == target.stat().st_size
    assert report["ratio"] > 4 and 0.32 < report["density"] < 0.34
    assert report["accuracy"]["dense"] > 0.5  # trained: the comparison is not vacuous
    assert set(report["coder_totals"]) >= {"fixed", "huffman", "lzma", "chosen"}
    assert report["coder_totals"]["chosen"] <= min(report["coder_totals"].values())

    # eval reads it like a checkpoint: the same numbers as the decoded model gives
    code, out, err = run_cli(capsys, "eval", "--checkpoint", target, "--split", "val", "--json")
    assert code == 0, err
    result = json.loads(out)
    model, _ = model_from_checkpoint(target)
    from lightnets.train.evaluate import evaluate_checkpoint

    direct, _ = evaluate_checkpoint(target, split="val")
    assert result["images"] == 500 and result["top1"] == direct.top1

    code, out, err = run_cli(
        capsys, "bench", target, "--backend", "eager", "--seconds", "0.05", "--json"
    )
    assert code == 0, err
    assert json.loads(out)[0]["status"] == "ok"

    code, out, err = run_cli(capsys, "predict", target, image, "--topk", "2", "--json")
    assert code == 0, err
    top = json.loads(out)[0]["topk"]
    assert top[0]["class"] in CLASSES["fashion-mnist"]
    assert model.num_classes == 10


def test_compress_table_output_and_one_line_errors(trained, capsys, tmp_path):
    ckpt, _ = trained
    code, out, err = run_cli(
        capsys,
        "compress",
        ckpt,
        "-o",
        tmp_path / "t.lnz",
        "--per-layer-bits",
        "conv=8,fc=5",
        "--eval-images",
        "500",
    )
    assert code == 0, err
    assert "per layer" in out and "smaller" in out and "huffman" in out
    assert f"compressed: the weights of {ckpt}" in out
    # No --eval-dataset: the checkpoint's own data set measures top-1 before and after.
    assert "top-1 on fashion-mnist test: dense " in out
    code, out, err = run_cli(
        capsys, "compress", ckpt, "-o", tmp_path / "t.lnz", "--per-layer-bits", "conv:8"
    )
    assert code == 2 and out == "" and err.count("\n") == 1 and "KEY=BITS" in err
    code, out, err = run_cli(capsys, "eval", "--checkpoint", tmp_path / "missing.lnz")
    assert code == 2 and err.count("\n") == 1
