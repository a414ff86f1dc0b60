"""The package type-checks: mypy, configured in pyproject.toml ([tool.mypy]: src/lightnets, the
strictness, the optional runtimes without type information), reports no error.

mypy is in the dev extra (the README's install command installs it, so CI runs this); where it
is not installed the test says so and skips. Its cache goes to the test's temporary folder, so
nothing is left behind (a cold run takes about 25 s of one core).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (pip install -e '.[dev]' installs it)",
)
def test_mypy_finds_no_error_in_the_package(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy"), "--no-color-output"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
