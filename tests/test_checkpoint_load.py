"""Loading a checkpoint validates what it stores like user input and says what a bad file is:
malformed run configuration or preprocessing, a text file, an object pickle, random bytes."""

from __future__ import annotations

import pytest
import torch

import lightnets
from lightnets.cli import main
from lightnets.errors import CheckpointError
from lightnets.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

GOOD_DATASET = {
    "name": "cifar10",
    "classes": [f"c{i}" for i in range(10)],
    "mean": [0.49, 0.48, 0.45],
    "std": [0.25, 0.24, 0.26],
    "input_size": [3, 32, 32],
}


@pytest.fixture(scope="module")
def model() -> lightnets.models.LightweightNet:
    return lightnets.create_model("squeezenet1_1", num_classes=10, variant="cifar")


def write(path, model, **entries) -> None:
    save_checkpoint(path, {"hparams": model.hparams, "model": model.state_dict(), **entries})


def test_a_well_formed_checkpoint_loads(tmp_path, model):
    write(tmp_path / "ok.pt", model, dataset=GOOD_DATASET)
    rebuilt, state = model_from_checkpoint(tmp_path / "ok.pt")
    assert rebuilt.hparams == model.hparams and state["dataset"] == GOOD_DATASET


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"dataset": {**GOOD_DATASET, "std": [0.0, 0.2, 0.2]}},
         r"dataset\.std\[0\]=0\.0 is not allowed; use a number > 0"),
        ({"dataset": {**GOOD_DATASET, "mean": [float("nan")] * 3}},
         r"dataset\.mean\[0\]=nan is not allowed; use a finite number"),
        ({"dataset": {**GOOD_DATASET, "input_size": "abc"}},
         r"dataset\.input_size='abc' must be \[channels, height, width\]"),
        ({"dataset": {**GOOD_DATASET, "input_size": [3, "abc", 32]}},
         r"dataset\.input_size\[1\]='abc' is not allowed; use an integer >= 1"),
        ({"dataset": {**GOOD_DATASET, "classes": [1, 2]}},
         r"dataset\.classes must be a list of class names"),
        ({"dataset": "cifar10"}, r"dataset metadata must be a dict, found str"),
        ({"config": {"model": "squeezenet1_1", "output": "run", "recipe": 5}},
         r"malformed run configuration"),
        ({"config": {"model": "squeezenet1_1", "output": "run", "recipe": {}, "image_size": "abc"}},
         r"malformed run configuration"),
    ],
)  # fmt: skip
def test_malformed_stored_metadata_is_one_checkpoint_error(tmp_path, model, entries, message):
    path = tmp_path / "bad.pt"
    write(path, model, **entries)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_zero_std_checkpoint_is_refused_by_predict(tmp_path, model, capsys):
    from PIL import Image

    path = tmp_path / "zero_std.pt"
    write(path, model, dataset={**GOOD_DATASET, "std": [0.0, 0.0, 0.0]})
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    assert main(["predict", str(path), str(tmp_path / "x.png")]) == 2
    captured = capsys.readouterr()
    assert "nan" not in captured.out and "dataset.std[0]=0.0 is not allowed" in captured.err


def test_a_text_file_is_named_as_such(tmp_path):
    path = tmp_path / "x.pt"
    path.write_text("101\nsome notes\n")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert (
        str(info.value) == f"cannot read checkpoint {path}: a text file, not a PyTorch checkpoint"
    )


def test_random_bytes_and_empty_files(tmp_path):
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(200, 256)) * 40)
    with pytest.raises(
        CheckpointError, match="not a PyTorch checkpoint \\(unrecognised contents\\)"
    ):
        load_checkpoint(noise)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="the file is empty"):
        load_checkpoint(empty)


class Payload:
    """Any class: a pickle of it is not weights-only."""


def test_object_pickle_refusal_does_not_quote_pytorchs_advice(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"format": "lightnets-checkpoint", "payload": Payload()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"cannot read checkpoint {path}: not a weights-only checkpoint")
    assert "Payload" in message and "will not unpickle" in message
    assert "weights_only" not in message and "\n" not in message
