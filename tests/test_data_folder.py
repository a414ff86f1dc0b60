"""Image folders: layout policy, Pillow decoding, batched resized crops, corrupt files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from lightnets.data import load_splits, make_loader
from lightnets.data.folder import decode_image
from lightnets.errors import DataError, InvalidArgumentError

COLOURS = {"cat": (200, 30, 10), "dog": (10, 220, 40), "eel": (5, 6, 250)}


def write_images(directory: Path, per_class: int, classes=COLOURS, size=(30, 20)) -> None:
    for name, colour in classes.items():
        (directory / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix = ".png" if i % 2 else ".JPG"
            mode = "L" if i == 2 else "RGB"  # grayscale files are converted to RGB
            value = colour[0] if mode == "L" else colour
            Image.new(mode, (size[0] + i, size[1] + 2 * i), value).save(
                directory / name / f"{i}{suffix}",
                format="PNG" if suffix == ".png" else "JPEG",
                quality=100,
            )


def test_decode_resizes_shorter_side_and_centre_crops(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    for x in range(40):  # a horizontal ramp: column x has value 6x
        for y in range(20):
            image.putpixel((x, y), (6 * x, 100, 50))
    image.save(tmp_path / "ramp.png")
    out = decode_image(tmp_path / "ramp.png", 16, train=False)
    assert out.shape == (16, 16, 3) and out.dtype.name == "uint8"
    # Shorter side 20 -> round(1.14 * 16) = 18, so 40x20 -> 36x18; centre 16x16 crop.
    assert (out[:, :, 1] == 100).all() and (out[:, :, 2] == 50).all()
    ramp = out[0, :, 0].astype(int)
    assert (ramp[1:] > ramp[:-1]).all()
    assert abs(ramp.mean() - 6 * 19.5) < 4  # centred on the middle column
    assert decode_image(tmp_path / "ramp.png", 16, train=True).shape == (18, 18, 3)


def test_folder_layouts_and_loader_output(tmp_path):
    write_images(tmp_path / "a" / "train", per_class=10)
    splits = load_splits("folder", tmp_path / "a", image_size=16, seed=0)
    assert splits.classes == ["cat", "dog", "eel"]
    # Neither val/ nor test/: test = 10% of train/ (fixed seed), then val = 10% of the rest.
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 3, 3)
    assert splits.origin == "test split = 3 images carved from train/ (no val/ or test/ folder)"
    again = load_splits("folder", tmp_path / "a", image_size=16, seed=5)
    assert again.test.files == splits.test.files and again.val.files != splits.val.files
    assert splits.input_size == (3, 16, 16) and splits.augmentation == "resized_crop"

    for train in (False, True):
        loader = make_loader(splits.train, splits, batch_size=8, train=train)
        x, y = next(iter(loader))
        assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32
        if not train:  # solid colours survive decoding exactly (PNG) or nearly (JPEG q=100)
            pixels = x[:, :, 8, 8] * torch.tensor(splits.std) + torch.tensor(splits.mean)
            expected = torch.tensor([COLOURS[splits.classes[i]] for i in y]) / 255
            gray = torch.tensor(
                [f.stem == "2" for f in (splits.train.files[i] for i in loader.indices()[:8])]
            )
            expected[gray] = expected[gray][:, :1].expand(-1, 3)
            torch.testing.assert_close(pixels, expected, rtol=0, atol=3 / 255)

    write_images(tmp_path / "b" / "train", per_class=6)
    write_images(tmp_path / "b" / "val", per_class=2)
    only_val = load_splits("folder", tmp_path / "b", image_size=16, val_size=3)
    assert len(only_val.test) == 6 and len(only_val.val) == 3 and len(only_val.train) == 15
    assert all("val" in f.parts for f in only_val.test.files)
    # Said in a run's first line: a folder called val/ is not the validation split here.
    assert only_val.origin == (
        f"test split = {tmp_path / 'b' / 'val'} (there is no test/ folder); "
        "validation carved from train/"
    )
    write_images(tmp_path / "b" / "test", per_class=1)
    both = load_splits("folder", tmp_path / "b", image_size=16, train_subset=5)
    assert (len(both.train), len(both.val), len(both.test)) == (5, 6, 3)
    assert both.origin is None


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_raises_data_error_naming_it(tmp_path, workers):
    write_images(tmp_path / "train", per_class=3)
    write_images(tmp_path / "val", per_class=1)
    write_images(tmp_path / "test", per_class=1)
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    splits = load_splits("folder", tmp_path, image_size=16)
    loader = make_loader(splits.train, splits, batch_size=5, train=False, num_workers=workers)
    with pytest.raises(DataError, match=r"dog/broken\.png: not a readable image"):
        for _ in loader:
            pass


def test_bad_folder_trees(tmp_path):
    with pytest.raises(InvalidArgumentError, match="needs a data directory"):
        load_splits("folder")
    with pytest.raises(DataError, match="no such directory"):
        load_splits("folder", tmp_path / "missing")
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "dog").mkdir(parents=True)
    with pytest.raises(DataError, match="train: no images found"):
        load_splits("folder", tmp_path)
    write_images(tmp_path / "train", per_class=4)
    write_images(tmp_path / "val", per_class=1, classes={"cow": (1, 2, 3)})
    with pytest.raises(DataError, match=r"val: class folders \['cow'\] are not in train/"):
        load_splits("folder", tmp_path)
