"""Every command's ``--help`` shows its whole text: help texts name config sections
(``[feed] rank_ahead``) and placeholders, which a markup renderer could swallow."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fyp.cli.app import app

runner = CliRunner()


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _words(text: str) -> list[str]:
    """The words a reader must see: Markdown escapes and code ticks are not shown."""
    return text.replace("\\[", "[").replace("`", "").split()


def test_the_command_tree_is_walked() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"train", "import kuairec", "erasure verify", "experiments report"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "fyp")
def test_help_shows_every_word_of_the_command_and_its_options(path: tuple[str, ...]) -> None:
    command = dict(COMMANDS)[path]
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.replace("│", " ").split())
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    for text in texts:
        # an angle-bracket placeholder is an HTML tag to the Markdown renderer: use CAPS
        assert not re.search(r"<[a-z]", text), f"{' '.join(path)}: {text!r}"
        missing = [w for w in _words(text) if w not in shown]
        assert not missing, f"{' '.join(path)}: not shown: {missing}"
