"""Start-up: ``lightnets --help`` imports no heavy library; ``lightnets CMD --help`` still shows
the command's full help (behaviour, not timings: benchmarks time)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lightnets.cli import COMMANDS, build_parser

HEAVY = ("torch", "onnxruntime", "openvino", "matplotlib", "numpy")


def imported_after(code: str) -> dict[str, bool]:
    """Which of HEAVY a fresh interpreter has imported after running ``code``."""
    report = f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    probe = f"{code}\nimport json, sys\n{report}"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_help_imports_no_heavy_library():
    loaded = imported_after(
        "import contextlib, io\n"
        "from lightnets.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0\n"
        "assert 'models' in out.getvalue() and 'quantize' in out.getvalue()"
    )
    assert not any(loaded.values()), loaded


def test_models_lists_the_zoo_without_torch():
    loaded = imported_after(
        "import contextlib, io, json\n"
        "from lightnets.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['models', '--json']) == 0\n"
        "assert len(json.loads(out.getvalue())) == 6"
    )
    assert not loaded["torch"], loaded


def test_import_lightnets_is_light_until_a_model_is_asked_for():
    assert not any(imported_after("import lightnets, lightnets.cli").values())
    assert imported_after("import lightnets\nlightnets.list_models()")["torch"]


@pytest.mark.parametrize("command", ["compare", "train", "models"])
def test_a_commands_help_is_its_full_help(command, capsys):
    from lightnets.cli import main

    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    lazy = capsys.readouterr().out
    full = build_parser()._subparsers._group_actions[0].choices[command].format_help()
    assert lazy == full


def test_the_listing_is_the_full_parsers():
    full = build_parser()
    lazy = build_parser(full=False)
    assert full.format_help() == lazy.format_help()
    assert list(full._subparsers._group_actions[0].choices) == list(COMMANDS)
