"""Edits of fyp.toml applied while serving (``fyp.serving.reload``), in one process: the
app of a trained deployment, its reloader's checks called directly (the real processes,
their watch and SIGHUP: tests/serving/test_live_reload.py)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from feed.conftest import build
from fyp.access.keys import KeyStore
from fyp.audit.log import AuditLog
from fyp.config import CONFIG_FILE, load_config
from fyp.models.schedule import retrain_reason
from fyp.regions.consent import consent_policy
from fyp.regions.deployment import Deployment
from fyp.regions.live_config import LIVE_KEYS, POLICY_CHANGED, restart_keys
from fyp.serving.app import create_app
from fyp.serving.reload import ConfigReloader
from fyp.serving.routers.ops import rejudge_grace_s
from serving.servers import edit_config as edit

ROOT = Path(__file__).resolve().parents[2]
Raw = dict[str, Any]


def consent(region: str, **defaults: bool) -> Callable[[Raw], None]:
    def change(raw: Raw) -> None:
        raw["regions"][region].setdefault("policy", {})["consent"] = defaults

    return change


class App:
    def __init__(self, d: Deployment, client: TestClient) -> None:
        self.d, self.client = d, client
        self.reloader: ConfigReloader = client.app.state.fyp.reloader  # type: ignore[attr-defined]

    def page(self, user: str) -> Raw:
        r = self.client.get(f"/v1/users/{user}/feed", params={"n": 5})
        assert r.status_code == 200, r.text
        body: Raw = r.json()
        return body

    def metrics(self) -> str:
        return self.client.get("/metrics").text


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("live") / "dep"
    build(root).close()
    return root


@pytest.fixture
def app(built: Path, tmp_path: Path) -> Iterator[App]:
    """A copy of the built deployment served in this process (each test edits its own)."""
    import shutil

    root = tmp_path / "dep"
    shutil.copytree(built, root)
    d = Deployment.open(root)
    token = KeyStore(d).create("live config tests", ["admin"])[1]
    headers = {"Authorization": f"Bearer {token}", "X-Fyp-Reason": "live config tests"}
    try:
        with TestClient(create_app(d), headers=headers) as client:
            yield App(d, client)
    finally:
        d.close()


def test_the_live_keys_are_the_ones_the_architecture_doc_lists() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    section = doc.split("## Editing fyp.toml while serving", 1)[1].split("\n## ", 1)[0]
    listed = re.search(r"Applied live: (.*?)\.\s", section, re.S)
    assert listed is not None
    named = re.findall(r"`\[([a-zA-Z_.]+)\]`", listed.group(1))
    assert tuple(named) == LIVE_KEYS


def test_what_needs_a_restart_is_named(built: Path) -> None:
    old = load_config(built)
    text = (built / CONFIG_FILE).read_text("utf-8")

    def parsed(change: Callable[[Raw], None]) -> list[str]:
        raw = tomllib.loads(text)
        change(raw)
        from fyp.config import parse_config

        return restart_keys(old, parse_config(built, raw))

    assert parsed(consent("eu", personalised_feed=False)) == []
    assert parsed(lambda r: r["regions"]["us"]["policy"].update(banned_terms=["x"])) == []
    assert parsed(lambda r: r.update(experiments={})) == []
    assert parsed(lambda r: r["feed"].update(rank_ahead=7)) == ["[feed] rank_ahead"]
    # the pipeline's stages are built when the process starts (and the artifact's orders
    # were ranked with them): a restart; a variant's overrides of them are live
    tuned = parsed(lambda r: r["feed"].update(sources={"trending": 9, "fresh": 0}))
    assert tuned == ["[feed.sources] trending", "[feed.sources] fresh"]
    rerank = parsed(lambda r: r["feed"].update(rerank={"exploration_share": 0.2}))
    assert rerank == ["[feed.rerank] exploration_share"]
    variant = {"share": 0.5, "sources": {"fresh": 0}, "rerank": {"exploration_share": 0.2}}
    experiment = {"start": "2025-01-01", "variants": {"b": variant}}
    assert parsed(lambda r: r.update(experiments={"exp": experiment})) == []
    assert parsed(lambda r: r["serving"].update(config_check_seconds=1)) == [
        "[serving] config_check_seconds"
    ]
    assert parsed(lambda r: r["regions"]["us"].update(store="sqlite:///elsewhere.sqlite")) == [
        "[regions.us] store"
    ]
    dropped = parsed(lambda r: r["regions"].pop("eu"))
    assert dropped == ["[regions] (removed eu)"]
    reordered = parsed(lambda r: r.update(regions=dict(reversed(list(r["regions"].items())))))
    assert reordered == ["[regions] (reordered)"]


def test_a_consent_default_switched_live_serves_the_non_profiled_feed_at_once(app: App) -> None:
    assert app.page("u1")["personalised"] is True  # eu, no consent recorded
    edit(app.d.config.root, consent("eu", personalised_feed=False))
    assert app.reloader.check() == "applied"
    assert app.page("u1")["personalised"] is False  # its profile was kept: read again
    assert app.page("u0")["personalised"] is True  # us: its default did not change
    # the user's own choice still wins over the region's default
    r = app.client.patch("/v1/users/u3", json={"consents": {"personalised_feed": True}})
    assert r.status_code == 200, r.text
    assert app.page("u3")["personalised"] is True
    # the live model's orders were ranked under the old default: `--if-changed` says so
    reason = retrain_reason(
        app.d.store("eu"), app.d.config.region_dir("eu"), consent=consent_policy(app.d.config, "eu")
    )
    assert reason is not None and "personalised_feed default changed" in reason
    assert 'fyp_config_reloads_total{result="applied"} 1.0' in app.metrics()


def test_an_experiment_added_then_stopped_live_is_followed(app: App) -> None:
    users = [f"u{k}" for k in range(0, 20, 2)]  # us
    assert all(app.page(u).get("experiment") is None for u in users)

    def start(raw: Raw) -> None:
        raw["experiments"] = {
            "exp": {
                "start": "2025-01-01",
                "regions": ["us"],
                "variants": {"b": {"share": 0.5, "exploration_share": 0.2}},
            }
        }

    edit(app.d.config.root, start)
    assert app.reloader.check() == "applied"
    arms = {u: app.page(u).get("experiment") for u in users}
    assert all(a is not None and a["name"] == "exp" for a in arms.values()), arms
    assert {a["variant"] for a in arms.values()} == {"control", "b"}
    assert app.page("u1").get("experiment") is None  # eu runs none
    edit(app.d.config.root, lambda raw: raw.pop("experiments"))
    assert app.reloader.check() == "applied"
    assert all(app.page(u).get("experiment") is None for u in users)


def test_an_invalid_edit_keeps_the_config_in_force_and_is_not_retried(app: App) -> None:
    root = app.d.config.root
    before = app.reloader.in_force
    edit(root, lambda raw: raw["regions"]["eu"].setdefault("policy", {}).update(banned_term=["x"]))
    assert app.reloader.check() == "invalid"
    assert app.reloader.check() is None  # the same content: not looked at again
    assert app.reloader.in_force == before
    assert app.d.config.regions["eu"].policy == {}
    assert app.page("u1")["personalised"] is True
    text = (root / CONFIG_FILE).read_text("utf-8")
    (root / CONFIG_FILE).write_text(text + "[broken\n", "utf-8")  # not TOML at all
    assert app.reloader.check() == "invalid"
    metrics = app.metrics()
    assert 'fyp_config_reloads_total{result="invalid"} 2.0' in metrics
    assert f'fyp_config_info{{sha256="{before}"}} 1.0' in metrics
    assert app.client.get("/readyz").status_code == 200


def test_a_change_that_needs_a_restart_is_refused_whole(app: App) -> None:
    root = app.d.config.root

    def both(raw: Raw) -> None:  # a live change beside one that is not: neither applies
        consent("eu", personalised_feed=False)(raw)
        raw["regions"]["zz"] = {"store": "sqlite:///regions/zz/store.sqlite"}

    edit(root, both)
    assert app.reloader.check() == "needs_restart"
    assert list(app.d.config.regions) == ["us", "eu"]
    assert app.page("u1")["personalised"] is True
    assert 'fyp_config_reloads_total{result="needs_restart"} 1.0' in app.metrics()
    assert app.client.get("/readyz").status_code == 200


def test_a_policy_change_is_audited_once_whichever_host_applies_it(app: App) -> None:
    """Two serving processes of one directory (here: a second deployment and reloader)
    apply one edit: the region's audit log records it once."""
    root = app.d.config.root
    with Deployment.open(root) as other:
        from fyp.moderation import Moderator

        second = ConfigReloader(other, [Moderator(other)], app.reloader.in_force)

        def ban(raw: Raw) -> None:
            raw["regions"]["us"]["policy"]["banned_terms"] = ["zebra"]

        edit(root, ban)
        assert second.check() == "applied"
        assert app.reloader.check() == "applied"
        entries = list(AuditLog(app.d.store("us")).entries(action=POLICY_CHANGED))
        assert len(entries) == 1
        assert entries[0].subject == "policy:us"
        assert entries[0].details["changed"] == ["banned_terms"]
        assert entries[0].details["policy"]["banned_terms"] == ["zebra"]
        assert not list(AuditLog(app.d.store("eu")).entries(action=POLICY_CHANGED))
        # the new policy makes the verdicts stale here too: readiness says so until
        # re-judged, in a note (ready) within the re-judge's grace, as a problem past it
        assert app.client.app.state.fyp.moderator.policy_stale("us")  # type: ignore[attr-defined]
        ready = app.client.get("/readyz")
        assert ready.status_code == 200
        assert "moderation policy" in ready.json()["regions"]["us"]["notes"][0]
        moderator = app.client.app.state.fyp.moderator  # type: ignore[attr-defined]
        moderator.policy_since["us"] -= rejudge_grace_s(app.d.config) + 1  # time passes
        ready = app.client.get("/readyz")
        assert ready.status_code == 503 and "moderation policy" in ready.text
        moderator.run("us")
        assert app.client.get("/readyz").status_code == 200
        # back to the old policy: a change again, recorded once more
        edit(root, lambda raw: raw["regions"]["us"]["policy"].pop("banned_terms"))
        assert app.reloader.check() == "applied" and second.check() == "applied"
        assert len(list(AuditLog(app.d.store("us")).entries(action=POLICY_CHANGED))) == 2


