"""``fyp serve`` checks its options before it opens anything."""

from __future__ import annotations

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
