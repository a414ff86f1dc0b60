"""Hostile data files are refused in one line, without inflating or decoding them: IDX headers
whose size overflows or exceeds the cap, gzip streams that inflate far past their header,
CIFAR labels beyond int64 and random archives, decompression-bomb images, empty classes."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightnets.data import load_splits
from lightnets.data.cifar import CIFAR10, load_cifar, parse_batch
from lightnets.data.folder import decode_image
from lightnets.data.idx import IMAGE_MAGIC, LABEL_MAGIC, MAX_IDX_BYTES, load_idx, read_idx
from lightnets.data.images import MAX_IMAGE_PIXELS, open_image
from lightnets.errors import DataError


def idx_header(magic: int, dims: tuple[int, ...]) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims)


def write_gzip_stream(path: Path, header: bytes, zero_bytes: int) -> None:
    """``header`` followed by ``zero_bytes`` zeros, gzip-compressed a megabyte at a time."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    with path.open("wb") as out:
        out.write(compressor.compress(header))
        chunk = bytes(1 << 20)
        for _ in range(zero_bytes >> 20):
            out.write(compressor.compress(chunk))
        out.write(compressor.flush())


# ---------------------------------------------------------------- IDX


def test_idx_dims_whose_product_overflows_int64_are_refused(tmp_path):
    # 2^31 x 2^31 x 4 = 2^64 bytes: 0 in int64 arithmetic, which passed the old length check.
    path = tmp_path / "images.idx"
    path.write_bytes(idx_header(IMAGE_MAGIC, (2**31, 2**31, 4)))
    with pytest.raises(DataError) as info:
        read_idx(path, IMAGE_MAGIC)
    message = str(info.value)
    assert "18,446,744,073,709,551,616 bytes" in message
    assert f"{MAX_IDX_BYTES:,}-byte limit" in message and str(path) in message


def test_idx_header_checked_against_the_expected_item_shape_first(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    (root / "train-images-idx3-ubyte").write_bytes(idx_header(IMAGE_MAGIC, (2**31, 2**31, 4)))
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (root / name).write_bytes(idx_header(LABEL_MAGIC, (0,)))
    (root / "t10k-images-idx3-ubyte").write_bytes(idx_header(IMAGE_MAGIC, (0, 28, 28)))
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte: items are 2147483648x4, expected 28x28"
    ):
        load_idx("fashion-mnist", root)


def test_gzip_that_inflates_past_its_header_is_refused_without_inflating_it(tmp_path):
    # A 1-image header followed by 64 MiB of zeros (a ~64 KB file): read no more than the
    # header promises plus one byte.
    path = tmp_path / "bomb-idx3-ubyte.gz"
    write_gzip_stream(path, idx_header(IMAGE_MAGIC, (1, 28, 28)), 64 << 20)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(
            DataError, match=r"bomb-idx3-ubyte\.gz: more than the 800 bytes .*trailing data"
        ):
            read_idx(path, IMAGE_MAGIC)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # far below the 64 MiB the stream inflates to


def test_idx_size_cap_is_applied_before_reading(tmp_path):
    path = tmp_path / "big.gz"
    path.write_bytes(gzip.compress(idx_header(LABEL_MAGIC, (5000,)) + bytes(5000)))
    assert read_idx(path, LABEL_MAGIC).shape == (5000,)
    with pytest.raises(DataError, match=r"describe 5,000 bytes, more than the 4,096-byte limit"):
        read_idx(path, LABEL_MAGIC, max_bytes=4096)


# ---------------------------------------------------------------- CIFAR


def test_cifar_labels_beyond_int64_are_one_line():
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2**70]}
    with pytest.raises(DataError) as info:
        parse_batch(batch, CIFAR10, "data_batch_1")
    message = str(info.value)
    assert message.startswith("data_batch_1: 'labels' is not a list of integers in 0..9")
    assert "OverflowError" in message and "\n" not in message


def test_random_bytes_archive_is_one_line(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError) as info:
        load_cifar("cifar10", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    reason = "ReadError: file could not be opened successfully"
    assert message == f"{archive}: not a readable .tar.gz archive ({reason})"


# ---------------------------------------------------------------- images


def write_png_bomb(path: Path, width: int, height: int) -> None:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels: tens of KB on disk."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = bytes(height * (1 + (width + 7) // 8))  # filter byte 0 + packed bits, per row
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    write_png_bomb(path, 12_000, 12_000)  # 144 Mpixel: Pillow itself would only warn
    assert path.stat().st_size < 1 << 20
    with pytest.raises(DataError) as info, open_image(path):
        pass
    message = str(info.value)
    assert message.startswith(f"{path}: 12000x12000 image (144,000,000 pixels) exceeds the limit")
    assert f"{MAX_IMAGE_PIXELS:,} pixels" in message


def test_bomb_in_a_training_folder_is_an_error_not_a_warning(tmp_path, recwarn):
    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(tmp_path / "train" / name / f"{i}.png")
    bomb = tmp_path / "train" / "dog" / "huge.png"
    write_png_bomb(bomb, 12_000, 12_000)
    splits = load_splits("folder", tmp_path, image_size=16, val_size=1)
    dataset = next(s for s in (splits.train, splits.val, splits.test) if bomb in s.files)
    index = dataset.files.index(bomb)
    _, error = dataset.load(index, train=True)
    assert error is not None and "exceeds the limit" in error and str(bomb) in error
    with pytest.raises(DataError, match="exceeds the limit"):
        decode_image(bomb, 16, train=False)
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def test_images_under_the_limit_open_and_garbage_is_one_line(tmp_path):
    Image.new("RGB", (30, 20), (1, 2, 3)).save(tmp_path / "ok.png")
    with open_image(tmp_path / "ok.png") as image:
        assert image.size == (30, 20)
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    unreadable = r"bad\.png: not a readable image \(UnidentifiedImageError"
    with pytest.raises(DataError, match=unreadable), open_image(tmp_path / "bad.png"):
        pass
    with pytest.raises(DataError, match=r"no such image file"), open_image(tmp_path / "no.png"):
        pass


def test_empty_class_folder_is_an_error(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (20, 20)).save(tmp_path / "train" / "cat" / f"{i}.png")
    (tmp_path / "train" / "dog" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"train: class folder\(s\) \['dog'\] hold no images"):
        load_splits("folder", tmp_path)
