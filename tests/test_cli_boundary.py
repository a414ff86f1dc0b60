"""The CLI's one error boundary: an unexpected exception is one line (exit 1), --debug and
LIGHTNETS_DEBUG=1 print its traceback, and names the terminal cannot encode never crash it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lightnets.cli.models
from conftest import run_cli
from lightnets.cli import build_parser, main
from lightnets.errors import QUOTE_LIMIT, first_line


def _boom(args):
    raise RuntimeError("injected failure\nsecond line of the message")


@pytest.fixture
def broken_models_command(monkeypatch):
    """`lightnets models` raising an exception that is not a LightnetsError (a bug)."""
    monkeypatch.delenv("LIGHTNETS_DEBUG", raising=False)
    monkeypatch.setattr(lightnets.cli.models, "run", _boom)


def test_unexpected_exception_is_one_line_exit_1(broken_models_command, capsys):
    assert main(["models"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "lightnets models: unexpected error: RuntimeError: injected failure "
        "(rerun with --debug for the traceback)"
    ]


def test_first_line_of_any_exception_message():
    assert first_line(RuntimeError("  injected failure \nsecond line")) == "injected failure"
    assert first_line(RuntimeError("")) == "RuntimeError"  # an empty message: the type's name
    assert first_line(KeyError()) == "KeyError" and first_line(ValueError(""), default="") == ""
    assert first_line(OSError("x" * 300), 200) == "x" * 200


def test_quoted_messages_follow_one_rule():
    # A foreign message is quoted to QUOTE_LIMIT characters, wherever it is quoted: the idiom
    # that spelled out its own length at each place is written nowhere any more (OpenVINO's
    # messages are quoted by their last line, the same length).
    assert first_line(RuntimeError("y" * 500 + "\nmore")) == "y" * QUOTE_LIMIT
    assert first_line(RuntimeError("y" * 500), None) == "y" * 500
    source = Path(__file__).resolve().parents[1] / "src" / "lightnets"
    spelled = [
        f"{path.relative_to(source)}:{number}"
        for path in sorted(source.rglob("*.py"))
        if path.name != "errors.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "str(exc).strip().splitlines()" in line and "[-1]" not in line
    ]
    assert not spelled, f"use lightnets.errors.first_line: {spelled}"


def test_empty_unexpected_message_is_still_one_line(monkeypatch, capsys):
    def silent(args):
        raise RuntimeError()

    monkeypatch.delenv("LIGHTNETS_DEBUG", raising=False)
    monkeypatch.setattr(lightnets.cli.models, "run", silent)
    assert main(["models"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "lightnets models: unexpected error: RuntimeError (rerun with --debug for the traceback)"
    ]


def test_debug_flag_prints_the_traceback(broken_models_command, capsys):
    assert main(["--debug", "models"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in _boom" in err and "RuntimeError: injected failure" in err
    assert (
        err.splitlines()[-1] == "lightnets models: unexpected error: RuntimeError: injected failure"
    )


def test_debug_environment_variable_prints_the_traceback(
    broken_models_command, monkeypatch, capsys
):
    monkeypatch.setenv("LIGHTNETS_DEBUG", "1")
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and "in _boom" in err


def test_user_error_is_still_exit_2_without_traceback(capsys):
    assert main(["--debug", "models", "nosuchnet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.skipif(os.name != "posix", reason="byte file names are a POSIX notion")
def test_non_utf8_name_is_printed_escaped_on_a_strict_utf8_terminal(tmp_path):
    # A checkpoint name that is not UTF-8, on a terminal whose encoding refuses surrogates.
    name = os.fsencode(tmp_path) + b"/caf\xe9.pt"
    result = run_cli(
        ["profile", name.decode("utf-8", "surrogateescape")],
        env={"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"},
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "UnicodeEncodeError" not in line and "Traceback" not in line
    assert line.startswith("lightnets profile: error: checkpoint not found:")
    assert "caf\\udce9.pt" in line


def _subparsers() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def _option(parser, flag: str):
    return next(a for a in parser._actions if flag in a.option_strings)


def test_help_says_what_name_accepts_and_what_defaults_are():
    commands = _subparsers()
    for command in ("profile", "roofline", "bench", "export", "quantize", "compress", "predict"):
        name = next(a for a in commands[command]._actions if a.dest == "name")
        assert name.help.startswith("model name (see `lightnets models`) or file: "), command
    assert "exported ONNX" in next(a for a in commands["bench"]._actions if a.dest == "name").help
    export_format = _option(commands["export"], "--format")
    from lightnets.deploy.exporters import FORMATS

    assert export_format.metavar == "{" + ",".join(FORMATS) + "}"
    assert {"onnx", "openvino", "pt2", "executorch", "litert", "coreml"} <= set(FORMATS)
    assert export_format.default == "onnx" and "default: onnx" in export_format.help

    from lightnets.train.recipes import RECIPES

    train = commands["train"]
    for flag in ("--epochs", "--optimizer", "--momentum", "--gamma", "--label-smoothing"):
        assert _option(train, flag).help and "default" in _option(train, flag).help, flag
    for flag in ("--val-size", "--data-dir", "--dataset"):
        assert "default" in _option(train, flag).help, flag
    assert _option(train, "--epochs").metavar == "EPOCHS"
    epochs = ", ".join(f"{name} {recipe.epochs}" for name, recipe in RECIPES.items())
    assert f"default: the recipe's: {epochs}" in _option(train, "--epochs").help
    assert f"default {RECIPES['cifar'].momentum:g}" in _option(train, "--momentum").help
    assert "default: synthetic" in _option(train, "--dataset").help
