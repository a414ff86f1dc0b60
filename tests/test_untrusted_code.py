"""A file a user was handed never runs code unless they say they trust it (issue 17).

The TorchScript file here is the issue's recipe: a scripted module whose ``__setstate__`` (run by
``torch.jit.load``) zeroes the first bytes of a file through ``torch.from_file(...,
shared=True)``, saved with valid lightnets metadata and named ``anything.pth``. Every command and
loader must refuse it before loading; with ``trust_code=True`` it does run (the test shows the
threat is real, so the refusals are what keeps the victim intact).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import lightnets
from conftest import silent_one_line
from lightnets.cli import main
from lightnets.deploy.exported import ExportedModel, open_exported
from lightnets.deploy.metadata import attach_onnx, metadata_for, torchscript_extra_files
from lightnets.errors import UntrustedCodeError
from lightnets.formats import FORMATS, identify

NOTES = b"my notes, keep them\n"


class Payload(torch.nn.Module):
    """Loading it zeroes the first 5 bytes of ``target``; so does calling it."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.hits = 0

    @torch.jit.export
    def __getstate__(self) -> str:
        return self.target

    @torch.jit.export
    def __setstate__(self, state: str) -> None:
        self.target = state
        self.training = False
        page = torch.from_file(state, shared=True, size=5, dtype=torch.uint8)
        page.fill_(0)
        self.hits = int(page.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        page = torch.from_file(self.target, shared=True, size=5, dtype=torch.uint8)
        page.fill_(0)
        return torch.zeros(x.shape[0], 10) + page.sum()


@pytest.fixture
def payload(tmp_path):
    """(the program named anything.pth, the victim file, an image to predict)."""
    victim = tmp_path / "notes.txt"
    victim.write_bytes(NOTES)
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25, variant="cifar", num_classes=10)
    meta = metadata_for(model, None, (3, 32, 32))
    path = tmp_path / "anything.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(Payload(str(victim)))
        torch.jit.save(scripted, str(path), _extra_files=torchscript_extra_files(meta))
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    return path, victim, image


def test_the_payload_is_real_when_trusted(payload):
    path, victim, _ = payload
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        open_exported(path, trust_code=True)
    assert victim.read_bytes() == b"\0" * 5 + NOTES[5:]


def test_predict_and_bench_refuse_a_program_before_loading_it(payload, capsys):
    path, victim, image = payload
    silent_one_line(capsys, main(["predict", str(path), str(image)]), "TorchScript", "--trust-code")
    silent_one_line(capsys, main(["bench", str(path), "--seconds", "0.01"]), "--trust-code")
    assert victim.read_bytes() == NOTES


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--checkpoint", "{path}"],
        ["export", "{path}", "--format", "onnx", "-o", "{out}/m.onnx"],
        ["compress", "{path}", "-o", "{out}/m.lnz"],
        ["profile", "mobilenet_v1", "--weights", "{path}"],
        ["convert", "{path}", "-o", "{out}/m.safetensors"],
    ],
    ids=lambda argv: argv[0],
)
def test_every_loader_refuses_it_as_weights(payload, capsys, tmp_path, argv):
    path, victim, _ = payload
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(path=path, out=out) for a in argv]
    silent_one_line(capsys, main(argv), "TorchScript", "not")
    assert victim.read_bytes() == NOTES
    assert list(out.iterdir()) == []


def test_the_library_refuses_it_too(payload):
    path, victim, _ = payload
    with pytest.raises(UntrustedCodeError, match="trust_code=True"):
        open_exported(path)
    with pytest.raises(UntrustedCodeError):
        ExportedModel(path, "torchscript", None)
    assert identify(path) is FORMATS["torchscript"]  # recognised without running it
    assert victim.read_bytes() == NOTES


def test_every_format_says_whether_it_runs_code():
    assert {name: fmt.runs_code for name, fmt in FORMATS.items()} == {
        "openvino": False,
        "pt2": True,
        "torchscript": True,
        "executorch": False,
        "litert": False,
        "onnx": False,
        "coreml": False,
    }
    assert all(fmt.may_do for fmt in FORMATS.values())


def test_our_own_torchscript_export_needs_trust_code_too(tmp_path, capsys):
    target = tmp_path / "m.pt"
    args = ["mobilenet_v1", "--width-mult", "0.25", "--variant", "cifar", "--num-classes", "3"]
    assert main(["export", *args, "--format", "torchscript", "-o", str(target)]) == 0
    out = capsys.readouterr().out
    assert "is a program" in out and "--trust-code" in out
    image = tmp_path / "img.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(image)
    silent_one_line(capsys, main(["predict", str(target), str(image)]), "--trust-code")
    assert main(["predict", str(target), str(image), "--trust-code", "--json"]) == 0


def _onnx_with(tmp_path, name, node, initializers=()):
    """A one-node ONNX model carrying valid lightnets metadata."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        initializer=list(initializers),
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    net = lightnets.create_model("mobilenet_v1", width_mult=0.25, variant="cifar", num_classes=3)
    meta = metadata_for(net, None, (3, 32, 32))
    path = tmp_path / name
    path.write_bytes(attach_onnx(model.SerializeToString(), meta))
    assert onnx.load(str(path), load_external_data=False).graph.node
    return path


def test_onnx_runtimes_own_refusals_are_one_line(tmp_path, capsys):
    from onnx import TensorProto, helper

    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    custom = _onnx_with(
        tmp_path,
        "custom.onnx",
        helper.make_node("Exfiltrate", ["input"], ["logits"], domain="com.evil"),
    )
    silent_one_line(
        capsys, main(["predict", str(custom), str(image)]), "ONNX Runtime refused it", "Exfiltrate"
    )
    outside = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1])
    outside.data_location = TensorProto.EXTERNAL
    for key, value in {
        "location": "../../../../etc/hostname",
        "offset": "0",
        "length": "4",
    }.items():
        entry = outside.external_data.add()
        entry.key, entry.value = key, value
    escaping = _onnx_with(
        tmp_path, "escape.onnx", helper.make_node("Add", ["input", "w"], ["logits"]), [outside]
    )
    silent_one_line(capsys, main(["predict", str(escaping), str(image)]), "refused it", "escapes")
