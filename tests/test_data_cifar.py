"""CIFAR-10/100 readers against tiny archives written in the exact official format."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lightnets.data import load_splits
from lightnets.data.cifar import load_cifar, restricted_loads
from lightnets.errors import DataError, InvalidArgumentError


def py2_pickle(obj) -> bytes:
    """Protocol-2 pickle as Python 2's cPickle wrote the official files: text as 8-bit strings
    (SHORT_BINSTRING / BINSTRING) and arrays via numpy.core.multiarray._reconstruct."""
    out = bytearray(b"\x80\x02")

    def text(raw: bytes) -> None:
        out.extend(
            b"U" + bytes([len(raw)]) + raw
            if len(raw) < 256
            else b"T" + struct.pack("<i", len(raw)) + raw
        )

    def write(o) -> None:
        if o is None:
            out.extend(b"N")
        elif isinstance(o, bool):
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.extend(
                b"K" + bytes([o])
                if 0 <= o < 256
                else b"M" + struct.pack("<H", o)
                if 0 <= o < 65536
                else b"J" + struct.pack("<i", o)
            )
        elif isinstance(o, str):
            text(o.encode("latin1"))
        elif isinstance(o, bytes):
            text(o)
        elif isinstance(o, list):
            out.extend(b"]")
            if o:
                out.extend(b"(")
                for item in o:
                    write(item)
                out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}")
            if o:
                out.extend(b"(")
                for key, value in o.items():
                    write(key)
                    write(value)
                out.extend(b"u")
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8 and o.ndim == 2
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            out.extend(b"K\x00\x85U\x01b\x87R(K\x01")
            write(o.shape[0])
            write(o.shape[1])
            out.extend(b"\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R")
            out.extend(b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
            text(o.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    write(obj)
    return bytes(out + b".")


def dump(obj, style: str) -> bytes:
    if style == "py2":
        return py2_pickle(obj)
    keyed = {k.encode(): v for k, v in obj.items()}  # Python 3 re-pickles: bytes keys
    return pickle.dumps(keyed, protocol=2 if style == "py3-protocol2" else 4)


def cifar_files(
    kind: str, rng: np.random.Generator, per_batch: int = 6, test: int = 7, style: str = "py2"
) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Official member names -> file bytes, and the expected images/labels."""
    files: dict[str, bytes] = {}
    expected: dict[str, list] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    classes = 10 if kind == "cifar10" else 100

    def batch(n: int, label: str, split: str) -> dict:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, classes, n).tolist()
        expected[f"{split}_x"].append(data.reshape(n, 3, 32, 32))
        expected[f"{split}_y"].append(fine)
        names = [f"img_{i}.png" for i in range(n)]
        if kind == "cifar10":
            return {"batch_label": label, "labels": fine, "data": data, "filenames": names}
        coarse = [f // 5 for f in fine]
        return {
            "filenames": names,
            "batch_label": label,
            "fine_labels": fine,
            "coarse_labels": coarse,
            "data": data,
        }

    if kind == "cifar10":
        for i in range(1, 6):
            files[f"data_batch_{i}"] = dump(
                batch(per_batch, f"training batch {i} of 5", "train"), style
            )
        files["test_batch"] = dump(batch(test, "testing batch 1 of 1", "test"), style)
        files["batches.meta"] = dump(
            {
                "num_cases_per_batch": per_batch,
                "label_names": [f"c10_{i}" for i in range(10)],
                "num_vis": 3072,
            },
            style,
        )
    else:
        files["train"] = dump(batch(5 * per_batch, "training batch 1 of 1", "train"), style)
        files["test"] = dump(batch(test, "testing batch 1 of 1", "test"), style)
        files["meta"] = dump(
            {
                "fine_label_names": [f"c100_{i}" for i in range(100)],
                "coarse_label_names": [f"sc_{i}" for i in range(20)],
            },
            style,
        )
    arrays = {
        k: (np.concatenate(v) if k.endswith("x") else np.concatenate(v).astype(np.int64))
        for k, v in expected.items()
    }
    return files, arrays


FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
ARCHIVE = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


def write_folder(root: Path, kind: str, files: dict[str, bytes]) -> Path:
    folder = root / FOLDER[kind]
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def write_archive(root: Path, kind: str, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / ARCHIVE[kind]
    with tarfile.open(path, "w:gz") as archive:
        for name, data in {"readme.html": b"<html></html>", **files}.items():
            info = tarfile.TarInfo(f"{FOLDER[kind]}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def check(loaded, arrays, classes: list[str]) -> None:
    train, test, names = loaded
    assert names == classes
    assert torch.equal(train.images, torch.from_numpy(arrays["train_x"]))
    assert torch.equal(train.labels, torch.from_numpy(arrays["train_y"]))
    assert torch.equal(test.images, torch.from_numpy(arrays["test_x"]))
    assert torch.equal(test.labels, torch.from_numpy(arrays["test_y"]))
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
@pytest.mark.parametrize("layout", ["folder", "archive"])
def test_official_format_loads_exactly(tmp_path, kind, layout):
    files, arrays = cifar_files(kind, np.random.default_rng(1))
    writer = write_folder if layout == "folder" else write_archive
    path = writer(tmp_path, kind, files)
    prefix = "c10_" if kind == "cifar10" else "c100_"
    classes = [f"{prefix}{i}" for i in range(10 if kind == "cifar10" else 100)]
    # Found from the parent directory, and from the exact path of the folder / archive.
    check(load_cifar(kind, tmp_path), arrays, classes)
    check(load_cifar(kind, path), arrays, classes)


@pytest.mark.parametrize("style", ["py3-protocol2", "py3-protocol4"])
def test_python3_repickled_files_load(tmp_path, style):
    files, arrays = cifar_files("cifar10", np.random.default_rng(2), style=style)
    write_folder(tmp_path, "cifar10", files)
    check(load_cifar("cifar10", tmp_path), arrays, [f"c10_{i}" for i in range(10)])


def test_load_splits_cifar_validation_split(tmp_path):
    files, arrays = cifar_files("cifar100", np.random.default_rng(3))
    write_archive(tmp_path, "cifar100", files)
    splits = load_splits("cifar100", tmp_path, val_size=8, train_subset=10, seed=5)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 8, 7)
    assert splits.input_size == (3, 32, 32) and len(splits.classes) == 100
    assert set(splits.train_indices.tolist()).isdisjoint(splits.val_indices.tolist())
    full = torch.from_numpy(arrays["train_x"])
    assert torch.equal(splits.val.images, full[splits.val_indices])
    assert torch.equal(splits.train.images, full[splits.train_indices])
    # Normalisation statistics of the whole official training set, per channel.
    mean = arrays["train_x"].astype(np.float64).mean(axis=(0, 2, 3)) / 255
    std = arrays["train_x"].astype(np.float64).std(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(splits.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(splits.std, std, rtol=1e-9)
    with pytest.raises(InvalidArgumentError, match="val_size=30"):
        load_splits("cifar100", tmp_path, val_size=30)
    with pytest.raises(InvalidArgumentError, match="train_subset=23"):
        load_splits("cifar100", tmp_path, val_size=8, train_subset=23)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    files, _ = cifar_files("cifar10", np.random.default_rng(4))
    files["data_batch_3"] = pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=2)
    write_folder(tmp_path, "cifar10", files)
    with pytest.raises(DataError, match=r"data_batch_3.*refused global (posix|os)\.system"):
        load_cifar("cifar10", tmp_path)
    assert not marker.exists()
    for payload in (pickle.dumps(eval), pickle.dumps(np.load)):
        with pytest.raises(pickle.UnpicklingError, match="refused global"):
            restricted_loads(payload)


@pytest.mark.parametrize(
    ("member", "mutate", "message"),
    [
        ("data_batch_2", lambda b: b[: len(b) // 2], r"data_batch_2: unreadable or truncated"),
        ("test_batch", lambda b: b"not a pickle", r"test_batch: unreadable"),
        (
            "batches.meta",
            lambda b: pickle.dumps({"label_names": ["a"]}),
            r"batches.meta: 'label_names' must list 10",
        ),
        (
            "data_batch_1",
            lambda b: pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}),
            r"data_batch_1: labels must lie in 0..9",
        ),
        (
            "data_batch_1",
            lambda b: pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}),
            r"data_batch_1: 1 labels for 2 images",
        ),
        (
            "data_batch_5",
            lambda b: pickle.dumps({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}),
            r"data_batch_5: 'data' must be a uint8 array of shape \(N, 3072\)",
        ),
        (
            "data_batch_4",
            lambda b: pickle.dumps({"labels": [0, 1]}),
            r"data_batch_4: missing key 'data'",
        ),
        ("data_batch_4", lambda b: pickle.dumps([1, 2]), r"data_batch_4: expected a pickled dict"),
    ],
)
def test_bad_files_name_the_file(tmp_path, member, mutate, message):
    files, _ = cifar_files("cifar10", np.random.default_rng(5))
    files[member] = mutate(files[member])
    write_folder(tmp_path, "cifar10", files)
    with pytest.raises(DataError, match=message):
        load_cifar("cifar10", tmp_path)


def test_missing_and_truncated_archives(tmp_path):
    with pytest.raises(DataError, match="no cifar10 found"):
        load_cifar("cifar10", tmp_path)
    files, _ = cifar_files("cifar10", np.random.default_rng(6))
    del files["data_batch_5"]
    write_folder(tmp_path / "a", "cifar10", files)
    with pytest.raises(DataError, match=r"data_batch_5: missing"):
        load_cifar("cifar10", tmp_path / "a")
    archive = write_archive(tmp_path / "b", "cifar10", files)
    with pytest.raises(
        DataError,
        match=r"cifar-10-python.tar.gz: archive has no member "
        r"cifar-10-batches-py/data_batch_5",
    ):
        load_cifar("cifar10", archive)
    files, _ = cifar_files("cifar10", np.random.default_rng(6))
    archive = write_archive(tmp_path / "c", "cifar10", files)
    archive.write_bytes(archive.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz: not a readable .tar.gz"):
        load_cifar("cifar10", tmp_path / "c")
