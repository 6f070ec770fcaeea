"""The CLI's consoles: what a command prints is the text given, ids and names included."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from fyp.access.keys import KeyStore
from fyp.cli.app import app
from fyp.regions.deployment import Deployment

runner = CliRunner()


def test_emoji_codes_in_ids_and_names_are_printed_as_written(deployment: Deployment) -> None:
    """``:x:`` is valid in an id (``acme:x:7``): an error named user 'acme❌7', and a
    table showed a key named ``ops:smile:`` as 'ops😄'."""
    root = str(deployment.config.root)
    done = subprocess.run(
        [sys.executable, "-m", "fyp", "recommend", root, "acme:x:7"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "no user 'acme:x:7' in any region" in done.stderr
    KeyStore(deployment).create("ops:smile:", ["feed"], None)
    listed = runner.invoke(app, ["keys", "list", root], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "ops:smile:" in listed.output
