"""Edits of fyp.toml reach running ``fyp serve`` processes without a restart
(``fyp.serving.reload``): two real servers on one deployment directory, each watching the
file every 0.5 s, moderating every second; a third, watching nothing, reloads on SIGHUP.

The module's tests share the two servers and leave fyp.toml as they found it; each uses
users and videos of its own."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from feed.conftest import build
from fyp.access.keys import KeyStore
from fyp.audit.log import AuditLog
from fyp.feed.impersonal import PERSONAL_SOURCES
from fyp.moderation.policy import parse_policy
from fyp.moderation.service import POLICY_CHECKED
from fyp.regions.deployment import Deployment
from fyp.regions.live_config import ACTOR, FIRST_SEEN, POLICY_CHANGED
from serving.servers import Server, edit_config, start_all

pytestmark = pytest.mark.slow
Raw = dict[str, Any]
WAIT_S = 30.0  # a shared, loaded test machine: the watch itself checks every 0.5 s


def wait_for(what: str, done: Callable[[], bool], timeout: float = WAIT_S) -> float:
    """Seconds until ``done()``; fails after ``timeout``."""
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def reloads(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^fyp_config_reloads_total\{result="([a-z_]+)"\} (\S+)$', text, re.M)
    }


def in_force(client: httpx.Client) -> str:
    found = re.search(
        r'^fyp_config_info\{sha256="([0-9a-f]*)"\} 1\.0$', client.get("/metrics").text, re.M
    )
    assert found is not None
    return found.group(1)


def serve_setup(root: Path, check_seconds: float) -> str:
    """Settings for the test servers; returns an admin token."""

    def fast(raw: Raw) -> None:
        raw["serving"] = {"config_check_seconds": check_seconds}
        raw["moderation"] = {"every_seconds": 1}
        raw["training"] = {"every_minutes": 0}  # no retrains in the way
        raw["erasure"] = {"check_every_minutes": 0}

    edit_config(root, fast)
    with Deployment.open(root) as d:
        return KeyStore(d).create("live reload tests", ["admin"])[1]


@dataclass
class Hosts:
    root: Path
    servers: list[Server]
    clients: list[httpx.Client]

    @property
    def a(self) -> httpx.Client:
        return self.clients[0]

    def page(self, client: httpx.Client, user: str, n: int = 5, cursor: str | None = None) -> Raw:
        params: dict[str, Any] = {"n": n} | ({"cursor": cursor} if cursor else {})
        r = client.get(f"/v1/users/{user}/feed", params=params)
        assert r.status_code == 200, r.text
        body: Raw = r.json()
        return body

    def whole_feed(self, client: httpx.Client, user: str) -> set[str]:
        """Every video the user's feed has for them: pages until an empty one."""
        seen: set[str] = set()
        cursor = None
        for _ in range(20):
            body = self.page(client, user, 100, cursor)
            if not body["items"]:
                return seen
            seen |= {item["video_id"] for item in body["items"]}
            cursor = body["next_cursor"]
        raise AssertionError("the feed did not end")

    def state(self, video_id: str, region: str = "us") -> str:
        r = self.a.get(f"/v1/moderation/videos/{video_id}")
        assert r.status_code == 200, r.text
        return str(r.json()["regions"][region]["state"])

    def applied_everywhere(self, before: list[dict[str, float]]) -> float:
        """Seconds until every host counted one more ``applied``."""
        return max(
            wait_for(
                f"host {k} applies the edit",
                lambda c=c, b=b: reloads(c).get("applied", 0) > b.get("applied", 0),
            )
            for k, (c, b) in enumerate(zip(self.clients, before, strict=True))
        )

    def edit(self, change: Callable[[Raw], None]) -> float:
        """Edit fyp.toml; seconds until both hosts applied it."""
        before = [reloads(c) for c in self.clients]
        edit_config(self.root, change)
        return self.applied_everywhere(before)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    base = tmp_path_factory.mktemp("live-reload")
    root = base / "dep"
    build(root).close()
    token = serve_setup(root, 0.5)
    headers = {"Authorization": f"Bearer {token}", "X-Fyp-Reason": "live reload tests"}
    servers = start_all([Server(root, base / "a.log"), Server(root, base / "b.log")])
    clients = [httpx.Client(base_url=s.url, headers=headers, timeout=30) for s in servers]
    try:
        yield Hosts(root, servers, clients)
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop()


