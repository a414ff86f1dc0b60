"""Where export writes: never over its input, never over a file without asking, DIR/ means a
folder, and a full disk leaves nothing behind but a one-line error."""

from __future__ import annotations

import errno
import io
import json
import os
import pathlib

import pytest
import torch

import lightnets
from lightnets.cli import main
from lightnets.train.checkpoint import save_checkpoint


@pytest.fixture
def ckpt(tmp_path):
    model = lightnets.create_model("squeezenet1_1", variant="cifar", num_classes=3)
    path = tmp_path / "rr" / "last.pt"
    path.parent.mkdir()
    save_checkpoint(path, {"hparams": model.hparams, "model": model.state_dict()})
    return path


def run(capsys, *args, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        fake = io.StringIO(stdin)
        fake.isatty = lambda: True  # type: ignore[method-assign]
        monkeypatch.setattr("sys.stdin", fake)
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, out, err, *needles):
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err


def test_export_refuses_to_overwrite_its_input(ckpt, capsys, monkeypatch, tmp_path):
    before = ckpt.read_bytes()
    link = tmp_path / "link.pt"
    link.symlink_to(ckpt)
    monkeypatch.chdir(tmp_path)
    for source, target in [
        (ckpt, ckpt),
        ("rr/last.pt", "./rr/../rr/last.pt"),
        (link, ckpt),
        (ckpt, "rr/"),  # the directory form names rr/last.pt too
    ]:
        code, out, err = run(
            capsys, "export", source, "--format", "torchscript", "-o", target, "--force"
        )
        one_line(code, out, err, "it is the input")
    assert ckpt.read_bytes() == before


def test_existing_file_needs_force_or_a_yes(ckpt, capsys, monkeypatch, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    argv = ["export", ckpt, "--format", "onnx", "-o", target]
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    one_line(*run(capsys, *argv), "already exists", "--force")
    code, out, err = run(capsys, *argv, stdin="n\n", monkeypatch=monkeypatch)
    assert code == 2 and out == "" and "Replace it? [y/N]" in err and "kept" in err
    assert target.read_bytes() == b"keep me"
    code, out, err = run(capsys, *argv, "--json", stdin="y\n", monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out)["path"] == str(target), err
    assert target.read_bytes() != b"keep me"
    target.write_bytes(b"again")
    assert run(capsys, *argv, "--force")[0] == 0 and target.read_bytes() != b"again"


def test_trailing_slash_means_a_directory(ckpt, capsys, tmp_path):
    code, _, err = run(
        capsys, "export", ckpt, "--format", "openvino", "-o", f"{tmp_path}/exp/newdir/"
    )
    assert code == 0, err
    folder = tmp_path / "exp" / "newdir"
    assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == ["last.bin", "last.xml"]
    code, _, err = run(capsys, "export", "mobilenet_v2", "--format", "onnx", "-o", folder)
    assert code == 0, err
    assert (folder / "mobilenet_v2.onnx").is_file()


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_full_disk_is_one_line_and_leaves_no_temp_file(ckpt, capsys, monkeypatch, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.setattr(pathlib.Path, "write_bytes", _full_disk)
    code, out, err = run(capsys, "export", ckpt, "--format", fmt, "-o", f"{out_dir}/")
    one_line(code, out, err, "no space left on device", "cannot write")
    assert list(out_dir.iterdir()) == []


def test_full_disk_during_openvino_save(ckpt, capsys, monkeypatch, tmp_path):
    ov = pytest.importorskip("openvino")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    real = ov.save_model

    def partial_then_fail(model, path, **kwargs):
        real(model, path, **kwargs)  # files half there, as when the disk fills mid-write
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp:1234:\niostream error")

    monkeypatch.setattr(ov, "save_model", partial_then_fail)
    code, out, err = run(capsys, "export", ckpt, "--format", "openvino", "-o", f"{out_dir}/m.xml")
    one_line(code, out, err, "cannot write", "iostream error", "disk full")
    assert list(out_dir.iterdir()) == []


def test_quantize_uses_the_same_output_rules(ckpt, capsys, monkeypatch):
    pytest.importorskip("nncf")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    target = ckpt.parent / "q.xml"
    target.write_text("old")
    one_line(*run(capsys, "quantize", ckpt, "--calibration", "synthetic", "-o", target), "--force")
    assert target.read_text() == "old"
    assert torch.load(ckpt, weights_only=True)["hparams"]["name"] == "squeezenet1_1"
