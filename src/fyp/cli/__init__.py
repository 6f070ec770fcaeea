"""The ``fyp`` command: one Typer app, with subcommands per area."""

from __future__ import annotations

from fyp.cli.app import app, main

__all__ = ["app", "main"]
