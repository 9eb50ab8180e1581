"""Every command's --help prints (argparse %-formats help texts: a docstring's "95 % interval" once made
`asr-stream eval --help` a traceback)."""

from __future__ import annotations

import argparse

import pytest

from asr_stream.cli import build_parser, main


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [name for name in sub.choices if name != "train"]  # train hands its arguments to LightningCLI


def test_there_are_commands_to_check():
    assert {"transcribe", "mic", "eval", "sweep", "serve"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_help_prints_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--help" in out


def test_top_level_help_prints(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "transcribe" in capsys.readouterr().out
