"""Shared fixtures: a fresh two-region deployment, an API client, keys, and the real data."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
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


MakeKey = Callable[..., str]


@pytest.fixture
def make_key(deployment: Deployment) -> MakeKey:
    """``make_key("feed", regions=["us"])``: the token of a new key (default: every region)."""
    from fyp.access.keys import KeyStore

    def make(*roles: str, regions: list[str] | None = None, name: str = "test") -> str:
        return KeyStore(deployment).create(name, roles, regions)[1]

    return make


@pytest.fixture
def admin_headers(make_key: MakeKey) -> dict[str, str]:
    """An admin key for every region, and a reason for the operator reads tests make."""
    return {"Authorization": f"Bearer {make_key('admin', name='tests')}", "X-Fyp-Reason": "tests"}


@pytest.fixture
def client(deployment: Deployment, admin_headers: dict[str, str]):  # type: ignore[no-untyped-def]
    """An API client sending an all-regions admin key (and X-Fyp-Reason) by default."""
    from fastapi.testclient import TestClient

    from fyp.serving.app import create_app

    with TestClient(create_app(deployment), headers=admin_headers) as c:
        yield c


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data when present (CI); tests that need it skip on a fresh clone."""
    if not (SHARED_DATA / "kuairec-ear" / "interactions.csv").is_file():
        pytest.skip("../shared/data is absent (real KuaiRec data is only in CI)")
    return SHARED_DATA
