"""Weights files that cannot be loaded: one line naming what is wrong, exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import lightnets
from lightnets.cli import main
from lightnets.errors import CheckpointError
from lightnets.models.weights import export_state_dict, load_weights


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    shufflenet = lightnets.create_model("shufflenet_v2", width_mult=1.0).state_dict()
    torch.save(shufflenet, root / "shufflenet_v2_x1_0.pth")
    small = lightnets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10)
    torch.save(export_state_dict(small, "timm"), root / "mnv2_035_10.pth")
    save_file(small.state_dict(), str(root / "mnv2_035_10.safetensors"))
    raw = (root / "mnv2_035_10.pth").read_bytes()
    (root / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    raw = (root / "mnv2_035_10.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (root / "image.pth").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (root / "notes.pth").write_text("these are not weights\n")
    torch.save(nn.Linear(2, 2), root / "whole_module.pth")
    torch.save({"layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}, root / "resnet.pth")
    effnet = {
        "conv_stem.weight": torch.zeros(32, 3, 3, 3),
        "blocks.0.0.se.conv_reduce.weight": torch.zeros(8, 32, 1, 1),
    }
    torch.save(effnet, root / "efficientnet.pth")
    return root


CASES = [
    # (file, what the one-line error must say)
    ("image.pth", ["is a PNG image, not a weights file"]),
    ("notes.pth", ["is a text file, not a weights file"]),
    ("truncated.pth", ["truncated or corrupt"]),
    ("truncated.safetensors", ["truncated"]),
    ("whole_module.pth", ["pickles Python objects besides tensors", "torch.nn"]),
    ("resnet.pth", ["a ResNet-style state dict"]),
    ("efficientnet.pth", ["timm EfficientNet-family state dict of another architecture"]),
    ("missing.pth", ["weights file not found"]),
]


@pytest.mark.parametrize(("name", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_unreadable_files_are_one_line_errors(files, tmp_path, capsys, name, fragments):
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(files / name), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err
    assert not out.exists()


def test_another_architecture_says_what_the_file_is(files, capsys):
    args = ["export", "mobilenet_v2", "--weights", str(files / "shufflenet_v2_x1_0.pth")]
    assert main([*args, "--format", "onnx", "-o", "x.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "this is a torchvision shufflenet_v2 x1.0 state dict (1000 classes)" in err
    assert "you asked for mobilenet_v2" in err


def test_another_width_names_the_first_mismatching_tensor(files, capsys):
    args = ["predict", "shufflenet_v2", "--width-mult", "0.5", "--weights"]
    image = files / "image.pth"  # never read: the weights fail first
    assert main([*args, str(files / "shufflenet_v2_x1_0.pth"), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "tensor stage2.0.branch1.2.weight is (58, 24, 1, 1) in the file" in err
    assert "this is a torchvision shufflenet_v2 x1.0 state dict" in err
    assert "you asked for shufflenet_v2 x0.5" in err


def test_classifier_mismatch_needs_an_explicit_number_of_classes(files):
    model = lightnets.create_model("mobilenet_v2", width_mult=0.35)  # 1000 classes
    with pytest.raises(CheckpointError, match="the file's classifier has 10 classes, the model"):
        load_weights(model, files / "mnv2_035_10.pth")
    # Explicitly asked: fresh classifier, rest loaded.
    load_weights(model, files / "mnv2_035_10.pth", new_classifier=True)
    # Not asked: the file's number of classes is used.
    assert (
        lightnets.create_model("mobilenet_v2", weights=files / "mnv2_035_10.pth").num_classes == 10
    )


def test_cli_error_is_one_line_on_real_stderr(files):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightnets",
            "bench",
            "mobilenet_v2",
            "--weights",
            str(files / "whole_module.pth"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "weights-only" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