def test_a_banned_term_added_live_rejects_uploads_and_takes_approved_videos_out_of_feeds(
    hosts: Hosts,
) -> None:
    a = hosts.a
    r = a.patch("/v1/videos/v3", json={"caption": "zebra crossing at dawn"})
    assert r.status_code == 200, r.text
    wait_for("the edited video is approved again", lambda: hosts.state("v3") == "approved")
    assert "v3" in hosts.whole_feed(a, "u10")  # in us feeds

    def ban(raw: Raw) -> None:
        raw["regions"]["us"].setdefault("policy", {})["banned_terms"] = ["zebra"]

    took = hosts.edit(ban)
    assert took < WAIT_S
    # the schedule re-judges the verdicts made under the old policy: v3 is taken down
    wait_for("the approved video is re-judged", lambda: hosts.state("v3") == "rejected")
    assert hosts.state("v3", "eu") == "approved"  # eu's policy did not change
    for client in hosts.clients:
        wait_for("ready again once re-judged", lambda c=client: c.get("/readyz").status_code == 200)
    assert "v3" not in hosts.whole_feed(hosts.clients[1], "u12")
    # a new upload with the term is rejected by the scheduled run
    r = a.post(
        "/v1/videos",
        json={
            "video_id": "zebra-1",
            "creator_id": "u0",
            "caption": "a Zebra at the zoo",
            "duration_ms": 15_000,
            "regions": ["us", "eu"],
        },
    )
    assert r.status_code == 201, r.text
    wait_for("the upload is judged", lambda: hosts.state("zebra-1") != "pending")
    assert hosts.state("zebra-1") == "rejected"
    wait_for("eu judges it too", lambda: hosts.state("zebra-1", "eu") == "approved")
    # every host has the same config in force; the change is on record once, and so is
    # the re-judge under it
    assert in_force(hosts.clients[0]) == in_force(hosts.clients[1])
    with Deployment.open(hosts.root) as d:
        log = AuditLog(d.store("us"))
        changes = list(log.entries(subject="policy:us", action=POLICY_CHANGED))
        rechecks = list(log.entries(subject="policy:us", action=POLICY_CHECKED))
        policy = d.config.regions["us"].policy
    # (before it, the policy the first host found in force when it started its schedules)
    assert [e.actor for e in changes[:-1]] == [FIRST_SEEN], changes
    assert changes[-1].actor == ACTOR and changes[-1].details["policy"] == policy
    assert changes[-1].details["config_sha256"] == in_force(a)
    assert changes[-1].details["previous"] == changes[0].details["sha256"]
    digest = parse_policy("us", policy).digest()
    assert [e.details["digest"] for e in rechecks].count(digest) == 1, rechecks
    hosts.edit(lambda raw: raw["regions"]["us"]["policy"].pop("banned_terms"))
    wait_for("re-judged under the old policy", lambda: hosts.state("v3") == "approved")


def test_a_consent_default_switched_live_reaches_the_next_page(hosts: Hosts) -> None:
    user = "u21"  # eu, no consent recorded
    for client in hosts.clients:
        assert hosts.page(client, user)["personalised"] is True
    hosts.edit(
        lambda raw: (
            raw["regions"]["eu"]
            .setdefault("policy", {})
            .update(consent={"personalised_feed": False})
        )
    )
    for client in hosts.clients:
        body = hosts.page(client, user)
        assert body["personalised"] is False
        assert not {item["source"] for item in body["items"]} & PERSONAL_SOURCES
    assert hosts.page(hosts.a, "u20")["personalised"] is True  # us: unchanged
    hosts.edit(lambda raw: raw["regions"]["eu"]["policy"].pop("consent"))
    assert hosts.page(hosts.a, user)["personalised"] is True


def test_an_experiment_started_and_stopped_live_is_followed(hosts: Hosts) -> None:
    users = [f"u{k}" for k in range(30, 50, 2)]  # us
    assert all(hosts.page(hosts.a, u).get("experiment") is None for u in users)

    def start(raw: Raw) -> None:
        raw["experiments"] = {
            "live": {"start": "2025-01-01", "regions": ["us"], "variants": {"b": {"share": 0.5}}}
        }

    hosts.edit(start)
    arms = {u: hosts.page(hosts.clients[k % 2], u).get("experiment") for k, u in enumerate(users)}
    assert all(arm is not None and arm["name"] == "live" for arm in arms.values()), arms
    assert {arm["variant"] for arm in arms.values() if arm} == {"control", "b"}
    hosts.edit(lambda raw: raw.pop("experiments"))
    assert all(hosts.page(hosts.clients[1], u).get("experiment") is None for u in users)


