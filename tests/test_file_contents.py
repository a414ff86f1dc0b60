"""What a file says is checked as user input (issue 17): a path inside a file is never opened,
only regular files the user named are, and a file whose numbers would give a wrong answer
(NaN weights, a std of 0, class names that do not fit, 16-bit pixels misread) is refused or
read correctly, never answered with exit status 0."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import lightnets
from conftest import FASHION, needs_fashion, silent_one_line
from lightnets.cli import main
from lightnets.data.idx import CLASSES
from lightnets.deploy.compression.codec import write_compressed
from lightnets.deploy.metadata import attach_onnx, metadata_for
from lightnets.deploy.prediction import load_image, predict, preprocessing_from_checkpoint
from lightnets.errors import CheckpointError
from lightnets.models.weights import load_weights
from lightnets.train.checkpoint import save_checkpoint

FASHION_DATASET = {
    "name": "fashion-mnist",
    "classes": CLASSES["fashion-mnist"],
    "mean": [0.2860, 0.2860, 0.2860],
    "std": [0.3530, 0.3530, 0.3530],
    "input_size": [3, 32, 32],
}


def small_model(num_classes: int = 10):
    torch.manual_seed(0)
    return lightnets.create_model(
        "mobilenet_v1", width_mult=0.25, variant="cifar", num_classes=num_classes
    ).eval()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)).save(path)
    return path


class NeverBlocked:
    """Opens ``fifo`` for writing after ``seconds``: a command stuck reading it is released
    (and ``blocked`` says so) instead of hanging the test suite."""

    def __init__(self, fifo, seconds: float = 20.0) -> None:
        self.fifo, self.blocked = fifo, False
        self.timer = threading.Timer(seconds, self._release)

    def _release(self) -> None:
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: no reader, fine
        except OSError:
            return
        self.blocked = True
        os.close(fd)

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()


# -- paths inside files ---------------------------------------------------------------------


def _checkpoint_naming(path, target):
    model = small_model()
    hparams = {**model.hparams, "weights": str(target)}
    save_checkpoint(path, {"hparams": hparams, "model": model.state_dict()})


def _safetensors_naming(path, target):
    model = small_model()
    metadata = {
        "format": "lightnets-weights",
        "hparams": json.dumps({**model.hparams, "weights": str(target)}),
    }
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path, metadata)


def _lnz_naming(path, target):
    model = small_model()
    meta = {"hparams": {**model.hparams, "weights": str(target)}, "settings": {}}
    write_compressed(path, [], dict(model.state_dict()), meta)


@pytest.mark.parametrize(
    "make, suffix, target",
    [
        (_checkpoint_naming, "pt", "fifo"),
        (_checkpoint_naming, "pt", "itself"),
        (_checkpoint_naming, "pt", "secret"),
        (_safetensors_naming, "safetensors", "fifo"),
        (_lnz_naming, "lnz", "fifo"),
    ],
    ids=["checkpoint-fifo", "checkpoint-itself", "checkpoint-secret", "safetensors", "lnz"],
)
def test_a_path_inside_a_file_is_never_opened(tmp_path, capsys, image, make, suffix, target):
    path = tmp_path / f"m.{suffix}"
    named = {"fifo": tmp_path / "fifo", "itself": path, "secret": tmp_path / "secret.txt"}
    os.mkfifo(named["fifo"])
    named["secret"].write_text("root:x:0:0\n")
    make(path, named[target])
    commands = [
        ["profile", "mobilenet_v1", "--weights", str(path)],
        ["predict", "mobilenet_v1", "--weights", str(path), str(image)],
        ["eval", "--weights", str(path)],
    ]
    if suffix != "safetensors":  # a checkpoint or compressed file also stands for a model
        commands += [
            ["predict", str(path), str(image)],
            ["eval", "--checkpoint", str(path)],
            ["export", str(path), "--format", "onnx", "-o", str(tmp_path / "o.onnx")],
        ]
    with NeverBlocked(named["fifo"]) as guard:
        for argv in commands:
            err = silent_one_line(capsys, main(argv), "never opens a path that a file names")
            assert len(err) < 400
        with pytest.raises(CheckpointError, match="never opens a path"):
            load_weights(small_model(), path)
    assert not guard.blocked
    assert not (tmp_path / "o.onnx").exists()


def test_only_regular_files_are_opened_and_a_fifo_is_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    with NeverBlocked(fifo) as guard:
        for argv in (
            ["convert", str(fifo), "-o", str(tmp_path / "o.safetensors")],
            ["eval", "--checkpoint", str(fifo)],
            ["export", str(fifo), "--format", "onnx", "-o", str(tmp_path / "o.onnx")],
            ["predict", str(fifo), str(fifo)],
            ["predict", "mobilenet_v1", str(fifo)],
            ["profile", "mobilenet_v1", "--weights", str(fifo)],
        ):
            silent_one_line(capsys, main(argv), "FIFO")
    assert not guard.blocked
    silent_one_line(capsys, main(["eval", "--checkpoint", "/dev/zero"]), "character device")


# -- numbers that would give a wrong answer -------------------------------------------------


def _poisoned_checkpoint(path, **changes):
    model = small_model()
    state = model.state_dict()
    dataset = dict(FASHION_DATASET)
    if "weight" in changes:
        state = {k: v.clone() for k, v in state.items()}
        state["features.0.0.weight"][0, 0, 0, 0] = changes.pop("weight")
    dataset.update(changes)
    save_checkpoint(path, {"hparams": model.hparams, "model": state, "dataset": dataset})


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"weight": float("nan")}, "NaN or infinite"),
        ({"weight": float("inf")}, "NaN or infinite"),
        ({"std": [0.0]}, "dataset.std[0]=0.0"),
        ({"mean": [float("nan")] * 3}, "dataset.mean[0]"),
        ({"classes": "abcdefghij"}, "must be a list of class names"),
        ({"classes": ["a", "b", "c"]}, "lists 3 names but the model has 10 outputs"),
    ],
    ids=["nan-weight", "inf-weight", "std-0", "nan-mean", "classes-string", "classes-count"],
)
def test_wrong_numbers_are_refused_at_load(tmp_path, capsys, image, changes, needle):
    path = tmp_path / "bad.pt"
    _poisoned_checkpoint(path, **changes)
    for argv in (
        ["predict", str(path), str(image)],
        ["eval", "--checkpoint", str(path)],
        ["export", str(path), "--format", "onnx", "-o", str(tmp_path / "o.onnx")],
        ["bench", str(path), "--seconds", "0.01"],
    ):
        silent_one_line(capsys, main(argv), needle)
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("container", ["safetensors", "lnz", "onnx"])
def test_wrong_numbers_in_other_containers_too(tmp_path, capsys, image, container):
    model = small_model()
    path = tmp_path / f"m.{container}"
    dataset = {**FASHION_DATASET, "std": [0.0, 0.0, 0.0]}
    if container == "safetensors":
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        meta = {"format": "lightnets-weights", "hparams": json.dumps(model.hparams)}
        save_file(state, path, {**meta, "dataset": json.dumps(dataset)})
    elif container == "lnz":
        write_compressed(
            path, [], dict(model.state_dict()), {"hparams": model.hparams, "dataset": dataset}
        )
    else:
        pytest.importorskip("onnxruntime")
        from lightnets.deploy.exporters import onnx_bytes

        meta = metadata_for(model, {"dataset": FASHION_DATASET}, (3, 32, 32))
        meta["preprocessing"]["std"] = [0.0]
        data = onnx_bytes(model, torch.zeros(1, 3, 32, 32), dynamic_batch=True)
        path.write_bytes(attach_onnx(data, meta))
    name = ["mobilenet_v1", "--weights"] if container == "safetensors" else []
    silent_one_line(capsys, main(["predict", *name, str(path), str(image)]), "std[0]")


def test_nan_weights_in_an_onnx_file_are_refused(tmp_path, capsys, image):
    pytest.importorskip("onnxruntime")
    from lightnets.deploy.exporters import onnx_bytes

    model = small_model()
    with torch.no_grad():
        model.classifier[1].weight[0, 0] = float("nan")
    meta = metadata_for(model, {"dataset": FASHION_DATASET}, (3, 32, 32))
    path = tmp_path / "nan.onnx"
    path.write_bytes(attach_onnx(onnx_bytes(model, torch.zeros(1, 3, 32, 32)), meta))
    silent_one_line(capsys, main(["predict", str(path), str(image)]), "NaN or infinite")


def test_metadata_missing_a_field_is_one_line(tmp_path, capsys, image):
    pytest.importorskip("onnxruntime")
    from lightnets.deploy.exporters import onnx_bytes

    model = small_model()
    meta = metadata_for(model, {"dataset": FASHION_DATASET}, (3, 32, 32))
    del meta["preprocessing"]["mode"]
    path = tmp_path / "m.onnx"
    path.write_bytes(attach_onnx(onnx_bytes(model, torch.zeros(1, 3, 32, 32)), meta))
    silent_one_line(capsys, main(["predict", str(path), str(image)]), "preprocessing.mode")


def test_one_mean_and_std_apply_to_every_channel(tmp_path, image):
    """Length-1 statistics in an RGB (CIFAR) checkpoint: the same answer as three equal values,
    where they used to pass validation and then fail in a reshape."""
    model = small_model()
    answers = []
    for mean, std in (([0.5], [0.25]), ([0.5] * 3, [0.25] * 3)):
        info = {"name": "cifar10", "mean": mean, "std": std, "input_size": [3, 32, 32]}
        pre = preprocessing_from_checkpoint({"dataset": info}, (3, 32, 32))
        answers.append(predict(model, [image], pre, topk=3)[0].as_dict())
    assert answers[0] == answers[1]


@needs_fashion
def test_a_16_bit_png_gives_the_8_bit_files_answer(tmp_path):
    from lightnets.data.idx import read_idx

    pixels = read_idx(FASHION / "t10k-images-idx3-ubyte.gz", 2051, item_shape=(28, 28))[0]
    eight, sixteen = tmp_path / "8.png", tmp_path / "16.png"
    Image.fromarray(pixels).save(eight)
    Image.fromarray(pixels.astype(np.uint16) * 257).save(sixteen)
    with Image.open(sixteen) as raw:  # what Pillow's own convert("L") makes of it: clipped
        assert raw.mode == "I;16" and not np.array_equal(np.asarray(raw.convert("L")), pixels)
    pre = preprocessing_from_checkpoint({"dataset": FASHION_DATASET}, (3, 32, 32))
    assert torch.equal(load_image(sixteen, pre), load_image(eight, pre))
    model = small_model()
    got = predict(model, [eight, sixteen], pre, topk=3)
    assert got[0].topk == got[1].topk
