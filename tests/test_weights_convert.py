"""``lightnets convert``: our weights in torchvision's and timm's layouts and back, exactly."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

import lightnets
from lightnets.cli import main
from lightnets.models.weights import export_state_dict, read_weights_file


def test_round_trip_through_every_layout_is_exact(tmp_path, capsys):
    torch.manual_seed(0)
    model = lightnets.create_model("mobilenet_v2", width_mult=0.5, num_classes=10)
    timm_state = {k: v.clone() for k, v in export_state_dict(model, "timm").items()}
    torch.save(timm_state, tmp_path / "pytorch_model.bin")
    chain = [
        ("pytorch_model.bin", "tv.safetensors", "torchvision"),
        ("tv.safetensors", "ours.safetensors", "lightnets"),
        ("ours.safetensors", "tv.pth", "torchvision"),
        ("tv.pth", "back.safetensors", "timm"),
    ]
    for source, target, layout in chain:
        args = ["convert", str(tmp_path / source), "-o", str(tmp_path / target), "--to", layout]
        assert main(args) == 0
        assert "read back identical" in capsys.readouterr().out
    back = load_file(str(tmp_path / "back.safetensors"))
    assert set(back) == set(timm_state)  # safetensors stores keys sorted
    assert all(torch.equal(back[k], timm_state[k]) for k in timm_state)
    torchvision = torch.load(tmp_path / "tv.pth", weights_only=True)
    assert list(torchvision) == list(model.state_dict())
    with safe_open(str(tmp_path / "ours.safetensors"), "pt") as handle:
        assert json.loads(handle.metadata()["hparams"]) == model.hparams


def test_mobilenet_v1_has_no_torchvision_layout(tmp_path, capsys):
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25)
    torch.save(model.state_dict(), tmp_path / "v1.pth")
    out = tmp_path / "v1_tv.safetensors"
    assert main(["convert", str(tmp_path / "v1.pth"), "-o", str(out), "--to", "torchvision"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "torchvision has no mobilenet_v1" in err
    assert not out.exists()
    # To timm it goes, with a note that timm computes ReLU6 where this model has ReLU.
    assert main(["convert", str(tmp_path / "v1.pth"), "-o", str(out), "--to", "timm"]) == 0
    assert "timm's MobileNet V1 uses ReLU6" in capsys.readouterr().out
    assert "conv_stem.weight" in read_weights_file(out).tensors


@pytest.mark.parametrize("suffix", [".onnx", ".txt"])
def test_output_suffix_is_checked_first(tmp_path, capsys, suffix):
    torch.save(lightnets.create_model("squeezenet1_1").state_dict(), tmp_path / "s.pth")
    assert main(["convert", str(tmp_path / "s.pth"), "-o", str(tmp_path / f"o{suffix}")]) == 2
    assert "the name must end in .safetensors" in capsys.readouterr().err


def test_predict_uses_the_preprocessing_recorded_in_a_lightnets_file(tmp_path, capsys):
    from lightnets.models.weights import save_weights

    model = lightnets.create_model("shufflenet_v2", width_mult=0.5, num_classes=3, variant="cifar")
    dataset = {
        "name": "folder",
        "classes": ["cat", "dog", "emu"],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "input_size": [3, 40, 40],
    }
    save_weights(model, tmp_path / "ft.safetensors", dataset=dataset)
    Image.new("RGB", (50, 60), (200, 30, 30)).save(tmp_path / "red.png")
    args = ["predict", "shufflenet_v2", "--weights", str(tmp_path / "ft.safetensors")]
    assert main([*args, str(tmp_path / "red.png"), "--topk", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {entry["class"] for entry in result[0]["topk"]} == {"cat", "dog", "emu"}
