"""MNIST / Fashion-MNIST IDX reader: generated files, damaged files, and the real data set."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import needs_fashion
from lightnets.data import load_splits
from lightnets.data.idx import IMAGE_MAGIC, LABEL_MAGIC, load_idx, read_idx
from lightnets.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_set(
    root: Path, rng: np.random.Generator, n_train: int = 12, n_test: int = 5, compress: bool = True
) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_idx_set_loads_padded_to_32(tmp_path, compress):
    arrays = write_set(tmp_path, np.random.default_rng(0), compress=compress)
    train, test, classes = load_idx("mnist", tmp_path)
    assert classes == [str(d) for d in range(10)]
    assert train.images.shape == (12, 1, 32, 32) and test.images.shape == (5, 1, 32, 32)
    assert torch.equal(
        train.images[:, 0, 2:30, 2:30], torch.from_numpy(arrays["train-images-idx3-ubyte"])
    )
    border = train.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.sum() == 0
    assert torch.equal(test.labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())


def test_damaged_idx_files_name_the_file(tmp_path):
    rng = np.random.default_rng(1)
    images = idx_bytes(rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    labels = idx_bytes(rng.integers(0, 10, 4, dtype=np.uint8))
    cases = {
        "truncated": (images[:-10], IMAGE_MAGIC, r"truncated\.idx: .* \(truncated\)"),
        "trailing": (images + b"\x00", IMAGE_MAGIC, r"trailing\.idx: .*trailing data"),
        "magic": (
            labels,
            IMAGE_MAGIC,
            r"magic\.idx: IDX magic number 0x00000801, expected "
            r"0x00000803",
        ),
        "short": (b"\x00\x00", LABEL_MAGIC, r"short\.idx: 2 bytes"),
        "header": (images[:9], IMAGE_MAGIC, r"header\.idx: truncated IDX header"),
    }
    for name, (data, magic, message) in cases.items():
        path = tmp_path / f"{name}.idx"
        path.write_bytes(data)
        with pytest.raises(DataError, match=message):
            read_idx(path, magic)
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(gzip.compress(images)[:-20])
    with pytest.raises(DataError, match=r"cut\.idx\.gz: truncated or corrupt gzip"):
        read_idx(path, IMAGE_MAGIC)


def test_inconsistent_sets_are_refused(tmp_path):
    write_set(tmp_path / "a", np.random.default_rng(2))
    (tmp_path / "a" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(4, np.uint8)))
    )
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: 4 labels for 5 images"):
        load_idx("fashion-mnist", tmp_path / "a")
    write_set(tmp_path / "b", np.random.default_rng(2))
    (tmp_path / "b" / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.full(12, 10, np.uint8)))
    )
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: label 10 outside 0..9"):
        load_idx("fashion-mnist", tmp_path / "b")
    write_set(tmp_path / "c", np.random.default_rng(2))
    (tmp_path / "c" / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"c: missing train-images-idx3-ubyte"):
        load_idx("mnist", tmp_path / "c")
    with pytest.raises(DataError, match=r"nowhere: no such directory"):
        load_idx("mnist", tmp_path / "nowhere")


@needs_fashion
def test_real_fashion_mnist_and_validation_split():
    a = load_splits("fashion-mnist", seed=0)
    assert a.classes == [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    assert (len(a.train), len(a.val), len(a.test)) == (55000, 5000, 10000)
    assert len(a.train_indices) + len(a.val_indices) == 60000
    assert set(a.train_indices.tolist()).isdisjoint(a.val_indices.tolist())
    assert a.input_size == (3, 32, 32) and a.train.images.shape[1:] == (1, 32, 32)
    # Every class appears in the validation split in a plausible share (~500 each).
    counts = torch.bincount(a.val.labels, minlength=10)
    assert counts.min() > 400 and counts.max() < 600
    # Known facts of the files: balanced classes, first test label "Ankle boot".
    assert torch.bincount(torch.cat([a.train.labels, a.val.labels])).tolist() == [6000] * 10
    assert torch.bincount(a.test.labels).tolist() == [1000] * 10
    assert a.test.labels[0].item() == 9
    # Same seed -> same split; another seed -> another split; train_subset takes the first N.
    b = load_splits("fashion-mnist", seed=0, train_subset=1000)
    assert torch.equal(a.val_indices, b.val_indices)
    assert torch.equal(b.train_indices, a.train_indices[:1000])
    assert torch.equal(b.train.images, a.train.images[:1000])
    c = load_splits("fashion-mnist", seed=1, val_size=100)
    assert len(c.val) == 100 and not torch.equal(c.val_indices, a.val_indices[:100])
    assert a.mean == c.mean and a.std == c.std
    assert a.mean[0] == a.mean[1] == a.mean[2]