@pytest.fixture(params=["sqlite", "postgres"])
def two_opens(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Deployment]]:
    """One deployment opened twice (two hosts), on SQLite or PostgreSQL."""
    import uuid

    from storage.postgres_server import SERVER, drop_schemas, schema_url

    store, prefix = None, f"lc{uuid.uuid4().hex[:10]}"
    if request.param == "postgres":
        if not SERVER:
            pytest.skip("FYP_TEST_POSTGRES_URL is not set")
        store = schema_url(f"{prefix}_{{region}}")
    Deployment.init(tmp_path / "d", ["us", "eu"], store=store).close()
    opened = [Deployment.open(tmp_path / "d"), Deployment.open(tmp_path / "d")]
    try:
        yield opened
    finally:
        for d in opened:
            d.close()
        if store is not None:
            drop_schemas(prefix)


def test_hosts_recording_one_policy_change_at_once_write_one_entry(
    two_opens: list[Deployment],
) -> None:
    import threading

    from fyp.regions.live_config import record_policy_changes

    old = two_opens[0].config
    root = old.root
    edit(
        root,
        lambda raw: (
            raw["regions"]["eu"]
            .setdefault("policy", {})
            .update(consent={"model_training": False}, banned_terms=["x"])
        ),
    )
    new = load_config(root)
    start = threading.Barrier(len(two_opens) * 2)
    wrote: list[list[str]] = []

    def host(d: Deployment) -> None:
        start.wait()
        wrote.append(record_policy_changes(d, old, new, "sha"))

    threads = [threading.Thread(target=host, args=(d,)) for d in two_opens * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wrote) == [[], [], [], ["eu"]]
    (entry,) = AuditLog(two_opens[0].store("eu")).entries(action=POLICY_CHANGED)
    assert entry.details["changed"] == ["banned_terms", "consent"]
    assert entry.actor == "fyp-config-reload"
    assert AuditLog(two_opens[1].store("eu")).verify().ok


