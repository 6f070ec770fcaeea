"""The evaluation copy's moderation as it stood at the cut (fyp.evaluation.as_of), and a
failed region's audit entry (fyp.evaluation.temporal).

The end-to-end tests run on SQLite, and on PostgreSQL too when ``FYP_TEST_POSTGRES_URL``
names a server (the copy is SQLite either way: the audit log crosses with it)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.audit.log import AuditLog
from fyp.catalog import service as catalog_service
from fyp.catalog.models import UserIn
from fyp.catalog.service import Catalog
from fyp.errors import ValidationFailed
from fyp.evaluation.as_of import moderation_at
from fyp.evaluation.offline import Protocol, rank_peer
from fyp.evaluation.temporal import TemporalConfig, run_temporal
from fyp.evaluation.temporal_cut import split_copy
from fyp.events.ingest import Ingestor
from fyp.moderation import Moderator, Reviews
from fyp.regions.deployment import Deployment
from fyp.sovereignty.region_data import snapshot_region
from fyp.sovereignty.staging import staging_dirs

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from consent_helpers import BACKENDS, on_backend
from test_temporal import CUT_MS, T0_MS, _event, moderate, moderation_clock, publish

DAY_MS = 86_400_000
USERS = [f"u{n}" for n in range(6)]


def history(d: Deployment) -> None:
    """Six users who played ``a`` before the cut and liked ``late`` and ``down`` after it.
    ``a``, ``b``, ``c`` and ``down`` were approved on day 0; ``late`` was published on
    day 0 too but approved only after the cut (day 12), and ``down`` was taken down
    after it (day 13)."""
    catalog = Catalog(d)
    for user in USERS:
        catalog.create_user(UserIn(user_id=user, home_region="us"))
    publish_at(catalog, ["a", "b", "c", "down"], T0_MS)
    moderate(d, T0_MS)
    publish_at(catalog, ["late"], T0_MS + DAY_MS)  # pending since day 1
    rows = []
    for n, user in enumerate(USERS):
        rows.append(_event(3 * n, user, "a", "play", 1 + n / 10))
        rows.append(_event(3 * n + 1, user, "late", "like", 11 + n / 10))
        rows.append(_event(3 * n + 2, user, "down", "like", 11 + n / 10))
    Ingestor(d).ingest(rows)
    moderate(d, CUT_MS + 2 * DAY_MS)  # late: approved after the cut
    with moderation_clock(CUT_MS + 3 * DAY_MS):
        Reviews(Moderator(d)).takedown("down", "legal", "a court order")


def publish_at(catalog: Catalog, videos: list[str], ms: int) -> None:
    """Publish ``videos`` at ``ms`` (the catalogue's time and moderation's)."""
    with moderation_clock(ms), pytest.MonkeyPatch.context() as patch:
        patch.setattr(catalog_service, "now_ms", lambda: ms)
        publish(catalog, videos)


def states(db: sqlite3.Connection) -> dict[str, tuple[str, bool]]:
    rows = db.execute("SELECT video_id, state, creator_ok FROM moderation")
    return {str(v): (str(s), bool(ok)) for v, s, ok in rows}


def test_the_copy_holds_each_verdict_as_it_stood_at_the_cut(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "dep", ["us"]) as d:
        history(d)
        assert d.store("us").count_events() == 18
        copy = tmp_path / "copy.sqlite"
        snapshot_region(d.config, "us", copy)
    with closing(sqlite3.connect(copy)) as db:
        now = states(db)
        assert now["late"][0] == "approved" and now["down"][0] == "blocked"
        split = split_copy(db, d.config, "us", CUT_MS)
        then = states(db)
    assert then["late"] == ("pending", False)  # approved only after the cut
    assert then["down"] == ("approved", True)  # taken down only after it
    assert then["a"] == now["a"] == ("approved", True)
    assert (split.moderation, split.moderation_changed, split.moderation_unknown) == (
        "at_cut",
        2,
        0,
    )
    assert split.first_verdict_ms == T0_MS


def test_a_verdict_the_log_does_not_explain_fails_closed(tmp_path: Path) -> None:
    """A row written behind the audit log's back (here by hand) has no known history:
    pending at any cut, though it was approved before the cut and still is."""
    with Deployment.init(tmp_path / "dep", ["us"]) as d:
        history(d)
        copy = tmp_path / "copy.sqlite"
        snapshot_region(d.config, "us", copy)
    with closing(sqlite3.connect(copy)) as db:
        with db:
            db.execute("UPDATE moderation SET audit_seq = NULL WHERE video_id = 'a'")
            db.execute("UPDATE moderation SET state = 'approved' WHERE video_id = 'down'")
        done = moderation_at(db, CUT_MS)
        then = states(db)
    assert then["a"] == ("pending", False)  # no audit_seq: its history is not in the log
    # its row says approved, its entries blocked: the log does not explain the row
    assert then["down"] == ("pending", False)
    assert then["b"] == ("approved", True)
    assert done.unknown == 2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["verdict", "pending", "creator_recheck"]),
            st.sampled_from(["approved", "rejected", "blocked", "age_restricted", "pending"]),
            st.booleans(),
            st.integers(0, 20),
        ),
        max_size=8,
    ),
    st.integers(0, 21),
)
def test_the_state_at_the_cut_is_the_last_write_before_it(
    writes: list[tuple[str, str, bool, int]], cut: int
) -> None:
    """Replaying a video's entries before the cut gives the row the writes before the cut
    left (entries in time order, as one process writes them), and pending when none."""
    with closing(sqlite3.connect(":memory:")) as db:
        db.execute(
            "CREATE TABLE audit_log (seq INTEGER PRIMARY KEY, ts_ms INTEGER, action TEXT, "
            "subject TEXT, details TEXT)"
        )
        db.execute(
            "CREATE TABLE moderation (video_id TEXT PRIMARY KEY, state TEXT, "
            "creator_ok INTEGER, audit_seq INTEGER)"
        )
        state: str | None = None
        ok = False
        expect: tuple[str, bool] = ("pending", False)
        seq = 0
        for action, verdict, creator_ok, ts in sorted(writes, key=lambda w: w[3]):
            details: dict[str, Any] = {"creator_ok": creator_ok}
            if action == "pending":
                state, ok = "pending", False
            elif action == "creator_recheck":
                ok = creator_ok
            else:
                state, ok = verdict, creator_ok
                details["state"] = verdict
            seq += 1
            db.execute(
                "INSERT INTO audit_log VALUES (?, ?, ?, 'v', ?)",
                (seq, ts, action, json.dumps(details)),
            )
            if ts < cut and state is not None:
                expect = (state, ok)
        db.execute(
            "INSERT INTO moderation VALUES ('v', ?, ?, ?)",
            (state or "pending", int(ok), seq or None),
        )
        moderation_at(db, cut)
        assert states(db)["v"] == expect


def evaluate(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    """``results.json`` of region us of ``tmp_path/dep``, cut on day 10, no newcomers."""
    config = TemporalConfig(
        directory=tmp_path / "dep", out=tmp_path / "out", region="us", cut_ms=CUT_MS
    )
    config = dataclasses.replace(config, newcomer_events=0, **changes)
    return run_temporal(config, log=lambda _: None).results


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_evaluation_serves_what_was_approved_at_the_cut(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``late`` (approved after the cut) is neither held out nor ranked by any method;
    ``down`` (taken down after it) is held out, and the engine and the peers rank it."""
    import fyp.evaluation.temporal as temporal

    universes: list[set[str]] = []

    def spy(protocol: Protocol, *args: Any, **kwargs: Any) -> dict[str, list[str]]:
        universes.append(set(protocol.universe))
        return rank_peer(protocol, *args, **kwargs)

    engine: list[dict[str, list[str]]] = []
    rank_engine = temporal.rank_engine
    monkeypatch.setattr(temporal, "rank_peer", spy)
    monkeypatch.setattr(
        temporal, "rank_engine", lambda *a, **k: engine.append(rank_engine(*a, **k)) or engine[-1]
    )
    with on_backend(backend, monkeypatch):
        with Deployment.init(tmp_path / "dep", ["us"]) as d:
            history(d)
        results = evaluate(tmp_path, methods=("fyp", "popular"))
    config = results["config"]
    assert config["moderation"] == "at_cut"
    assert config["test_users"] == 6 and config["held_out_positives"] == 6  # down, each
    assert universes and all("late" not in u and "down" in u for u in universes)
    assert engine and all("late" not in top for top in engine[0].values())
    assert all("down" in top for top in engine[0].values())
    assert results["offline"]["fyp"]["recall@50"] == pytest.approx(1.0)
    assert results["offline"]["popular"]["recall@50"] == pytest.approx(1.0)


