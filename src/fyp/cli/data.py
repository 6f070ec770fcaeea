"""Data commands: import real data sets, build the demo deployment."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Filled in by the datasets work (import kuairec-ear, import kuairec, demo)."""