def test_the_schedules_wake_for_what_a_reload_makes_due(built: Path) -> None:
    from fyp.models.schedule import TrainingScheduler
    from fyp.moderation.schedule import ModerationScheduler

    old = load_config(built)
    text = (built / CONFIG_FILE).read_text("utf-8")

    def changed(change: Callable[[Raw], None]) -> tuple[bool, bool]:
        raw = tomllib.loads(text)
        change(raw)
        from fyp.config import parse_config

        new = parse_config(built, raw)
        moderation, training = ModerationScheduler(old, lambda _: None), TrainingScheduler(old)
        for schedule in (moderation, training):
            schedule.config_changed(old, new)
            assert schedule.config is new
        return moderation._wake.is_set(), training._wake.is_set()

    assert changed(lambda r: r["regions"]["us"]["policy"].update(banned_terms=["x"])) == (
        True,
        False,
    )
    assert changed(consent("eu", personalised_feed=False)) == (False, True)
    assert changed(lambda r: r["regions"]["eu"]["policy"].update(moves={"allow_to": ["us"]})) == (
        False,
        False,
    )
    experiment = {"start": "2025-01-01", "variants": {"b": {"share": 0.5}}}
    assert changed(lambda r: r.update(experiments={"e": experiment})) == (False, True)


def test_a_region_allowing_moves_live_lets_the_next_move_through(app: App) -> None:
    url = "/v1/users/u1/move"  # eu, whose policy allows no move
    r = app.client.post(url, json={"to": "us"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "move_not_allowed"
    edit(
        app.d.config.root,
        lambda raw: (
            raw["regions"]["eu"].setdefault("policy", {}).update(moves={"allow_to": ["us"]})
        ),
    )
    assert app.reloader.check() == "applied"
    r = app.client.post(url, json={"to": "us"})
    assert r.status_code == 200, r.text
    assert r.json()["receipt"]["to"] == "us"