def test_today_verdicts_when_asked(tmp_path: Path) -> None:
    """``--moderation-now``: as before this change, ``down`` is out and ``late`` in."""
    with Deployment.init(tmp_path / "dep", ["us"]) as d:
        history(d)
    results = evaluate(tmp_path, methods=("popular",), moderation_now=True)
    assert results["config"]["moderation"] == "now"
    assert results["config"]["held_out_positives"] == 6  # late, each
    assert results["offline"]["popular"]["recall@50"] == pytest.approx(1.0)


# -- a failed region is audited -------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_region_that_fails_after_its_copy_is_audited(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two failures: the engine's training raises (in a stage), and a cut with nothing
    before it (between stages). Each is one ``evaluation.failed`` entry naming the
    stage and the error, not its message (which may quote data); each copy is gone."""
    import fyp.evaluation.temporal as temporal

    def broken(*args: Any, **kwargs: Any) -> float:
        raise RuntimeError("training broke on user u1")

    with on_backend(backend, monkeypatch):
        with Deployment.init(tmp_path / "dep", ["us"]) as d:
            history(d)
        config = TemporalConfig(
            directory=tmp_path / "dep", out=tmp_path / "out", region="us", cut_ms=CUT_MS
        )
        with monkeypatch.context() as patch:
            patch.setattr(temporal, "train_engine", broken)
            with pytest.raises(RuntimeError, match="training broke"):
                run_temporal(config, log=lambda _: None)
        early = TemporalConfig(directory=tmp_path / "dep", out=tmp_path / "out", cut_ms=T0_MS)
        outcome = run_temporal(early, log=lambda _: None)  # every region: reported
        assert isinstance(outcome.errors["us"], ValidationFailed)
        with Deployment.open(tmp_path / "dep") as d:
            assert staging_dirs(d.config.region_dir("us")) == []
            entries = list(AuditLog(d.store("us")).entries(action="evaluation.failed"))
            assert not list(AuditLog(d.store("us")).entries(action="evaluation.run"))
    details = [e.details for e in entries]
    assert [(x["stage"], x["error"], x["exception"]) for x in details] == [
        ("train", "server_error", "RuntimeError"),
        ("after cut", "validation_failed", "ValidationFailed"),
    ]
    assert all(e.subject == "us" and e.actor == temporal.ACTOR for e in entries)
    assert not any("u1" in str(x) for x in details)  # what failed, not the data
