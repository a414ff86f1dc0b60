"""`lightnets compress` says what it compressed: random initial weights (a size, not the paper's
result), a weights file (torchvision's squeezenet1_0 layout included) or a checkpoint, whose
recorded data set then measures top-1 before and after."""

from __future__ import annotations

import json

import pytest
import torch

import lightnets
from lightnets.cli import main
from lightnets.data import load_splits
from lightnets.deploy.compression import load_compressed
from lightnets.train.checkpoint import save_checkpoint
from lightnets.train.config import TrainConfig
from lightnets.train.evaluate import evaluate_checkpoint
from test_weights_formats import random_state, save, torchvision_squeezenet

SMALL = ["mobilenet_v1", "--width-mult", "0.25", "--variant", "cifar", "--num-classes", "10"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_model_name_alone_compresses_random_weights_and_says_so(capsys, tmp_path):
    code, out, err = run_cli(capsys, "compress", *SMALL, "-o", tmp_path / "a.lnz")
    assert code == 0, err
    assert "compressed: random initial weights (size only; not the paper's trained weights" in out
    assert "no top-1" not in out  # random weights: nothing to measure, nothing missed


def test_random_weights_are_seeded_so_a_size_is_reproducible(capsys, tmp_path):
    """The README's sizes of random weights are `--seed 0`'s (the default): the same command
    writes the same bytes in any process; another seed draws other weights."""
    files = {}
    for state, (name, extra) in enumerate((("a", []), ("b", []), ("c", ["--seed", "1"]))):
        torch.manual_seed(100 + state)  # a different global RNG state before each command
        code, _, err = run_cli(capsys, "compress", *SMALL, *extra, "-o", tmp_path / f"{name}.lnz")
        assert code == 0, err
        files[name] = (tmp_path / f"{name}.lnz").read_bytes()
    assert files["a"] == files["b"]
    assert files["a"] != files["c"]
    for bad in ("-1", str(2**63)):
        code, _, err = run_cli(capsys, "compress", *SMALL, "--seed", bad, "-o", tmp_path / "d")
        assert code == 2 and err.count("\n") == 1 and "--seed" in err, err
        assert not (tmp_path / "d").exists()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_torchvision_squeezenet1_0_file_is_what_gets_compressed(capsys, tmp_path):
    state = random_state(torchvision_squeezenet("1_0"), seed=3)
    path = tmp_path / "squeezenet1_0-b66bff10.pth"
    save(state, path)
    target = tmp_path / "sq.lnz"
    code, out, err = run_cli(capsys, "compress", "squeezenet1_0", "--weights", path, "-o", target)
    assert code == 0, err
    what = next(line for line in out.splitlines() if line.startswith("compressed: "))
    assert what.startswith(f"compressed: the weights of {path} (") and "torchvision" in what
    assert f"no top-1 before and after: {path} records no data set" in out
    assert target.stat().st_size < 500_000
    # The file's tensors are what was compressed: biases stored exactly, and in every layer the
    # kept weights are the third of the file's weights largest in magnitude.
    _, decoded = load_compressed(target)
    decoded = decoded["model"]
    for key, tensor in state.items():
        if key.endswith("bias"):
            assert torch.equal(decoded[key], tensor), key
        elif key.endswith("weight"):
            kept = decoded[key].ne(0).flatten()
            top = tensor.abs().flatten().topk(int(kept.sum())).indices
            assert kept.nonzero().flatten().sort().values.equal(top.sort().values), key
            assert 0.32 < kept.float().mean() < 0.34


def test_a_checkpoint_is_measured_on_its_recorded_data_set(capsys, tmp_path):
    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25, variant="cifar", num_classes=10)
    splits = load_splits("synthetic", image_size=16)
    ckpt = tmp_path / "run.pt"
    config = TrainConfig(model="mobilenet_v1", output=str(tmp_path), dataset="synthetic")
    record = {"hparams": model.hparams, "model": model.state_dict(), "config": config.to_dict()}
    save_checkpoint(ckpt, {**record, "dataset": splits.metadata()})
    code, out, err = run_cli(capsys, "compress", ckpt, "-o", tmp_path / "c.lnz", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["weights_from"] == f"the weights of {ckpt}" and not report["random_weights"]
    assert report["dataset"] == "synthetic"
    dense, _ = evaluate_checkpoint(ckpt)  # the independent measurement of the source
    assert report["accuracy"]["dense"] == dense.top1
    assert report["accuracy"]["compressed"] is not None
    code, out, _ = run_cli(
        capsys, "compress", ckpt, "-o", tmp_path / "e.lnz", "--eval-dataset", "none", "--json"
    )
    assert json.loads(out)["accuracy"]["dense"] is None