def test_an_invalid_edit_keeps_the_config_in_force_and_the_hosts_ready(hosts: Hosts) -> None:
    path = hosts.root / "fyp.toml"
    good = path.read_text("utf-8")
    sha = in_force(hosts.a)
    before = [reloads(c) for c in hosts.clients]
    edit_config(
        hosts.root,
        lambda raw: (
            raw["regions"]["eu"]
            .setdefault("policy", {})
            .update(
                consent={"personalised_feed": "no"}  # not a boolean
            )
        ),
    )
    for client, counted in zip(hosts.clients, before, strict=True):
        wait_for(
            "the host counts the invalid edit",
            lambda c=client, b=counted: reloads(c).get("invalid", 0) == b.get("invalid", 0) + 1,
        )
        assert in_force(client) == sha
        assert client.get("/readyz").status_code == 200
        assert hosts.page(client, "u23")["personalised"] is True  # the old default stands
    time.sleep(1.5)  # not looked at again while unchanged
    assert [reloads(c)["invalid"] for c in hosts.clients] == [b["invalid"] + 1 for b in before]
    path.write_text(good, "utf-8")  # back: the same content as in force
    hosts.applied_everywhere(before)
    assert in_force(hosts.a) == sha


def test_a_change_of_the_regions_needs_a_restart_and_is_refused_whole(hosts: Hosts) -> None:
    path = hosts.root / "fyp.toml"
    good = path.read_text("utf-8")
    sha = in_force(hosts.a)
    before = [reloads(c) for c in hosts.clients]

    def add_region_and_ban(raw: Raw) -> None:
        raw["regions"]["zz"] = {"store": "sqlite:///regions/zz/store.sqlite"}
        raw["regions"]["us"].setdefault("policy", {})["banned_terms"] = ["okapi"]

    edit_config(hosts.root, add_region_and_ban)
    for client, counted in zip(hosts.clients, before, strict=True):
        wait_for(
            "the host refuses the edit",
            lambda c=client, b=counted: reloads(c).get("needs_restart", 0) > b["needs_restart"],
        )
        assert in_force(client) == sha
        assert client.get("/readyz").status_code == 200
    log = hosts.servers[0].log.read_text(errors="replace")
    assert "apply only when the server restarts: [regions] (added zz)" in log, [
        line for line in log.splitlines() if "fyp-config" in line
    ]
    # the refused ban is not applied by a moderation run either: the servers' children
    # judge only under the policy their server has in force, so an upload waits
    r = hosts.a.post(
        "/v1/videos",
        json={
            "video_id": "okapi-1",
            "creator_id": "u0",
            "caption": "okapi",
            "duration_ms": 9000,
            "regions": ["us"],
        },
    )
    assert r.status_code == 201, r.text
    time.sleep(3)  # three moderation rounds
    assert hosts.state("okapi-1") == "pending"
    path.write_text(good, "utf-8")
    hosts.applied_everywhere(before)
    wait_for("judged under the policy in force", lambda: hosts.state("okapi-1") == "approved")


def test_sighup_reloads_at_once(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    build(root).close()
    token = serve_setup(root, 0)  # no watch: only SIGHUP
    headers = {"Authorization": f"Bearer {token}", "X-Fyp-Reason": "live reload tests"}
    (server,) = start_all([Server(root, tmp_path / "s.log")])
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            hosts = Hosts(root, [server], [client])
            edit_config(
                root,
                lambda raw: (
                    raw["regions"]["eu"]
                    .setdefault("policy", {})
                    .update(consent={"personalised_feed": False})
                ),
            )
            time.sleep(1.0)
            assert hosts.page(client, "u5")["personalised"] is True  # not watching
            assert reloads(client)["applied"] == 0
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)
            took = wait_for("applied after SIGHUP", lambda: reloads(client)["applied"] == 1)
            assert hosts.page(client, "u5")["personalised"] is False
            assert took < 5.0
            assert server.process.poll() is None  # SIGHUP did not end it
    finally:
        server.stop()
