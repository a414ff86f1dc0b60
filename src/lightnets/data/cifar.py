"""CIFAR-10 and CIFAR-100, "python version" (Krizhevsky, 2009, *Learning Multiple Layers of
Features from Tiny Images*, https://www.cs.toronto.edu/~kriz/cifar.html).

Read from the official archive (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``)
without extracting it, or from its extracted folder::

    cifar-10-batches-py/  data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/     train, test, meta

Each file is a Python pickle of a dict (``data``: uint8 ndarray (N, 3072), row-major
channel-first 32x32 RGB; ``labels`` or ``fine_labels``: list of N ints; ``filenames``;
``batch_label``). Pickles can run arbitrary code, so they are read with
:class:`RestrictedUnpickler`, which resolves only numpy's array reconstructors.
"""

from __future__ import annotations

import importlib
import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightnets.data.dataset import TensorImageDataset
from lightnets.data.download import download_cifar
from lightnets.errors import DataError, first_line


@dataclass(frozen=True)
class CifarSpec:
    name: str
    folder: str
    archive: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int


CIFAR10 = CifarSpec(
    name="cifar10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
)
CIFAR100 = CifarSpec(
    name="cifar100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
)
SPECS = {"cifar10": CIFAR10, "cifar100": CIFAR100}
DEFAULT_DIR = Path("data")


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed numpy reconstructors."""


def _numpy_core(module: str) -> Any:
    # numpy >= 2 moved numpy.core to numpy._core; old pickles still name numpy.core.
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{module}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes at pickle protocol 2 as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedGlobalError("_codecs.encode is allowed only as (str, 'latin1')")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = _numpy_core("multiarray")
    numeric = _numpy_core("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only.

    ``find_class`` resolves exactly numpy's array reconstructors (``_reconstruct``,
    ``_frombuffer``, ``ndarray``, ``dtype``) and ``_codecs.encode`` for latin-1 bytes; any other
    global (``os.system``, ``builtins.eval``, ...) raises :class:`RefusedGlobalError`.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise RefusedGlobalError(f"refused global {module}.{name}") from None


def restricted_loads(data: bytes) -> Any:
    """``pickle.loads`` restricted to plain data and numpy arrays (see RestrictedUnpickler).

    ``encoding="latin1"`` reads the Python 2 pickles of the official archives (numpy's
    documented requirement); text keys come back as ``str`` whatever protocol wrote them.
    """
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (tarfile's errors list one line per method tried)."""
    first = first_line(exc, default="").rstrip(":")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _as_text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def read_batch(data: bytes, where: str) -> dict[str, Any]:
    """Unpickle one CIFAR file (restricted) into a dict with ``str`` keys; DataError otherwise."""
    try:
        obj = restricted_loads(data)
    except RefusedGlobalError as exc:
        raise DataError(f"{where}: unsafe pickle, not a CIFAR python-version file ({exc})") from exc
    except Exception as exc:  # truncated or garbage streams raise many types
        raise DataError(f"{where}: unreadable or truncated pickle ({_one_line(exc)})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    return {_as_text(k): v for k, v in obj.items()}


def parse_batch(
    batch: dict[str, Any], spec: CifarSpec, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one data batch; return images uint8 (N, 3, 32, 32) and labels int64 (N,)."""
    for key in ("data", spec.label_key):
        if key not in batch:
            raise DataError(f"{where}: missing key {key!r} (keys: {sorted(map(str, batch))})")
    data = batch["data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(
            f"{where}: 'data' must be a uint8 array of shape (N, 3072), found {dtype} {shape}"
        )
    try:
        labels = np.asarray(batch[spec.label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(
            f"{where}: {spec.label_key!r} is not a list of integers in "
            f"0..{spec.num_classes - 1} ({_one_line(exc)})"
        ) from exc
    if labels.shape != (data.shape[0],):
        raise DataError(f"{where}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataError(
            f"{where}: labels must lie in 0..{spec.num_classes - 1}, found "
            f"{labels.min()}..{labels.max()}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def parse_meta(meta: dict[str, Any], spec: CifarSpec, where: str) -> list[str]:
    names = meta.get(spec.names_key)
    if not isinstance(names, list) or len(names) != spec.num_classes:
        found = len(names) if isinstance(names, list) else type(names).__name__
        raise DataError(
            f"{where}: {spec.names_key!r} must list {spec.num_classes} class names, found {found}"
        )
    return [str(_as_text(n)) for n in names]


class _Source:
    """Files of one CIFAR copy: an extracted folder or the .tar.gz (read in place)."""

    def __init__(self, path: Path, spec: CifarSpec) -> None:
        self.path = path
        self.spec = spec
        self._members: dict[str, bytes] | None = None

    def read(self, name: str) -> tuple[bytes, str]:
        if self.path.is_dir():
            file = self.path / name
            if not file.is_file():
                raise DataError(
                    f"{file}: missing (a {self.spec.folder} folder holds "
                    f"{', '.join(self._expected())})"
                )
            return file.read_bytes(), str(file)
        members = self._archive_members()
        member = f"{self.spec.folder}/{name}"
        if member not in members:
            raise DataError(f"{self.path}: archive has no member {member}")
        return members[member], f"{self.path}:{member}"

    def _expected(self) -> list[str]:
        return [*self.spec.train_files, self.spec.test_file, self.spec.meta_file]

    def _archive_members(self) -> dict[str, bytes]:
        if self._members is None:
            wanted = {f"{self.spec.folder}/{n}" for n in self._expected()}
            members: dict[str, bytes] = {}
            try:
                with tarfile.open(self.path, "r:*") as archive:
                    for info in archive:
                        name = info.name.removeprefix("./")
                        if name in wanted and info.isfile():
                            handle = archive.extractfile(info)
                            members[name] = handle.read() if handle else b""
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise DataError(
                    f"{self.path}: not a readable .tar.gz archive ({_one_line(exc)})"
                ) from exc
            self._members = members
        return self._members


def find_cifar(spec: CifarSpec, data_dir: Path | None) -> Path | None:
    """Where a CIFAR copy is: ``data_dir`` itself (folder or archive), or the official
    folder / archive name inside it (default ``./data``). None when nothing is there."""
    root = DEFAULT_DIR if data_dir is None else Path(data_dir)
    if root.is_file():
        return root
    candidates = [root, root / spec.folder, root / spec.archive]
    for candidate in candidates:
        if candidate.is_dir() and (candidate / spec.test_file).is_file():
            return candidate
        if candidate.is_file():
            return candidate
    return None


def load_cifar(
    name: str, data_dir: str | Path | None = None, *, download: bool = False
) -> tuple[TensorImageDataset, TensorImageDataset, list[str]]:
    """Read CIFAR-10 or CIFAR-100: (train, test, class names), every file validated."""
    spec = SPECS[name]
    root = None if data_dir is None else Path(data_dir)
    path = find_cifar(spec, root)
    if path is None and download:
        target = DEFAULT_DIR if root is None else root
        if target.suffix in (".gz", ".tgz"):
            target = target.parent
        path = download_cifar(name, target)
    if path is None:
        where = DEFAULT_DIR if root is None else root
        raise DataError(
            f"{where}: no {spec.name} found (expected the folder {spec.folder}/ or "
            f"the archive {spec.archive}; pass --data-dir or --download)"
        )
    source = _Source(path, spec)

    meta_bytes, where = source.read(spec.meta_file)
    classes = parse_meta(read_batch(meta_bytes, where), spec, where)

    def load(files: tuple[str, ...]) -> TensorImageDataset:
        images, labels = [], []
        for file in files:
            raw, where = source.read(file)
            x, y = parse_batch(read_batch(raw, where), spec, where)
            images.append(x)
            labels.append(y)
        return TensorImageDataset(
            torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
        )

    return load(spec.train_files), load((spec.test_file,)), classes
