"""MNIST and Fashion-MNIST in the IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/;
Xiao et al., 2017, *Fashion-MNIST*, arXiv:1708.07747), gzip-compressed or raw.

An IDX file is a big-endian header -- two zero bytes, a type code (0x08: unsigned byte), the
number of dimensions, then one uint32 per dimension -- followed by exactly prod(dims) values.
Images: magic 0x00000803, dims (N, 28, 28); labels: magic 0x00000801, dims (N,).

The 28x28 grayscale images are zero-padded to 32x32 when read (2 pixels on every side), so the
CIFAR variants of the networks see the geometry they were built for; they stay one channel in
memory and are expanded to 3 channels per batch, on the device, by the loader.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lightnets.data.dataset import TensorImageDataset
from lightnets.data.download import download_idx
from lightnets.errors import DataError

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
PADDED_SIZE = 32
#: Largest IDX file accepted once inflated: 2 GiB, 40x Fashion-MNIST's training images.
MAX_IDX_BYTES = 1 << 31

DEFAULT_DIRS = {
    "mnist": Path("/usr/share/datasets/mnist"),
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
}
CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": [
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
    ],
}
# (split, kind) -> official file stem; ".gz" or raw, "-idx3-" or ".idx3-" spellings accepted.
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _open_stream(path: Path) -> io.BufferedIOBase:
    """The file's bytes, inflated on the fly when it is gzip-compressed."""
    with path.open("rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if compressed else path.open("rb")


def _read_header(stream: io.BufferedIOBase, path: Path, magic: int) -> tuple[int, tuple[int, ...]]:
    """(header bytes, dims) of an IDX stream whose magic number must be ``magic``."""
    head = stream.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: {len(head)} bytes, too short for an IDX header")
    found = int.from_bytes(head, "big")
    if found != magic:
        raise DataError(
            f"{path}: IDX magic number 0x{found:08x}, expected 0x{magic:08x} "
            f"({'images' if magic == IMAGE_MAGIC else 'labels'})"
        )
    ndim = magic & 0xFF
    raw = stream.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    return 4 + 4 * ndim, tuple(int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(ndim))


def read_idx(
    path: str | Path,
    magic: int,
    *,
    item_shape: tuple[int, ...] | None = None,
    max_bytes: int = MAX_IDX_BYTES,
) -> np.ndarray:
    """Read one IDX file of unsigned bytes, checking magic number, dims and exact length.

    The header is checked before the data are read: ``item_shape`` (e.g. (28, 28)) must match
    the dims after the first, and the size the dims describe must not exceed ``max_bytes``.
    The file (or its gzip stream) is then read up to one byte past that size, so a file that
    inflates far beyond what its header says is refused without inflating it.
    """
    path = Path(path)
    try:
        with _open_stream(path) as stream:
            header, dims = _read_header(stream, path, magic)
            if item_shape is not None and dims[1:] != item_shape:
                found = "x".join(map(str, dims[1:]))
                raise DataError(
                    f"{path}: items are {found}, expected {'x'.join(map(str, item_shape))}"
                )
            expected = math.prod(dims)  # Python integers: no overflow
            if expected > max_bytes:
                raise DataError(
                    f"{path}: IDX dims {dims} describe {expected:,} bytes, more than the "
                    f"{max_bytes:,}-byte limit (a corrupt header?)"
                )
            data = stream.read(expected + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip file ({exc})") from exc
    if len(data) < expected:
        raise DataError(
            f"{path}: {header + len(data)} bytes for IDX dims {dims}, expected "
            f"{header + expected} (truncated)"
        )
    if len(data) > expected:
        raise DataError(
            f"{path}: more than the {header + expected} bytes IDX dims {dims} describe "
            "(trailing data)"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def find_idx_file(root: Path, split: str, kind: str) -> Path | None:
    stem = FILES[(split, kind)]
    dotted = stem.replace("-idx", ".idx")
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        if (root / name).is_file():
            return root / name
    return None


def _read_split(root: Path, split: str, num_classes: int) -> TensorImageDataset:
    image_path = find_idx_file(root, split, "images")
    label_path = find_idx_file(root, split, "labels")
    if image_path is None or label_path is None:
        kind = "images" if image_path is None else "labels"
        raise DataError(f"{root}: missing {FILES[(split, kind)]}[.gz]")
    images = read_idx(image_path, IMAGE_MAGIC, item_shape=(28, 28))
    labels = read_idx(label_path, LABEL_MAGIC)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{label_path}: {labels.shape[0]} labels for {images.shape[0]} images "
            f"in {image_path.name}"
        )
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"{label_path}: label {labels.max()} outside 0..{num_classes - 1}")
    pad = (PADDED_SIZE - 28) // 2
    x = F.pad(torch.from_numpy(images.copy()).unsqueeze(1), (pad, pad, pad, pad))
    return TensorImageDataset(x, torch.from_numpy(labels.astype(np.int64)))


def load_idx(
    name: str, data_dir: str | Path | None = None, *, download: bool = False
) -> tuple[TensorImageDataset, TensorImageDataset, list[str]]:
    """Read MNIST or Fashion-MNIST: (train, test, class names), images padded to 32x32."""
    root = DEFAULT_DIRS[name] if data_dir is None else Path(data_dir)
    missing = any(find_idx_file(root, s, k) is None for s, k in FILES)
    if missing and download:
        target = Path("data") / name if data_dir is None else root
        download_idx(name, target)
        root = target
    elif missing and not root.is_dir():
        hint = " (install Debian's dataset-fashion-mnist," if name == "fashion-mnist" else " ("
        raise DataError(f"{root}: no such directory{hint} pass --data-dir, or --download)")
    classes = CLASSES[name]
    return (
        _read_split(root, "train", len(classes)),
        _read_split(root, "test", len(classes)),
        classes,
    )
