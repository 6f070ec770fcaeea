"""``fyp serve`` checks its options before it opens anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fyp.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize("root_path", ["fyp", "/fyp/"])
def test_a_malformed_root_path_is_refused(tmp_path: Path, root_path: str) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path), "--root-path", root_path])
    assert result.exit_code == 2
    words = " ".join(result.output.replace("│", " ").split())  # unwrap rich's error panel
    assert "a root path starts with / and does not end with one" in words


def test_bad_input_to_init_serve_and_status_exits_2_in_one_line(tmp_path: Path) -> None:
    for args in (
        ["status", str(tmp_path / "nowhere")],
        ["init", str(tmp_path / "x"), "--regions", "US"],
        ["serve", str(tmp_path), "--port", "99999"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "fyp", *args], capture_output=True, text=True, check=False
        )
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()  # nothing created for a bad region name
    done = subprocess.run(
        [sys.executable, "-m", "fyp", "status", str(tmp_path / ("a-rather-long-name" * 6))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1  # no wrapping


def test_an_error_message_keeps_its_brackets(tmp_path: Path) -> None:
    """rich read ``[regions.eu.policy]`` in a message as markup and dropped it, so a
    config error no longer said where the mistake was."""
    done = subprocess.run(
        [sys.executable, "-m", "fyp", "init", str(tmp_path / "d"), "--regions", "us,eu"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    toml = tmp_path / "d" / "fyp.toml"
    text = toml.read_text(encoding="utf-8")
    assert "[regions.eu.policy]\n" in text
    text = text.replace("[regions.eu.policy]\n", '[regions.eu.policy]\nbanned_term = ["x"]\n')
    toml.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "fyp", "moderate", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3
    assert "[regions.eu.policy]" in done.stderr, done.stderr
