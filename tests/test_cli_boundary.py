"""The CLI's one error boundary: an unexpected exception is one line (exit 1), --debug and
LIGHTNETS_DEBUG=1 print its traceback, and names the terminal cannot encode never crash it."""

from __future__ import annotations

import os

import pytest

import lightnets.cli.models
from conftest import run_cli
from lightnets.cli import main
from lightnets.errors import first_line


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
