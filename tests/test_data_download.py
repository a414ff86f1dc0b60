"""Checksum verification of downloads, on local files only (no network)."""

from __future__ import annotations

import hashlib

import pytest

from lightnets.data.download import CIFAR_ARCHIVES, IDX_FILES, download_file, verify_checksum
from lightnets.errors import DataError


def test_verify_checksum(tmp_path):
    path = tmp_path / "archive.tar.gz"
    path.write_bytes(b"lightnets" * 1000)
    md5 = hashlib.md5(b"lightnets" * 1000).hexdigest()
    sha = hashlib.sha256(b"lightnets" * 1000).hexdigest()
    verify_checksum(path, md5=md5)
    verify_checksum(path, md5=md5.upper(), sha256=sha)
    with pytest.raises(DataError, match=r"archive.tar.gz: md5 checksum .* does not match"):
        verify_checksum(path, md5="0" * 32)
    with pytest.raises(DataError, match=r"sha256 checksum"):
        verify_checksum(path, md5=md5, sha256="f" * 64)
    # The official digests are well-formed MD5 hex strings.
    for _, digest in [
        *CIFAR_ARCHIVES.values(),
        *(x for f in IDX_FILES.values() for x in f.items()),
    ]:
        assert len(digest) == 32 and int(digest, 16) >= 0


def test_download_file_keeps_nothing_unverified(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    good = hashlib.md5(b"payload").hexdigest()
    target = tmp_path / "out" / "file.gz"
    with pytest.raises(DataError, match="download failed"):
        download_file([source.as_uri()], target, md5="1" * 32)
    assert not target.exists() and list(target.parent.iterdir()) == []
    assert (
        download_file([(tmp_path / "missing").as_uri(), source.as_uri()], target, md5=good)
        == target
    )
    assert target.read_bytes() == b"payload"
