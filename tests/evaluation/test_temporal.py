"""``fyp eval deployment``: a deployment's own events, split in time (fyp.evaluation.temporal).

Every test runs on SQLite, and the end-to-end one on PostgreSQL too when
``FYP_TEST_POSTGRES_URL`` names a server."""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fyp.audit.log import AuditLog
from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.cli.app import app
from fyp.errors import InvalidRequest, UnknownRegion, ValidationFailed
from fyp.evaluation.baselines import PEERS
from fyp.evaluation.offline import Protocol, RegionData, rank_peer
from fyp.evaluation.temporal import TemporalConfig, parse_cut, run_temporal
from fyp.evaluation.temporal_cut import Split, choose_cut, positives, split_copy
from fyp.events.ingest import Ingestor
from fyp.events.schema import StoredEvent
from fyp.models.artifacts import list_versions
from fyp.moderation import Moderator, review, service
from fyp.regions.deployment import Deployment
from fyp.sovereignty.region_data import snapshot_region
from fyp.sovereignty.staging import EVAL_PREFIX, remove_stale, staging_dirs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from consent_helpers import BACKENDS, on_backend

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CUT = T0 + timedelta(days=10)
CUT_MS = int(CUT.timestamp() * 1000)
T0_MS = int(T0.timestamp() * 1000)


@contextmanager
def moderation_clock(ms: int) -> Iterator[None]:
    """Moderation decides at ``ms``. The planted histories are of March 2026: their
    deployment judged its videos as they were published, before the cut (the
    evaluation takes each video's verdict as it stood at the cut)."""
    with pytest.MonkeyPatch.context() as patch:
        for module in (service, review):
            patch.setattr(module, "now_ms", lambda: ms)
        yield


def moderate(d: Deployment, ms: int = T0_MS) -> None:
    """Run the region's automated checks at ``ms``."""
    with moderation_clock(ms):
        Moderator(d).run("us")


def at(day: float) -> str:
    return (T0 + timedelta(days=day)).isoformat()


def _event(n: int, user: str, video: str, kind: str, day: float) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": f"e{n}",
        "user_id": user,
        "video_id": video,
        "type": kind,
        "ts": at(day),
    }
    if kind == "play":
        e["watch_ms"] = 20_000  # a long play of a 20 s video
    return e


def publish(catalog: Catalog, videos: list[str]) -> None:
    """Videos of adult creators, one each (the creator rules hold videos of nobody, and
    the feed never shows two videos of one creator in a row)."""
    for v in videos:
        catalog.create_user(UserIn(user_id=f"by-{v}", home_region="us", birth_year=1990))
        catalog.create_video(
            VideoIn(video_id=v, creator_id=f"by-{v}", duration_ms=20_000, regions=["us"])
        )


# -- the cut, by hand ------------------------------------------------------------------
PLANTED = [  # (user, video, type, day); the cut is day 10
    ("ann", "v1", "play", 1),
    ("ann", "v2", "skip", 2),
    ("ann", "v2", "play", 11),  # seen before the cut (a skip): not held out
    ("ann", "v3", "like", 12),  # held out
    ("ann", "v4", "like", 12),
    ("ann", "v4", "unlike", 13),  # taken back: not held out
    ("ann", "v5", "skip", 12),  # no positive
    ("bob", "v3", "share", 3),
    ("bob", "v1", "play", 14),  # held out
    ("bob", "late", "play", 15),  # published after the cut, never played before: not ranked
    ("cat", "v1", "play", 12),  # no history before the cut: no test user
    ("dan", "v2", "play", 4),  # nothing after the cut
    ("eve", "v1", "play", 11),  # a newcomer: her first three events after the cut...
    ("eve", "v2", "skip", 11.5),
    ("eve", "v3", "share", 12),
    ("eve", "v5", "like", 13),  # ...then what she liked next
    ("eve", "v2", "like", 14),  # (a video of her first three: not held out)
]


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[Deployment]:
    with Deployment.init(tmp_path / "dep", ["us"]) as d:
        catalog = Catalog(d)
        for user in ("ann", "bob", "cat", "dan", "eve"):
            catalog.create_user(UserIn(user_id=user, home_region="us"))
        publish(catalog, ["v1", "v2", "v3", "v4", "v5", "late"])
        Ingestor(d).ingest([_event(n, *row) for n, row in enumerate(PLANTED)])
        with closing(sqlite3.connect(d.config.region_dir("us") / "store.sqlite")) as db, db:
            # the catalogue's own times: five videos published before the cut, one after
            db.execute("UPDATE videos SET created_at_ms = ?", (CUT_MS - 86_400_000,))
            db.execute("UPDATE videos SET created_at_ms = ? WHERE video_id = 'late'", (CUT_MS + 1,))
        moderate(d)
        yield d


