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

Sizes are bounded by the official format's before anything is read: a file (or archive member,
by the size its tar header declares) may hold at most its official image count, 10,000 per
CIFAR-10 batch, 50,000 in CIFAR-100's ``train``, 10,000 in each test file
(:func:`file_limit`); members are unpickled as they stream out of the archive, never read whole
first, and a member lying past what the official archive can hold is refused, not inflated.
"""

from __future__ import annotations

import importlib
import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

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
    train_file_images: int  # images in each official training file


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
    train_file_images=10_000,
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
    train_file_images=50_000,
)
SPECS = {"cifar10": CIFAR10, "cifar100": CIFAR100}
DEFAULT_DIR = Path("data")
#: Images in each official test file.
TEST_FILE_IMAGES = 10_000
#: Bytes of one image's row in ``data``.
IMAGE_BYTES = 3 * 32 * 32
#: Pickle bytes a file may spend per image besides its pixels (its label(s) and file name: about
#: 32 bytes in the official files, more when re-pickled by Python 3), and per file.
PER_IMAGE_SLACK = 512
PER_FILE_SLACK = 1 << 20


def file_limit(spec: CifarSpec, name: str) -> int:
    """The most bytes the official file ``name`` of ``spec`` can take (see the module docstring)."""
    if name == spec.meta_file:
        return PER_FILE_SLACK
    images = TEST_FILE_IMAGES if name == spec.test_file else spec.train_file_images
    return images * (IMAGE_BYTES + PER_IMAGE_SLACK) + PER_FILE_SLACK


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


def read_batch(source: bytes | BinaryIO, where: str) -> dict[str, Any]:
    """Unpickle one CIFAR file (restricted) into a dict with ``str`` keys; DataError otherwise.

    ``source`` is the file's bytes or a binary stream positioned at its start (read as the
    unpickler goes, so a file is never held twice)."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        obj = RestrictedUnpickler(stream, encoding="latin1").load()
    except RefusedGlobalError as exc:
        raise DataError(f"{where}: unsafe pickle, not a CIFAR python-version file ({exc})") from exc
    except _ArchiveReadError:
        raise  # the archive failed, not the pickle: said by its reader
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


class _ArchiveReadError(Exception):
    """Reading an archive member failed (truncated or corrupt archive); ``__cause__`` says how."""


class _MemberStream:
    """An archive member's stream for the unpickler: the archive's own read errors are raised as
    :class:`_ArchiveReadError`, so they are not taken for a broken pickle."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def read(self, size: int = -1) -> bytes:
        return self._guard(self.handle.read, size)

    def readinto(self, buffer: Any) -> int:
        # A tar member's file object (a BufferedReader) has readinto; typing's IO[bytes] omits it.
        return self._guard(self.handle.readinto, buffer)  # type: ignore[attr-defined]

    def readline(self, size: int = -1) -> bytes:
        return self._guard(self.handle.readline, size)

    @staticmethod
    def _guard(method: Any, argument: Any) -> Any:
        try:
            return method(argument)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise _ArchiveReadError() from exc


class _Source:
    """Files of one CIFAR copy: an extracted folder or the .tar.gz (read in place).

    Each wanted file is unpickled straight from its file or archive member, after its size is
    checked against :func:`file_limit` (a tar member's, from its header, before it is read).
    """

    def __init__(self, path: Path, spec: CifarSpec) -> None:
        self.path = path
        self.spec = spec
        self._members: dict[str, tuple[dict[str, Any], str]] | None = None

    def read(self, name: str) -> tuple[dict[str, Any], str]:
        """The unpickled dict of file ``name`` and where it came from (for messages)."""
        if self.path.is_dir():
            file = self.path / name
            if not file.is_file():
                raise DataError(
                    f"{file}: missing (a {self.spec.folder} folder holds "
                    f"{', '.join(self._expected())})"
                )
            self._check_size(file.stat().st_size, name, str(file))
            with open(file, "rb") as handle:
                return read_batch(handle, str(file)), str(file)
        members = self._archive_members()
        member = f"{self.spec.folder}/{name}"
        if member not in members:
            raise DataError(f"{self.path}: archive has no member {member}")
        return members[member]

    def _expected(self) -> list[str]:
        return [*self.spec.train_files, self.spec.test_file, self.spec.meta_file]

    def _check_size(self, size: int, name: str, where: str) -> None:
        limit = file_limit(self.spec, name)
        if size > limit:
            raise DataError(
                f"{where}: {size:,} bytes; the official {self.spec.name} file {name} takes at "
                f"most {limit:,} (refused before reading)"
            )

    def _archive_members(self) -> dict[str, tuple[dict[str, Any], str]]:
        if self._members is None:
            wanted = {f"{self.spec.folder}/{n}": n for n in self._expected()}
            # The official archive holds the wanted files and a short readme: nothing lies past
            # the sum of their limits (a gzip of zeros could otherwise be scanned for hours).
            extent = sum(file_limit(self.spec, n) for n in wanted.values()) + PER_FILE_SLACK
            members: dict[str, tuple[dict[str, Any], str]] = {}
            try:
                with tarfile.open(self.path, "r:*") as archive:
                    for info in archive:
                        name = info.name.removeprefix("./")
                        where = f"{self.path}:{name}"
                        if name in wanted and info.isfile():
                            self._check_size(info.size, wanted[name], where)
                        if info.offset_data + info.size > extent:
                            raise DataError(
                                f"{self.path}: member {info.name} lies past the "
                                f"{extent:,} bytes an official {self.spec.name} archive holds"
                            )
                        if name not in wanted or not info.isfile() or name in members:
                            continue
                        handle = _MemberStream(archive.extractfile(info) or io.BytesIO())
                        members[name] = (read_batch(handle, where), where)  # type: ignore[arg-type]
                        if len(members) == len(wanted):
                            break
            except (tarfile.TarError, EOFError, OSError, zlib.error, _ArchiveReadError) as exc:
                cause = (exc.__cause__ or exc) if isinstance(exc, _ArchiveReadError) else exc
                raise DataError(
                    f"{self.path}: not a readable .tar.gz archive ({_one_line(cause)})"
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
        searched = DEFAULT_DIR if root is None else root
        raise DataError(
            f"{searched}: no {spec.name} found (expected the folder {spec.folder}/ or "
            f"the archive {spec.archive}; pass --data-dir or --download)"
        )
    source = _Source(path, spec)

    meta, where = source.read(spec.meta_file)
    classes = parse_meta(meta, spec, where)

    def load(files: tuple[str, ...]) -> TensorImageDataset:
        images, labels = [], []
        for file in files:
            batch, where = source.read(file)
            x, y = parse_batch(batch, spec, where)
            images.append(x)
            labels.append(y)
        return TensorImageDataset(
            torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
        )

    return load(spec.train_files), load((spec.test_file,)), classes
