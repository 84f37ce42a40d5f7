"""Every command's --help prints: argparse formats help text with %, which a plain "1%" in a help breaks."""

from __future__ import annotations

import argparse

import pytest

from zoo_cli.main import build_parser, main


def _commands() -> list[list[str]]:
    """Every command and sub-command as the words that reach it."""
    found: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found.append([*words, name])
                    walk(child, [*words, name])

    walk(build_parser(), [])
    return found


@pytest.mark.parametrize("words", _commands(), ids=" ".join)
def test_every_commands_help_prints(words: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code == 0
    assert "usage: zoo" in capsys.readouterr().out