def test_the_cut_holds_out_each_users_new_positives(planted: Deployment, tmp_path: Path) -> None:
    copy = tmp_path / "copy.sqlite"
    snapshot_region(planted.config, "us", copy)
    with closing(sqlite3.connect(copy)) as db:
        split = split_copy(db, planted.config, "us", CUT_MS)
        left = db.execute("SELECT user_id, video_id, ts_ms FROM events").fetchall()
    assert split.held_out == {"ann": {"v3"}, "bob": {"v1"}}
    assert split.seen == {"ann": {"v1", "v2"}, "bob": {"v3"}}
    assert (split.events_before, split.events_after) == (4, 13)
    assert split.newcomers == {}  # none asked for
    assert "late" not in split.universe and {"v1", "v2", "v3", "v4", "v5"} <= split.universe
    assert len(left) == 4 and all(ts < CUT_MS for _, _, ts in left)  # the future is gone


def test_a_newcomers_first_events_are_their_history(planted: Deployment, tmp_path: Path) -> None:
    copy = tmp_path / "copy.sqlite"
    snapshot_region(planted.config, "us", copy)
    with closing(sqlite3.connect(copy)) as db:
        split = split_copy(db, planted.config, "us", CUT_MS, newcomer_events=3)
    assert split.newcomers == {"eve": {"v5"}}  # cat has one event after the cut: too few
    assert [(e.user_id, e.video_id, e.type) for e in split.newcomer_events] == [
        ("eve", "v1", "play"),
        ("eve", "v2", "skip"),
        ("eve", "v3", "share"),
    ]
    assert split.held_out == {"ann": {"v3"}, "bob": {"v1"}}  # returning users as before
    live = planted.store("us").count_events()
    assert live == len(PLANTED)  # only the copy was cut


def test_choose_cut_holds_out_the_latest_share(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "e.sqlite")) as db:
        db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, ts_ms INTEGER)")
        db.executemany("INSERT INTO events (ts_ms) VALUES (?)", [(t,) for t in range(100, 110)])
        assert choose_cut(db, 0.2) == 108  # 108 and 109 held out
        assert choose_cut(db, 0.5) == 105
        db.execute("UPDATE events SET ts_ms = 7")
        with pytest.raises(ValidationFailed, match="spread over time"):
            choose_cut(db, 0.2)


def test_positives_fold_likes_taken_back() -> None:
    def e(seq: int, user: str, video: str, kind: str, long: bool = False) -> StoredEvent:
        return StoredEvent(seq, f"e{seq}", user, video, kind, 0, None, None, long, long, False)

    events = [
        e(1, "a", "x", "like"),
        e(2, "a", "x", "unlike"),
        e(3, "a", "y", "like"),
        e(4, "a", "y", "unlike"),
        e(5, "a", "y", "like"),  # liked again
        e(6, "a", "z", "play", long=True),
        e(7, "a", "w", "play"),  # a short play is no positive
        e(8, "b", "x", "share"),
    ]
    assert positives(events) == {"a": {"y", "z"}, "b": {"x"}}


def test_positives_take_likes_back_by_the_clients_time() -> None:
    """An unlike at 3 sent before the like at 2 takes it back; a like at 5 sent after
    an unlike at 4 stands."""

    def e(seq: int, video: str, kind: str, ts: int) -> StoredEvent:
        return StoredEvent(seq, f"e{seq}", "a", video, kind, ts, None, None, False, False, False)

    sent = [
        e(1, "x", "unlike", 3),
        e(2, "x", "like", 2),
        e(3, "y", "unlike", 4),
        e(4, "y", "like", 5),
    ]
    assert positives(sent) == {"a": {"y"}}


