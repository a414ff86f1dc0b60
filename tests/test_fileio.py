"""The one way lightnets writes files: atomically, with a plain file's permissions."""

from __future__ import annotations

import os

import pytest

from lightnets.errors import InvalidArgumentError
from lightnets.fileio import atomic_path, check_writable, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "last.pt"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_successful_write_replaces_with_a_plain_files_mode(tmp_path):
    target = tmp_path / "summary.json"
    write_text_atomic(target, "{}\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "{}\n"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_check_writable_names_what_is_wrong(tmp_path):
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        check_writable(tmp_path / "missing" / "model.onnx")
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        check_writable(tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"must end in \.png"):
        check_writable(tmp_path / "plot.txt", suffixes=(".png",))
    assert check_writable(tmp_path / "model.onnx") == tmp_path / "model.onnx"
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
