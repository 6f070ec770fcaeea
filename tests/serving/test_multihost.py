"""Several serving hosts of one region: two real ``fyp serve`` processes on one
deployment directory, answering a user's requests in turn, as a load balancer without
sticky routing sends them (docs/architecture.md, "Several serving hosts").

The PostgreSQL deployment keeps both regions' stores on the test server
(``FYP_TEST_POSTGRES_URL``), the served log of us on Redis (``FYP_TEST_REDIS_URL``) and
that of eu in its store, so both kinds of served log are shared; host b's clock is 5 s
behind host a's, as two machines' clocks may be. Even users live in us, odd ones in eu.
The servers are shared by the module's tests; each test uses users of its own, so none
depends on another having run (pytest-xdist may split the module between workers: each
then builds its own deployment, schemas and Redis database).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from feed.conftest import build
from fyp import config
from fyp.access.keys import KeyStore
from fyp.access.ring import REFRESH_S
from fyp.models.artifacts import current_version
from fyp.models.region_model import RegionModel
from fyp.regions.deployment import Deployment
from fyp.storage.served_logs import ExternalServedLog
from fyp.storage.sqlite_served_log import SERVED_SWEEP_S
from redis_server import flush, module_database_url
from serving.servers import Server, start_all
from storage.postgres_server import SERVER as POSTGRES
from storage.postgres_server import drop_schemas, schema_url

pytestmark = pytest.mark.slow

PERSONAL_SOURCES = {"embedding", "category_interest", "co_engagement"}
WAIT_S = 30.0  # how long a state may take to come on a shared, loaded test machine
B_CLOCK_S = -5.0  # host b's clock is behind host a's: hosts' clocks differ (NTP keeps them close)


@dataclass
class Hosts:
    """Two serving processes of one deployment, and the deployment opened here too."""

    root: Path
    servers: list[Server]
    token: str
    deployment: Deployment
    clients: list[httpx.Client] = field(default_factory=list)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "X-Fyp-Reason": "multi-host tests"}
        self.clients = [httpx.Client(base_url=s.url, headers=headers) for s in self.servers]

    @property
    def a(self) -> httpx.Client:
        return self.clients[0]

    @property
    def b(self) -> httpx.Client:
        return self.clients[1]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for server in self.servers:
            server.stop()
        self.deployment.close()


def _serve(root: Path, logs: Path, token: str, b_clock_s: float = 0) -> Hosts:
    """Hosts a and b; b's clock is ``b_clock_s`` off a's."""
    a, b = Server(root, logs / "host-a.log"), Server(root, logs / "host-b.log", None, b_clock_s)
    return Hosts(root, start_all([a, b]), token, Deployment.open(root))


def _admin_token(root: Path) -> str:
    with Deployment.open(root) as d:
        return KeyStore(d).create("multi-host tests", ["admin"])[1]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    if not POSTGRES:
        pytest.skip("FYP_TEST_POSTGRES_URL is not set")
    redis_url = module_database_url()  # skips without FYP_TEST_REDIS_URL
    prefix = f"mh{uuid.uuid4().hex[:10]}"
    base = tmp_path_factory.mktemp("multihost")
    root = base / "dep"
    running: Hosts | None = None
    try:
        build(root, store=schema_url(f"{prefix}_{{region}}")).close()
        config.write_config(config.with_served_logs(config.load_config(root), {"us": redis_url}))
        running = _serve(root, base, _admin_token(root), B_CLOCK_S)
        yield running
    finally:
        if running is not None:
            running.close()
        drop_schemas(prefix)
        flush(redis_url)


@pytest.fixture(scope="module")
def sqlite_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    """The same on one machine: two processes sharing the SQLite stores."""
    base = tmp_path_factory.mktemp("multihost-sqlite")
    root = base / "dep"
    build(root).close()
    running = _serve(root, base, _admin_token(root))
    try:
        yield running
    finally:
        running.close()


# -- helpers -----------------------------------------------------------------------------
def _feed(client: httpx.Client, user: str, n: int = 10, cursor: str | None = None) -> Any:
    params: dict[str, Any] = {"n": n} | ({"cursor": cursor} if cursor else {})
    r = client.get(f"/v1/users/{user}/feed", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _ids(page: Any) -> list[str]:
    return [item["video_id"] for item in page["items"]]


def _event(client: httpx.Client, user: str, video: str, kind: str) -> httpx.Response:
    body = {"event_id": uuid.uuid4().hex, "user_id": user, "video_id": video, "type": kind}
    return client.post("/v1/events", json=body)


def _creator(video_id: str) -> str:
    return f"u{int(video_id[1:]) % 12}"  # as tests/feed/conftest.py builds the catalogue


def _served_pages(d: Deployment, region: str, user: str) -> list[tuple[int, list[str]]]:
    """(page number, videos) of every page the region's served log holds for the user."""
    log = d.served_log(region)
    if isinstance(log, ExternalServedLog):
        return [(p.page_seq, list(p.video_ids)) for p in log.pages(user)]
    rows = d.store(region).query(
        "SELECT page_seq, video_ids FROM served_pages WHERE user_id = ? ORDER BY page_seq",
        (user,),
    )
    return [(int(seq), json.loads(ids)) for seq, ids in rows]