def test_peers_never_rank_what_the_user_saw() -> None:
    videos = [f"v{n}" for n in range(6)]
    x = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]], np.float32))
    region = RegionData("us", ["a", "b"], {"a": 0, "b": 1}, x, test={"a": {"v2"}})
    region.seen = {"a": {"v0", "v1"}}
    protocol = Protocol(
        deployment=None,  # type: ignore[arg-type]
        video_ids=videos,
        video_index={v: n for n, v in enumerate(videos)},
        universe=videos,
        regions=[region],
        category={},
        train_counts={},
        n_train_users=2,
    )
    ranked = rank_peer(protocol, PEERS["popular"], seed=0)["a"]
    assert ranked[0] == "v2" and not {"v0", "v1"} & set(ranked)
    assert sorted(ranked) == ["v2", "v3", "v4", "v5"]


# -- end to end --------------------------------------------------------------------------
GROUPS = {"a": [f"a{n}" for n in range(12)], "b": [f"b{n}" for n in range(12)]}


def tastes(d: Deployment) -> None:
    """Two groups of users with their own videos, before and after the cut; one user
    withheld model_training; one has a personalised feed off."""
    rng = random.Random(5)
    catalog = Catalog(d)
    users = [f"{g}-u{n}" for g in GROUPS for n in range(15)]
    for user in users:
        consents = {}
        if user == "a-u0":
            consents = {"model_training": False}
        if user == "b-u0":
            consents = {"personalised_feed": False}
        catalog.create_user(UserIn(user_id=user, home_region="us", consents=consents))
    publish(catalog, [v for videos in GROUPS.values() for v in videos])
    rows: list[dict[str, Any]] = []
    for user in users:
        own = GROUPS[user[0]]
        for day, count in ((rng.uniform(0, 9), 4), (rng.uniform(11, 20), 3)):
            for v in rng.sample(own, count):
                rows.append(_event(len(rows), user, v, "play", day + rng.random()))
    for n in range(8):  # newcomers: every event after the cut, three then three more
        user = f"{'ab'[n % 2]}-new{n}"
        catalog.create_user(UserIn(user_id=user, home_region="us"))
        for k, v in enumerate(rng.sample(GROUPS[user[0]], 6)):
            rows.append(_event(len(rows), user, v, "play", 11 + k + rng.random()))
    Ingestor(d).ingest(rows)
    moderate(d)


