"""Shared fixtures: a fresh two-region deployment, an API client, and the real data."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from fyp.regions.deployment import Deployment

warnings.filterwarnings("ignore", message=".*httpx2.*")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A fresh deployment with regions us and eu (in that order)."""
    with Deployment.init(tmp_path / "dep", ["us", "eu"]) as d:
        yield d


@pytest.fixture
def client(deployment: Deployment):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from fyp.serving.app import create_app

    with TestClient(create_app(deployment)) as c:
        yield c


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data when present (CI); tests that need it skip on a fresh clone."""
    if not (SHARED_DATA / "kuairec-ear" / "interactions.csv").is_file():
        pytest.skip("../shared/data is absent (real KuaiRec data is only in CI)")
    return SHARED_DATA
