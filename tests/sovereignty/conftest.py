"""Fixtures for the sovereignty tests (a module's own fixture of the same name wins)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from consent_helpers import BACKENDS, on_backend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Deployments made in the test keep their stores on SQLite, then PostgreSQL."""
    with on_backend(request.param, monkeypatch):
        yield request.param