def _alternate_pages(
    clients: list[httpx.Client], user: str, pages: int, pause_s: float = 0
) -> list[list[str]]:
    """``pages`` pages of 5 for the user, asked of each host in turn, following the cursor."""
    shown: list[list[str]] = []
    cursor = None
    for k in range(pages):
        page = _feed(clients[k % len(clients)], user, 5, cursor)
        cursor = page["next_cursor"]
        shown.append(_ids(page))
        time.sleep(pause_s)
    return shown


# -- 1. no repeats across hosts ----------------------------------------------------------
def test_pages_alternating_between_hosts_never_repeat_and_number_on(hosts: Hosts) -> None:
    for user, region in (("u2", "us"), ("u3", "eu")):  # served log on Redis, in PostgreSQL
        pages = _alternate_pages(hosts.clients, user, 10)
        shown = [v for page in pages for v in page]
        assert len(shown) == 50 and len(set(shown)) == 50, (region, pages)
        logged = _served_pages(hosts.deployment, region, user)
        assert [ids for _, ids in logged] == pages  # every page, in order, once
        numbers = [seq for seq, _ in logged]
        assert numbers == list(range(numbers[0], numbers[0] + 10))


# -- 2. read-your-writes across hosts ----------------------------------------------------
def test_not_interested_told_one_host_holds_on_the_other(hosts: Hosts) -> None:
    for user, (writer, reader) in (("u4", (hosts.a, hosts.b)), ("u5", (hosts.b, hosts.a))):
        first = _ids(_feed(reader, user, 10))  # the reader now holds the user's state and order
        creator = _creator(first[0])
        assert _event(writer, user, first[0], "not_interested").status_code == 201
        page = _feed(reader, user, 30)
        assert [v for v in _ids(page) if _creator(v) == creator] == []
        r = reader.get(f"/v1/users/{user}/feed", params={"n": 10, "debug": "true"})
        assert r.status_code == 200, r.text
        removed = [x for x in r.json()["removed"] if x["stage"] == "not_interested"]
        assert {_creator(x["video_id"]) for x in removed} == {creator}


def test_a_new_users_likes_told_one_host_shape_the_other_hosts_next_page(hosts: Hosts) -> None:
    for user, region, (writer, reader) in (
        ("new-us", "us", (hosts.a, hosts.b)),
        ("new-eu", "eu", (hosts.b, hosts.a)),
    ):
        body = {"user_id": user, "home_region": region, "birth_year": 1990}
        assert writer.post("/v1/users", json=body).status_code == 201
        before = _feed(reader, user, 10)["items"]
        assert before and not {i["source"] for i in before} & PERSONAL_SOURCES
        for video in ("v3", "v9", "v15", "v21"):  # all of category cat3
            assert _event(writer, user, video, "like").status_code == 201
        after = _feed(reader, user, 10)["items"]
        assert {i["source"] for i in after} & PERSONAL_SOURCES, after


