"""Every ```python block of README.md and docs/*.md runs as pasted, so the docs cannot rot.

Each block runs on its own, in a fresh namespace, in a temporary working directory, on the CPU
(blocks are meant to be copied one at a time). A block written as a REPL session (``>>>``) is
run as a doctest, its shown output checked. A block may opt out only with a visible reason on
one of its lines: ``# docs-test: skip (the reason)``.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

from conftest import FASHION

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
SKIP = re.compile(r"#\s*docs-test:\s*skip\s*\((?P<reason>[^)]+)\)")


def python_blocks() -> list[pytest.param]:
    params = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            params.append(pytest.param(match.group(1), where, id=where))
    return params


BLOCKS = python_blocks()


def test_the_docs_have_python_blocks():
    # The collector itself must find the blocks (a broken pattern would make this file vacuous).
    assert len(BLOCKS) >= 3
    assert any(p.values[1].startswith("README.md") for p in BLOCKS)


def run_block(code: str, where: str) -> None:
    if ">>> " in code:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(code, {"__name__": "__docs__"}, where, where, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        runner.run(test)
        failed, _ = runner.summarize(verbose=False)
        assert failed == 0, f"{where}: doctest failed (see the output above)"
        return
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize(("code", "where"), BLOCKS)
def test_python_block_runs(code, where, tmp_path, monkeypatch):
    skip = SKIP.search(code)
    if skip:
        pytest.skip(f"{where}: {skip.group('reason').strip()}")
    if "fashion-mnist" in code and not FASHION.is_dir():
        pytest.skip(f"{where} reads Fashion-MNIST, not installed in {FASHION}")
    monkeypatch.chdir(tmp_path)  # whatever a block writes lands in a temporary directory
    run_block(code, where)