@pytest.mark.parametrize("backend", BACKENDS)
def test_end_to_end_on_a_deployment(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with on_backend(backend, monkeypatch):
        d = Deployment.init(tmp_path / "dep", ["us"])
        with d:
            tastes(d)
            events_before = d.store("us").count_events()
            models_before = list_versions(d.config.region_dir("us"))
        out = tmp_path / "out"
        outcome = run_temporal(
            TemporalConfig(
                directory=tmp_path / "dep", out=out, region="us", cut_ms=CUT_MS, reason="test"
            ),
            log=lambda _: None,
        )
        results = outcome.results
        assert results["protocol"] == "deployment" and "results_version" not in results
        config = results["config"]
        assert config["users_without_training_consent"] == 1
        assert config["users_not_personalised"] == 1
        assert config["test_users"] == 28  # 30 users, less the two above
        offline = results["offline"]
        assert set(offline) == {"fyp", "random", "popular", "als", "bpr", "ease"}
        # the tastes are planted: the engine and ALS find them, random cannot
        assert offline["fyp"]["ndcg@10"] > offline["random"]["ndcg@10"] + 0.15
        assert offline["als"]["ndcg@10"] > offline["random"]["ndcg@10"] + 0.15
        # newcomers: three plays in, the feed already serves their group's videos, which
        # the popularity of the whole region cannot
        assert config["newcomers"] == 8
        newcomers = results["offline_newcomers"]
        assert newcomers["fyp"]["ndcg@10"] > newcomers["popular"]["ndcg@10"] + 0.15
        assert sorted(p.name for p in out.iterdir()) == ["report.html", "results.json"]
        written = (out / "results.json").read_text() + (out / "report.html").read_text()
        assert "-u1" not in written  # figures only: no user id leaves the region
        with Deployment.open(tmp_path / "dep") as d:
            assert d.store("us").count_events() == events_before  # the live store is as it was
            assert list_versions(d.config.region_dir("us")) == models_before
            assert staging_dirs(d.config.region_dir("us")) == []  # the copy is gone
            entries = list(AuditLog(d.store("us")).entries(action="evaluation.run"))
            assert [e.details["test_users"] for e in entries] == [28]
            assert entries[0].details["reason"] == "test"


def test_a_killed_runs_copy_is_stale(tmp_path: Path) -> None:
    region_dir = tmp_path / "regions" / "us"
    left = region_dir / f"{EVAL_PREFIX}abc"
    left.mkdir(parents=True)
    (left / "store.sqlite").write_bytes(b"SQLite format 3\x00")
    assert staging_dirs(region_dir) == [left]
    assert remove_stale(region_dir) == [left] and not left.exists()


def test_bad_input_is_refused_before_anything_is_written(
    planted: Deployment, tmp_path: Path
) -> None:
    root = planted.config.root
    for holdout in (0.0, 1.0, -0.5):
        with pytest.raises(InvalidRequest, match="--holdout"):
            run_temporal(TemporalConfig(directory=root, out=tmp_path / "o", holdout=holdout))
    with pytest.raises(InvalidRequest, match="inside the deployment"):
        run_temporal(TemporalConfig(directory=root, out=root / "figures"))
    early = int(T0.timestamp() * 1000) - 1
    with pytest.raises(ValidationFailed, match="0 events before it"):
        run_temporal(TemporalConfig(directory=root, out=tmp_path / "o", cut_ms=early, region="us"))
    with pytest.raises(UnknownRegion):
        run_temporal(TemporalConfig(directory=root, out=tmp_path / "o", region="mars"))
    # every region: the region's failure is its outcome
    outcome = run_temporal(TemporalConfig(directory=root, out=tmp_path / "o", cut_ms=early))
    assert isinstance(outcome.errors["us"], ValidationFailed)
    assert outcome.results["failed"] == ["us"]
    assert "0 events before it" in outcome.results["regions"]["us"]["error"]["message"]
    assert staging_dirs(planted.config.region_dir("us")) == []
    with pytest.raises(InvalidRequest, match="ISO 8601"):
        parse_cut("yesterday")
    assert parse_cut("2026-03-11T00:00:00Z") == CUT_MS == parse_cut("2026-03-11T00:00:00")


def test_cli(tmp_path: Path, deployment: Deployment) -> None:
    runner = CliRunner()
    root = str(deployment.config.root)
    result = runner.invoke(app, ["eval", "deployment", root, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2  # every region tried, each reported
    assert "region us: " in result.output and "region eu: " in result.output
    assert json.loads((tmp_path / "o" / "results.json").read_text())["failed"] == ["eu", "us"]
    result = runner.invoke(
        app, ["eval", "deployment", root, "--region", "us", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code != 0 and "too few to split" in result.output


def test_cli_prints_the_figures(planted: Deployment, tmp_path: Path) -> None:
    out = tmp_path / "o"
    root = str(planted.config.root)
    args = ["eval", "deployment", root, "--out", str(out), "--cut", "2026-03-11", "--region", "us"]
    result = CliRunner().invoke(app, [*args, "--also-scorer", "multi_objective"])
    assert result.exit_code == 0, result.output
    assert "offline (deployment)" in result.output
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["test_users"] == 2
    assert results["config"]["newcomers"] == 1  # eve
    assert results["offline_newcomers"]["fyp"]["users"] == 1
    assert "offline, newcomers (deployment)" in result.output
    assert "Offline, newcomers" in (out / "report.html").read_text()
    # the learned heads ranked the same users, and are compared with the configured scorer
    assert results["offline"]["fyp:multi_objective"]["users"] == 2
    assert "fyp:multi_objective" in results["uncertainty"]["offline"]["fyp_vs"]
    bad = CliRunner().invoke(app, [*args, "--also-scorer", "magic"])
    assert bad.exit_code == 2 and "unknown scorers" in bad.output
    assert results["config"]["cut"] == "2026-03-11T00:00:00Z"


def test_every_region_in_its_own_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --region: each region cut in its own directory, figures side by side; a
    region that fails is reported, the others still run, the exit is non-zero."""
    import fyp.evaluation.temporal as temporal

    copies: list[tuple[str, Path]] = []

    def spy(config: Any, region: str, path: Path) -> Any:
        copies.append((region, Path(path)))
        return snapshot_region(config, region, path)

    monkeypatch.setattr(temporal, "snapshot_region", spy)
    with Deployment.init(tmp_path / "dep", ["us", "eu"]) as d:
        tastes(d)
        catalog = Catalog(d)  # eu: one event, before the cut: nothing after it
        catalog.create_user(UserIn(user_id="e-u0", home_region="eu"))
        catalog.create_user(UserIn(user_id="by-e0", home_region="eu", birth_year=1990))
        catalog.create_video(
            VideoIn(video_id="e0", creator_id="by-e0", duration_ms=20_000, regions=["eu"])
        )
        Ingestor(d).ingest([_event(0, "e-u0", "e0", "play", 1)])
        regions = {r: d.config.region_dir(r) for r in ("us", "eu")}
    out = tmp_path / "o"
    args = ["eval", "deployment", str(tmp_path / "dep"), "--out", str(out), "--cut", "2026-03-11"]
    result = CliRunner().invoke(app, [*args, "--peers", "popular,als"])
    assert result.exit_code == 2, result.output  # eu's error is the caller's to fix
    assert "region eu: " in result.output and "both sides need some" in result.output
    assert "offline (deployment, us)" in result.output
    assert [r for r, _ in copies] == ["us", "eu"]
    assert all(path.is_relative_to(regions[r]) for r, path in copies)
    results = json.loads((out / "results.json").read_text())
    assert results["results_version"] == 2 and results["failed"] == ["eu"]
    us = results["regions"]["us"]
    assert us["config"]["region"] == "us" and us["config"]["test_users"] == 28
    assert set(us["offline"]) == {"fyp", "popular", "als"}  # the peers asked for only
    assert results["regions"]["eu"]["error"]["code"] == "validation_failed"
    report = (out / "report.html").read_text()
    assert "Region us" in report and "Region eu" in report and "not evaluated" in report
    with Deployment.open(tmp_path / "dep") as d:
        for region in ("us", "eu"):  # each run in its own region's log, the copies gone
            entries = list(AuditLog(d.store(region)).entries(action="evaluation.run"))
            assert len(entries) == (region == "us")
            assert staging_dirs(regions[region]) == []


def test_cli_peers(planted: Deployment, tmp_path: Path) -> None:
    from fyp.cli.evaluate import ALL_PEERS

    assert ",".join(PEERS) == ALL_PEERS  # the CLI's default names every peer
    args = ["eval", "deployment", str(planted.config.root), "--out", str(tmp_path / "o")]
    for peers in ("popular,magic", ",", ""):
        bad = CliRunner().invoke(app, [*args, "--peers", peers])
        assert bad.exit_code == 2 and "--peers" in bad.output, bad.output
    assert not (tmp_path / "o").exists() and staging_dirs(planted.config.region_dir("us")) == []


def test_a_brought_peer_ranks_the_same_users(
    planted: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--peer``: popularity under another name earns popular's figures on the same cut;
    a peer that breaks the contract is refused before any copy is made."""
    code = "from fyp.evaluation.baselines import PopularityRecommender\n\n\n"
    code += "class Mine(PopularityRecommender):\n    name = 'mine'\n\n\n"
    code += "class Cold(PopularityRecommender):\n    name = 'cold'\n\n"
    code += "    def scores(self, user, items):\n"
    code += "        return super().scores(user, items) * float('nan')\n"
    (tmp_path / "brought_peers.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    root = str(planted.config.root)
    args = ["eval", "deployment", root, "--out", str(out), "--cut", "2026-03-11"]
    result = CliRunner().invoke(app, [*args, "--peers", "popular", "--peer", "brought_peers:Mine"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())["regions"]["us"]
    assert results["offline"]["mine"] == results["offline"]["popular"]
    assert results["offline_newcomers"]["mine"] == results["offline_newcomers"]["popular"]
    assert results["config"]["peers"] == {"mine": "brought_peers:Mine"}
    assert "mine" in results["uncertainty"]["offline"]["fyp_vs"]
    broken = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "o2"), "--peer", "brought_peers:Cold"]
    )
    assert broken.exit_code == 2 and "breaks the Recommender contract" in broken.output
    assert not (tmp_path / "o2").exists()
    assert staging_dirs(planted.config.region_dir("us")) == []


def test_the_official_kuairec_layout_splits_at_its_real_times(tmp_path: Path) -> None:
    """The official matrices carry real play times: a cut on 2020-07-06 holds out what
    each user went on to play whole (or for 18 s) on a video that existed before it."""
    from fyp.datasets.official import import_kuairec

    fixture = Path(__file__).resolve().parents[1] / "datasets" / "fixtures" / "kuairec_official"
    with Deployment.init(tmp_path / "dep", ["us"]) as d:
        import_kuairec(d, fixture)
        Moderator(d).run("us")
        copy = tmp_path / "copy.sqlite"
        snapshot_region(d.config, "us", copy)
    cut = parse_cut("2020-07-06T00:00:00Z")
    with closing(sqlite3.connect(copy)) as db:
        split = split_copy(db, d.config, "us", cut)
    # user 0's whole play of 16 is no test: 16 was first played after the cut; user 2's
    # 1 s of 16 is no positive
    assert split.held_out == {"0": {"12"}, "1": {"13"}, "2": {"11"}}
    # a history imported from before the region moderated: no verdict stood at the cut,
    # so nothing could be served then; today's verdicts only when asked for
    config = TemporalConfig(directory=tmp_path / "dep", out=tmp_path / "o", cut_ms=cut, region="us")
    with pytest.raises(ValidationFailed, match="--moderation-now"):
        run_temporal(config, log=lambda _: None)
    config = dataclasses.replace(config, moderation_now=True)
    results = run_temporal(config, log=lambda _: None).results
    assert results["config"]["moderation"] == "now"
    assert results["config"]["test_users"] == 3
    assert results["config"]["events_after_cut"] == split.events_after > 5  # small matrix too


# -- the cut against a plain model, for any history --------------------------------------
KINDS = ["play_long", "play_short", "like", "unlike", "share", "skip", "impression"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A store file with users u0-u4 (u4 withheld model_training) and videos x0-x5 (x5
    published after day 10), and the deployment's config."""
    root = tmp_path_factory.mktemp("template")
    with Deployment.init(root / "dep", ["us"]) as d:
        catalog = Catalog(d)
        for n in range(5):
            consents = {"model_training": False} if n == 4 else None
            catalog.create_user(UserIn(user_id=f"u{n}", home_region="us", consents=consents))
        publish(catalog, [f"x{n}" for n in range(6)])
        file = root / "template.sqlite"
        snapshot_region(d.config, "us", file)
        config = d.config
    with closing(sqlite3.connect(file)) as db, db:
        db.execute("UPDATE videos SET created_at_ms = ?", (CUT_MS - 1,))
        db.execute("UPDATE videos SET created_at_ms = ? WHERE video_id = 'x5'", (CUT_MS + 1,))
    return file, config


def histories(
    videos: list[str], kinds: list[str], max_size: int
) -> st.SearchStrategy[list[tuple[str, str, str, int]]]:
    """Events of the template's users on ``videos`` (x5 published after the cut)."""
    return st.lists(
        st.tuples(
            st.sampled_from(["u0", "u1", "u4"]),  # u4 withheld model_training
            st.sampled_from(videos),
            st.sampled_from(kinds),
            st.integers(0, 20),  # the day; the cut is day 10
        ),
        max_size=max_size,
    )


def cut_template(
    template: tuple[Path, Any], tmp_path: Path, columns: str, rows: list[tuple[Any, ...]]
) -> tuple[Split, Path]:
    """A copy of the template with these events (``columns`` of table events), cut at
    ``CUT_MS``; and the copy's file."""
    import shutil
    import uuid

    file, config = template
    copy = tmp_path / f"{uuid.uuid4().hex}.sqlite"
    shutil.copy(file, copy)
    with closing(sqlite3.connect(copy)) as db:
        with db:
            marks = ", ".join("?" * len(columns.split(",")))
            db.executemany(f"INSERT INTO events ({columns}) VALUES ({marks})", rows)
        return split_copy(db, config, "us", CUT_MS), copy


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(histories(["x0", "x1", "x2", "x5"], KINDS, 40))
@example([("u0", "x0", "share", 1), ("u0", "x1", "like", 11), ("u0", "x1", "unlike", 12)])
@example([("u1", "x0", "skip", 2), ("u1", "x1", "unlike", 11), ("u1", "x1", "like", 12)])
@example([("u1", "x0", "skip", 2), ("u1", "x1", "like", 12), ("u1", "x1", "unlike", 11)])
def test_the_cut_matches_a_plain_model(
    template: tuple[Path, Any], tmp_path: Path, history: list[tuple[str, str, str, int]]
) -> None:
    day_ms = 86_400_000
    t0 = CUT_MS - 10 * day_ms
    rows = []
    for n, (u, v, kind, day) in enumerate(history):
        long = kind == "play_long"
        rows.append(
            (
                f"e{n}",
                u,
                v,
                "play" if kind.startswith("play") else kind,
                t0 + day * day_ms,
                20_000 if long else (1_000 if kind == "play_short" else None),
                int(long),
                int(long),
            )
        )
    columns = "event_id, user_id, video_id, type, ts_ms, watch_ms, valid_play, long_play"
    split, copy = cut_template(template, tmp_path, columns, rows)
    with closing(sqlite3.connect(copy)) as db:
        left = db.execute("SELECT user_id, ts_ms FROM events").fetchall()
    # the plain model: by the client's time (then delivery), a pair's latest like or
    # unlike decides
    before = [(u, v) for (_, u, v, _, ts, *_rest) in rows if ts < CUT_MS and u != "u4"]
    seen: dict[str, set[str]] = {}
    for u, v in before:
        seen.setdefault(u, set()).add(v)
    liked: dict[tuple[str, str], bool] = {}
    other: set[tuple[str, str]] = set()
    by_time = [row for _, row in sorted(enumerate(rows), key=lambda r: (r[1][4], r[0]))]
    for _, u, v, kind, ts, _w, _valid, long in by_time:
        if ts < CUT_MS or u == "u4":
            continue
        if kind == "like":
            liked[(u, v)] = True
        elif kind == "unlike":
            liked[(u, v)] = False
        elif kind == "share" or (kind == "play" and long):
            other.add((u, v))
    good = {p for p, on in liked.items() if on} | other
    existed = {f"x{n}" for n in range(5)} | {v for vs in seen.values() for v in vs}
    expected: dict[str, set[str]] = {}
    for u, v in good:
        if u in seen and v in existed and v not in seen[u]:
            expected.setdefault(u, set()).add(v)
    assert split.held_out == expected
    assert all(ts < CUT_MS and u != "u4" for u, ts in left)
    assert split.events_before == len(before)


def test_the_engine_ranks_with_the_deployments_feed_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fyp eval deployment`` measures the deployment's own pipeline: its
    ``[feed.sources]`` and ``[feed.rerank]`` reach the copy and every engine ranked."""
    import dataclasses

    import fyp.evaluation.temporal as temporal
    from fyp.config import FeedConfig

    tuned = {"sources": {"fresh": 0, "trending": 77}, "rerank": {"creator_decay": 0.3}}
    with Deployment.init(tmp_path / "dep", ["us"]) as d:
        d.config = dataclasses.replace(d.config, feed=FeedConfig.from_dict(tuned))
        assert temporal.scratch_config(d.config, "us", tmp_path / "copy").feed == d.config.feed
        pipelines: list[Any] = []

        def rank(protocol: Any, service: Any, seed: int) -> dict[str, list[str]]:
            pipelines.append(service.pipeline)
            return {}

        monkeypatch.setattr(temporal, "rank_engine", rank)
        run = TemporalConfig(
            directory=tmp_path / "dep", out=tmp_path / "o", scorers=("multi_objective",)
        )
        temporal.rank_all(None, d, ["fyp"], run, CUT_MS, lambda _: None)  # type: ignore[arg-type]
    assert len(pipelines) == 2  # the deployment's scorer, and multi_objective
    for pipeline in pipelines:
        quotas = {s.name: s.quota for s in pipeline.sources}
        assert "fresh" not in quotas and quotas["trending"] == 77
        assert pipeline.rerank.creator_decay == 0.3
