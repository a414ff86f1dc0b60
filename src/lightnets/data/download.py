"""Optional download of the official archives, verified against their published checksums.

Only used with ``download=True`` (``--download``); never by the tests. A file is written to a
temporary name next to its destination, verified, then renamed: a failed or corrupted download
leaves nothing behind, and an existing file is never overwritten by a bad one.
"""

from __future__ import annotations

import functools
import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from lightnets.errors import DataError
from lightnets.fileio import atomic_path

# Official MD5 sums: https://www.cs.toronto.edu/~kriz/cifar.html, and the MNIST / Fashion-MNIST
# READMEs (the same sums torchvision checks).
CIFAR_ARCHIVES = {
    "cifar10": ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
IDX_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
IDX_FILES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
_CHUNK = 1 << 20


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: str | Path, *, md5: str | None = None, sha256: str | None = None) -> None:
    """Raise DataError unless ``path`` has the given MD5 and/or SHA-256 hex digest."""
    if md5 is None and sha256 is None:
        raise ValueError("verify_checksum needs md5 or sha256")
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        found = file_digest(path, algorithm)
        if found != expected.lower():
            raise DataError(
                f"{path}: {algorithm} checksum {found} does not match the official {expected}"
            )


def download_file(urls: tuple[str, ...] | list[str], destination: str | Path, *, md5: str) -> Path:
    """Fetch the first URL that works into ``destination``, verified against ``md5``.

    An existing file with the right checksum is kept; a wrong one is replaced.
    """
    destination = Path(destination)
    if destination.is_file():
        try:
            verify_checksum(destination, md5=md5)
            return destination
        except DataError:
            pass
    destination.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        try:
            with atomic_path(destination, ".part") as temp:
                with temp.open("wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                    for block in iter(functools.partial(response.read, _CHUNK), b""):
                        out.write(block)
                verify_checksum(temp, md5=md5)
            return destination
        except (urllib.error.URLError, OSError, DataError) as exc:
            errors.append(f"{url}: {exc}")
    raise DataError(f"{destination}: download failed ({'; '.join(errors)})")


def download_cifar(name: str, directory: str | Path) -> Path:
    """Download the official CIFAR archive into ``directory``; it is read in place, unextracted."""
    filename, md5 = CIFAR_ARCHIVES[name]
    return download_file([CIFAR_URL + filename], Path(directory) / filename, md5=md5)


def download_idx(name: str, directory: str | Path) -> Path:
    """Download the four official IDX .gz files of MNIST or Fashion-MNIST into ``directory``."""
    directory = Path(directory)
    for filename, md5 in IDX_FILES[name].items():
        download_file([m + filename for m in IDX_MIRRORS[name]], directory / filename, md5=md5)
    return directory