# -- 3. a new model reaches both hosts ---------------------------------------------------
class Traffic:
    """Feed requests to every host in turn, in a thread, until stopped: their statuses."""

    def __init__(self, hosts: Hosts, users: list[str]) -> None:
        self.hosts, self.users = hosts, users
        self.statuses: list[int] = []
        self.versions: list[tuple[int, str]] = []  # (host, model version) of each page
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        clients = [httpx.Client(base_url=c.base_url, headers=c.headers) for c in self.hosts.clients]
        k = 0
        while not self._stop.is_set():
            host = k % len(clients)
            user = self.users[k // len(clients) % len(self.users)]  # each user on each host
            try:
                r = clients[host].get(f"/v1/users/{user}/feed", params={"n": 5})
            except httpx.HTTPError:
                self.statuses.append(0)  # no answer
            else:
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.versions.append((host, r.json()["model_version"]))
            k += 1
        for client in clients:
            client.close()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _models(client: httpx.Client) -> dict[str, str]:
    return {r: v["model"] for r, v in client.get("/readyz").json()["regions"].items()}


def test_a_model_trained_while_both_serve_reaches_both_without_a_failed_request(
    hosts: Hosts,
) -> None:
    old = _models(hosts.a)
    assert _models(hosts.b) == old
    with Traffic(hosts, ["u6", "u7"]) as traffic:  # u6 in us, u7 in eu
        done = subprocess.run(
            [sys.executable, "-m", "fyp", "train", str(hosts.root)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        new = {r: current_version(hosts.deployment.config.region_dir(r)) for r in old}
        assert all(new[r] != old[r] for r in old)
        deadline = time.monotonic() + WAIT_S
        while any(_models(c) != new for c in hosts.clients):
            assert time.monotonic() < deadline, [_models(c) for c in hosts.clients]
            time.sleep(0.1)
        # a page from the new models on each host too (a fixed 0.3 s was not always
        # enough for one on a loaded machine)
        while {h for h, v in list(traffic.versions) if v in new.values()} != {0, 1}:
            assert time.monotonic() < deadline, "a host served no page of the new models"
            time.sleep(0.05)
    assert traffic.statuses and set(traffic.statuses) == {200}
    for host in (0, 1):  # each host served pages of the old models, then of the new
        versions = [v for h, v in traffic.versions if h == host]
        assert set(versions) & set(old.values()) and set(versions) & set(new.values())


# -- 4. moderation and erasure across hosts ----------------------------------------------
def test_a_takedown_told_one_host_leaves_the_order_the_other_serves_from(hosts: Hosts) -> None:
    for user, region in (("u10", "us"), ("u11", "eu")):
        model = RegionModel.load(hosts.deployment.config.region_dir(region))
        ranked = model.ahead.get(user) if model.ahead is not None else None
        assert ranked is not None  # `fyp train` ranked the user's feed ahead
        order = model.video_ids[ranked.items].tolist()
        first = _feed(hosts.b, user, 5)
        assert set(_ids(first)) <= set(order[:8])  # B serves from that order
        rest = [v for v in order if v not in _ids(first)]
        doomed = rest[:5]  # what B would show next
        for video in doomed:
            body = {"actor_id": "mod-1", "reason": "legal request", "regions": [region]}
            r = hosts.a.post(f"/v1/moderation/videos/{video}/takedown", json=body)
            assert r.status_code == 200, r.text
        second = _ids(_feed(hosts.b, user, 5, first["next_cursor"]))
        assert len(second) == 5 and not set(second) & set(doomed)
        assert set(second) <= set(rest[5:])  # the order, past what was taken down


def test_a_user_erased_through_one_host_is_gone_on_the_other(hosts: Hosts) -> None:
    for user, region in (("u12", "us"), ("u13", "eu")):
        assert _feed(hosts.b, user, 5)["items"]  # B holds the route, state and order
        r = hosts.a.delete(f"/v1/users/{user}")
        assert r.status_code == 200, r.text
        for _ in range(2):
            r = hosts.b.get(f"/v1/users/{user}/feed", params={"n": 5})
            assert (r.status_code, r.json()["error"]["code"]) == (404, "unknown_user")
        # every route that names the user, each while B still has the route cached
        for method, path in (
            ("GET", "/events"),
            ("GET", "/export"),
            ("DELETE", ""),  # no second ledger entry and receipt for nobody
            ("GET", ""),
        ):
            assert _feed(hosts.b, "u1", 1)  # (a user of eu: routes u13's region too)
            r = hosts.b.request(method, f"/v1/users/{user}{path}")
            assert r.status_code == 404, (method, path, r.text)
        assert _event(hosts.b, user, "v1", "like").status_code == 404
        assert _served_pages(hosts.deployment, region, user) == []
        log = hosts.deployment.served_log(region)
        if isinstance(log, ExternalServedLog):
            assert log.counter(user) is None and log.keys_naming(user) == []


def test_an_id_erased_through_one_host_can_be_taken_again_through_the_other(
    hosts: Hosts,
) -> None:
    """The other host's cached route (the erased user's old region) must not make the id
    look taken, nor keep a key of the new home region out."""
    tokens = {
        r: KeyStore(hosts.deployment).create(f"feed-{r}", ["feed"], [r])[1] for r in ("us", "eu")
    }
    for user, old, new, (eraser, other) in (
        ("u14", "us", "eu", (hosts.a, hosts.b)),
        ("u15", "eu", "us", (hosts.b, hosts.a)),
    ):
        assert _feed(other, user, 5)["items"]
        assert eraser.delete(f"/v1/users/{user}").status_code == 200
        body = {"user_id": user, "home_region": new, "birth_year": 1990}
        r = other.post("/v1/users", json=body)
        assert r.status_code == 201, r.text
        for host in hosts.clients:
            as_new = {"Authorization": f"Bearer {tokens[new]}"}
            r = host.get(f"/v1/users/{user}/feed", params={"n": 5}, headers=as_new)
            assert r.status_code == 200, r.text
            as_old = {"Authorization": f"Bearer {tokens[old]}"}
            r = host.get(f"/v1/users/{user}/feed", params={"n": 5}, headers=as_old)
            assert r.status_code == 403, r.text


# -- 5. API keys -------------------------------------------------------------------------
def test_a_revoked_key_is_refused_by_both_hosts_within_a_second(hosts: Hosts) -> None:
    keys = KeyStore(hosts.deployment)
    key, token = keys.create("soon revoked", ["feed"])
    as_key = {"Authorization": f"Bearer {token}"}
    for host in hosts.clients:
        assert host.get("/v1/users/u16/feed", headers=as_key).status_code == 200
    keys.revoke(key.key_id)  # what `fyp keys revoke` does, from another process
    revoked = time.monotonic()
    # timed by when each request was sent, not answered: on a loaded machine an answer
    # can come long after the host checked the key
    within = REFRESH_S + 0.2
    refused: set[int] = set()  # hosts that refused a request sent after ``within``
    accepted_late: list[tuple[int, float]] = []  # (host, sent) accepted after ``within``
    while len(refused) < 2 and time.monotonic() - revoked < WAIT_S:
        for k, host in enumerate(hosts.clients):
            sent = time.monotonic() - revoked
            status = host.get("/v1/users/u16/feed", headers=as_key).status_code
            if sent >= within:
                if status == 401:
                    refused.add(k)
                elif status == 200:
                    accepted_late.append((k, round(sent, 3)))
        time.sleep(0.02)
    assert refused == {0, 1} and not accepted_late, (refused, accepted_late)


# -- 6. a host killed mid-traffic --------------------------------------------------------
def test_a_host_killed_mid_traffic_loses_nothing_it_acknowledged(
    hosts: Hosts, tmp_path: Path
) -> None:
    """A third host takes events and feeds while A serves too; ``kill -9`` of it leaves A
    serving, and every event and page it acknowledged is in the stores and served logs."""
    doomed = Server(hosts.root, tmp_path / "host-c.log").start().wait()
    headers = dict(hosts.a.headers)
    acked: list[str] = []
    pages: dict[str, list[str]] = {"u18": [], "u19": []}
    a_statuses: list[int] = []
    stop = threading.Event()

    def events(user: str) -> None:
        with httpx.Client(base_url=doomed.url, headers=headers, timeout=2) as c:
            while not stop.is_set():
                try:
                    event_id = f"{user}-{uuid.uuid4().hex}"
                    body = {"event_id": event_id, "user_id": user, "video_id": "v1", "type": "play"}
                    if c.post("/v1/events", json={**body, "watch_ms": 9_000}).status_code == 201:
                        acked.append(event_id)
                except httpx.HTTPError:
                    return

    def feeds(user: str) -> None:
        with httpx.Client(base_url=doomed.url, headers=headers, timeout=2) as c:
            while not stop.is_set():
                try:
                    r = c.get(f"/v1/users/{user}/feed", params={"n": 3})
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    pages[user] += _ids(r.json())

    def on_a() -> None:
        with httpx.Client(base_url=hosts.a.base_url, headers=headers, timeout=5) as c:
            while not stop.is_set():
                try:
                    a_statuses.append(c.get("/v1/users/u20/feed", params={"n": 3}).status_code)
                except httpx.HTTPError:
                    a_statuses.append(0)  # no answer

    threads = [
        threading.Thread(target=events, args=("u16",)),
        threading.Thread(target=events, args=("u17",)),
        threading.Thread(target=feeds, args=("u18",)),
        threading.Thread(target=feeds, args=("u19",)),
        threading.Thread(target=on_a),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + WAIT_S
    while (len(acked) < 100 or min(map(len, pages.values())) < 9) and time.monotonic() < deadline:
        time.sleep(0.01)
    doomed.kill()
    killed = len(a_statuses)
    deadline = time.monotonic() + WAIT_S  # A answers on (a fixed 0.5 s: flaky under load)
    while len(a_statuses) <= killed and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert len(a_statuses) > killed and set(a_statuses) == {200}
    assert len(acked) >= 100
    stored = {e for r in ("us", "eu") for e in hosts.deployment.store(r).stored_events(acked)}
    assert set(acked) <= stored, f"lost {len(set(acked) - stored)} acknowledged events"
    for user, region in (("u18", "us"), ("u19", "eu")):
        logged = {v for _, ids in _served_pages(hosts.deployment, region, user) for v in ids}
        assert pages[user] and set(pages[user]) <= logged


# -- 7. two processes on one machine sharing SQLite stores --------------------------------
def test_sqlite_pages_alternating_between_processes_never_repeat(sqlite_hosts: Hosts) -> None:
    for user, region in (("u2", "us"), ("u3", "eu")):
        # a page is committed in a group within SERVED_SWEEP_S (and a checkpoint): a
        # process asked sooner may not see it yet (docs/architecture.md)
        pages = _alternate_pages(sqlite_hosts.clients, user, 6, pause_s=5 * SERVED_SWEEP_S)
        shown = [v for page in pages for v in page]
        assert len(set(shown)) == 30, (region, pages)
        sqlite_hosts.deployment.store(region).flush_served()
        logged = _served_pages(sqlite_hosts.deployment, region, user)
        assert [ids for _, ids in logged] == pages


def test_sqlite_an_event_told_one_process_holds_on_the_other(sqlite_hosts: Hosts) -> None:
    a, b = sqlite_hosts.clients
    for user, (writer, reader) in (("u4", (a, b)), ("u5", (b, a))):
        first = _ids(_feed(reader, user, 10))
        creator = _creator(first[0])
        assert _event(writer, user, first[0], "not_interested").status_code == 201
        assert [v for v in _ids(_feed(reader, user, 30)) if _creator(v) == creator] == []
