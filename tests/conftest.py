"""Shared fixtures: a fresh two-region deployment, an API client, keys, and the real data."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from fyp.regions.deployment import Deployment
from redis_server import (  # noqa: F401 - fixtures for all
    cluster_url,
    own_cluster,
    own_redis,
    own_replicated_cluster,
    own_tls_cluster,
    own_tls_sentinel,
    own_tls_server,
    redis_urls,
    replicated_cluster_url,
    sentinel_urls,
    tls_cluster_url,
    tls_redis_url,
    tls_sentinel_url,
)

warnings.filterwarnings("ignore", message=".*httpx2.*")

# no per-example deadline (hypothesis's default is 200 ms): on the 2-core CI machine under
# load an example stalls past it now and then, a timing failure, not a failed property
settings.register_profile("fyp", deadline=None)
settings.load_profile("fyp")

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


CollectorWork = Callable[[object, object], tuple[int, int]]


@pytest.fixture
def collector_work() -> CollectorWork:
    """``collector_work(root, shared)``: what a full collection visits for ``root`` beyond
    ``shared`` (the objects it tracks, and the references it follows from them). A server
    caches thousands of states and orders; what each holds sets the collector's pauses."""
    import gc

    def work(root: object, shared: object) -> tuple[int, int]:
        seen = {id(o) for o in gc.get_referents(shared)} | {id(shared)}
        todo, objects, references = [root], 0, 0
        while todo:
            o = todo.pop()
            if id(o) in seen or not gc.is_tracked(o) or isinstance(o, type):
                continue  # classes (and all they lead to) are shared by every order
            seen.add(id(o))
            held = gc.get_referents(o)
            objects, references = objects + 1, references + len(held)
            todo.extend(held)
        return objects, references

    return work


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data when present (CI); tests that need it skip on a fresh clone."""
    if not (SHARED_DATA / "kuairec-ear" / "interactions.csv").is_file():
        pytest.skip("../shared/data is absent (real KuaiRec data is only in CI)")
    return SHARED_DATA
