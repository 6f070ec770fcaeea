"""The feed service end to end on a small trained deployment."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fyp.catalog.models import UserIn
from fyp.catalog.service import Catalog
from fyp.config import FeedConfig
from fyp.errors import InvalidRequest, ModelError, UnknownUser, ValidationFailed
from fyp.events.ingest import Ingestor
from fyp.feed.filters import EligibilityCheck
from fyp.feed.scoring import ValueScorer, ValueWeights
from fyp.feed.service import FeedService, encode_cursor
from fyp.feed.state import UserState
from fyp.models.artifacts import hash_ids, read_manifest
from fyp.models.training import train_and_publish
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment

N_VIDEOS = 120  # the trained fixture's catalogue (tests/feed/conftest.py)


def test_page_has_items_with_score_source_and_reason(trained: Deployment) -> None:
    page = FeedService(trained).feed("u2", n=10)
    assert len(page.items) == 10
    assert page.region == "us"
    assert [i.position for i in page.items] == list(range(10))
    for item in page.items:
        assert item.source in {
            "co_engagement",
            "embedding",
            "trending",
            "following",
            "fresh",
            "category_interest",
        }
        assert item.reason
    assert len({i.video_id for i in page.items}) == 10


def test_no_repeats_across_pages_and_sessions(trained: Deployment) -> None:
    service = FeedService(trained)
    shown: list[str] = []
    cursor = None
    for _ in range(5):
        page = service.feed("u4", n=10, cursor=cursor)
        shown += [i.video_id for i in page.items]
        cursor = page.cursor
    # a new session (no cursor, new service) still does not repeat
    shown += [i.video_id for i in FeedService(trained).feed("u4", n=10).items]
    assert len(shown) == len(set(shown)) == 60


def test_not_interested_removes_the_creator_at_once(trained: Deployment) -> None:
    service = FeedService(trained)
    first = service.feed("u6", n=10, record=False)
    video = first.items[0].video_id
    creator = Catalog(trained).get_video(video).creator_id
    Ingestor(trained).ingest(
        [{"event_id": "ni-1", "user_id": "u6", "video_id": video, "type": "not_interested"}]
    )
    after = service.feed("u6", n=20, record=False)
    catalog = Catalog(trained)
    assert all(catalog.get_video(i.video_id).creator_id != creator for i in after.items)
    removed = service.feed("u6", n=5, record=False, debug=True).removed
    blocked = [r for r in removed if r["stage"] == "not_interested"]
    assert blocked, "the creator's other videos are removed with a reason"
    assert all(catalog.get_video(r["video_id"]).creator_id == creator for r in blocked)
    assert {r["reason"] for r in blocked} == {"you marked this creator not interested"}


def test_not_interested_holds_for_the_seen_window_not_only_the_latest_events(
    trained: Deployment,
) -> None:
    """A heavy user's "not interested" is not pushed out by the plays after it (the
    feed reads only the latest RECENT_EVENTS of them); one older than the seen window
    is forgotten, as a page shown then is."""
    from fyp.feed.service import RECENT_EVENTS

    service = FeedService(trained)
    model = service.model("us")
    day = 86_400_000
    now = time.time_ns() // 1_000_000
    catalog = Catalog(trained)
    recent, old = "v7", "v8"  # creators u7 and u8
    codes = {model.creator_index[catalog.get_video(v).creator_id] for v in (recent, old)}
    Ingestor(trained).ingest(
        [
            {
                "event_id": "ni-old",
                "user_id": "u2",
                "video_id": old,
                "type": "not_interested",
                "ts": _iso(now - 40 * day),
            },
            {"event_id": "ni-new", "user_id": "u2", "video_id": recent, "type": "not_interested"},
        ]
    )
    later = [
        {"event_id": f"imp-{k}", "user_id": "u2", "video_id": f"v{k % 2}", "type": "impression"}
        for k in range(RECENT_EVENTS + 50)
    ]
    assert all(r.status == "stored" for r in Ingestor(trained).ingest(later).results)
    latest = {e.event_id for e in trained.store("us").user_events("u2", RECENT_EVENTS)}
    assert not {"ni-old", "ni-new"} & latest
    state = service.state("u2", model)
    blocked = codes & state.not_interested_creators.keys()
    assert blocked == {model.creator_index["u7"]}  # the 40-day-old one is past the window
    assert recent in state.not_interested_videos and old not in state.not_interested_videos
    page = service.feed("u2", n=20, record=False)
    assert all(catalog.get_video(i.video_id).creator_id != "u7" for i in page.items)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_not_interested_in_a_video_newer_than_the_model_still_reaches_its_creator(
    trained: Deployment,
) -> None:
    """The video was uploaded after training (a shared link, a profile): the model has
    no row for it, and its creator's other videos stayed in the feed (acceptance review)."""
    from fyp.catalog.models import VideoIn

    service = FeedService(trained)
    first = service.feed("u7", n=10, record=False)
    creator = Catalog(trained).get_video(first.items[0].video_id).creator_id
    assert creator is not None
    Catalog(trained).create_video(
        VideoIn(
            video_id="after-training",
            creator_id=creator,
            duration_ms=9_000,
            regions=["us", "eu"],
        )
    )
    stored = Ingestor(trained).ingest(
        [
            {
                "event_id": "ni-new",
                "user_id": "u7",
                "video_id": "after-training",
                "type": "not_interested",
            }
        ]
    )
    assert stored.results[0].status == "stored"
    after = service.feed("u7", n=30, record=False)
    catalog = Catalog(trained)
    assert after.items and all(
        catalog.get_video(i.video_id).creator_id != creator for i in after.items
    )


def test_new_user_gets_a_feed_and_a_few_likes_personalise_it(trained: Deployment) -> None:
    Catalog(trained).create_user(UserIn(user_id="newbie", home_region="eu"))
    service = FeedService(trained)
    cold = service.feed("newbie", n=10, record=False)
    assert len(cold.items) == 10
    assert {i.source for i in cold.items} <= {"trending", "fresh"}
    liked = [f"v{k}" for k in (3, 9, 15, 21)]  # all category cat3
    Ingestor(trained).ingest(
        [
            {"event_id": f"like-{v}", "user_id": "newbie", "video_id": v, "type": "like"}
            for v in liked
        ]
    )
    warm = service.feed("newbie", n=10, record=False)
    assert [i.video_id for i in warm.items] != [i.video_id for i in cold.items]
    assert {i.source for i in warm.items} - {"trending", "fresh"}, "no personal source"
    assert not {i.video_id for i in warm.items} & set(liked), "liked videos count as seen"


def test_a_few_likes_show_on_the_first_page_itself(trained: Deployment) -> None:
    """The model has not learned them yet, so they weigh as this session's intent
    (UserState.fresh_affinity): the category a new user liked appears on page 1."""
    catalog = Catalog(trained)
    catalog.create_user(UserIn(user_id="newbie", home_region="eu"))
    service = FeedService(trained)

    def category(video_id: str) -> str:
        return catalog.get_video(video_id).categories[0]

    cold = [category(i.video_id) for i in service.feed("newbie", n=10, record=False).items]
    rare = min((f"cat{c}" for c in range(6)), key=lambda c: (cold.count(c), c))
    liked = [f"v{k}" for k in range(N_VIDEOS) if category(f"v{k}") == rare][:3]
    Ingestor(trained).ingest(
        [
            {"event_id": f"like-{v}", "user_id": "newbie", "video_id": v, "type": "like"}
            for v in liked
        ]
    )
    warm = [category(i.video_id) for i in service.feed("newbie", n=10, record=False).items]
    without = FeedService(trained)  # the same, with this session's likes weighed as old
    without.pipeline.scorer = ValueScorer(ValueWeights(fresh_category=0.0))
    plain = [category(i.video_id) for i in without.feed("newbie", n=10, record=False).items]
    assert warm.count(rare) > max(cold.count(rare), plain.count(rare)), (cold, plain, warm)


def test_events_the_model_learned_from_are_not_fresh_intent(trained: Deployment) -> None:
    from fyp.feed.state import build_state

    service = FeedService(trained)
    model = service.model("us")
    store = trained.store("us")
    old = store.user_events("u2", limit=300)
    assert old and max(e.seq for e in old) <= model.manifest.snapshot.max_seq
    state = build_state("u2", "us", None, old, [], model)
    assert state.category_affinity and not state.fresh_affinity


def test_never_two_consecutive_videos_of_one_creator(trained: Deployment) -> None:
    service = FeedService(trained)
    catalog = Catalog(trained)
    for u in range(0, 20):
        page = service.feed(f"u{u}", n=15, record=False)
        creators = [catalog.get_video(i.video_id).creator_id for i in page.items]
        assert all(a != b for a, b in itertools.pairwise(creators))


def test_eligibility_hook_applies_and_fails_closed(trained: Deployment) -> None:
    banned = {f"v{k}" for k in range(0, 120, 2)}

    def check(video_ids, state):  # type: ignore[no-untyped-def]
        return {v: "test ban" for v in video_ids if v in banned}

    page = FeedService(trained, eligibility=check).feed("u8", n=20, record=False)
    assert page.items and not {i.video_id for i in page.items} & banned
    assert any(r["stage"] == "eligibility" for r in page.removed)

    def broken(video_ids, state):  # type: ignore[no-untyped-def]
        raise RuntimeError("classifier down")

    assert FeedService(trained, eligibility=broken).feed("u8", n=10, record=False).items == []


def test_withdrawn_video_never_served(trained: Deployment) -> None:
    service = FeedService(trained)
    top = service.feed("u10", n=1, record=False).items[0].video_id
    trained.store("us").delete_video(top)
    assert top not in {i.video_id for i in service.feed("u10", n=20, record=False).items}


def _permissive(video_ids: Sequence[str], state: UserState) -> dict[str, str]:
    return {}  # an eligibility hook that does not look at the live catalogue


@pytest.mark.parametrize("hook", [None, _permissive], ids=["moderation", "custom hook"])
def test_the_final_check_drops_a_video_withdrawn_after_ranking(
    trained: Deployment, hook: EligibilityCheck | None
) -> None:
    """Moderation's hook covers the live catalogue itself; any other hook gets the
    separate availability check."""
    service = FeedService(trained, eligibility=hook)
    first = [i.video_id for i in service.feed("u10", n=5, record=False).items]
    trained.store("us").delete_video(first[0])
    again = service.feed("u10", n=5, record=False)  # from the order kept
    assert first[0] not in {i.video_id for i in again.items}
    assert [i.video_id for i in again.items][:3] == first[1:4]


def test_models_learn_only_from_their_region(trained: Deployment) -> None:
    for region in trained.regions:
        region_dir = trained.config.region_dir(region)
        manifest = read_manifest(region_dir, (region_dir / "models" / "current").read_text())
        assert manifest.region == region
        homed = {u.user_id for u in trained.store(region).iter_users()}
        learned = {e.user_id for e in trained.store(region).iter_events()}
        assert learned <= homed
        assert manifest.snapshot.event_count == trained.store(region).count_events()
        assert manifest.snapshot.users_sha256 == hash_ids(learned)
        assert manifest.snapshot.user_count == len(learned)


def test_new_artifact_is_picked_up_without_restart(trained: Deployment, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fyp.feed.live_models as live_models

    monkeypatch.setattr(live_models, "RELOAD_CHECK_S", 0.0)
    service = FeedService(trained)
    before = service.feed("u12", n=5, record=False).model_version
    train_and_publish(trained.store("us"), trained.config.region_dir("us"), consent=ConsentPolicy())
    after = service.feed("u12", n=5, record=False).model_version
    assert after != before


def test_artifact_of_another_region_is_refused(
    trained: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    us_dir = trained.config.region_dir("us")
    eu_dir = trained.config.region_dir("eu")
    version = (eu_dir / "models" / "current").read_text()
    shutil.copytree(eu_dir / "models" / version, us_dir / "models" / "planted")
    (us_dir / "models" / "current").write_text("planted")
    with pytest.raises(ModelError, match="the model of region 'us' is unavailable"):
        FeedService(trained).feed("u2", n=5)
    assert "trained for region 'eu'" in caplog.text  # the server's log says why


def test_bad_requests(trained: Deployment) -> None:
    service = FeedService(trained)
    with pytest.raises(UnknownUser):
        service.feed("nobody")
    with pytest.raises(ValidationFailed):
        service.feed("u2", n=0)
    with pytest.raises(InvalidRequest):
        service.feed("u2", cursor="not-a-cursor!")


def test_no_model_is_a_server_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Deployment.init(tmp_path / "d", ["us"]) as d:
        Catalog(d).create_user(UserIn(user_id="a", home_region="us"))
        with pytest.raises(ModelError):
            FeedService(d).feed("a")


def test_universe_restricts_the_feed(trained: Deployment) -> None:
    universe = [f"v{k}" for k in range(40, 80)]
    page = FeedService(trained).feed("u14", n=30, record=False, universe=universe)
    assert {i.video_id for i in page.items} <= set(universe)
    assert len(page.items) == 30
    assert np.all(np.diff([i.position for i in page.items]) == 1)


def test_multi_objective_scorer_is_selectable_and_uses_trained_heads(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    import fyp.models.ranker as ranker
    from fyp.config import RankingConfig
    from fyp.feed.scoring import RankerScorer

    monkeypatch.setattr(ranker, "MIN_POSITIVES", 5)  # the fixture is tiny
    train_and_publish(trained.store("us"), trained.config.region_dir("us"), consent=ConsentPolicy())
    config = replace(trained.config, ranking=RankingConfig(scorer="multi_objective"))
    trained.config = config
    service = FeedService(trained)
    assert isinstance(service.pipeline.scorer, RankerScorer)
    model = service.model("us")
    assert model.heads is not None and "long_play" in model.heads.names
    page = service.feed("u2", n=10, record=False)
    assert len(page.items) == 10


def test_writes_from_another_process_count_in_the_next_feed(trained: Deployment) -> None:
    """The cached user state is checked against the store on every request."""
    service = FeedService(trained)
    same_page = encode_cursor(0, 7)  # same page and session: same exploration draws
    first = service.feed("u6", n=10, cursor=same_page, record=False)
    second = service.feed("u6", n=10, cursor=same_page, record=False)  # cached state
    assert [i.video_id for i in second.items] == [i.video_id for i in first.items]
    video = first.items[0].video_id
    creator = Catalog(trained).get_video(video).creator_id
    with Deployment.open(trained.config.root) as other:  # another process's connections
        Ingestor(other).ingest(
            [{"event_id": "ni-x", "user_id": "u6", "video_id": video, "type": "not_interested"}]
        )
    after = service.feed("u6", n=20, record=False)
    assert all(Catalog(trained).get_video(i.video_id).creator_id != creator for i in after.items)


def test_pages_never_repeat_while_the_state_is_cached(trained: Deployment) -> None:
    service = FeedService(trained)
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        page = service.feed("u3", n=5, cursor=cursor)
        seen += [i.video_id for i in page.items]
        cursor = page.cursor
    assert len(seen) == len(set(seen)) == 20


def test_an_erased_users_cached_state_leaves_memory_at_once(trained: Deployment) -> None:
    from fyp.sovereignty.erasure import Eraser

    service = FeedService(trained)
    service.feed("u7", n=5, record=False, debug=True)  # runs the pipeline: a built state
    service.feed("u7", n=5, record=False)  # from the order ranked at training
    assert "u7" in service._states._entries and "u7" in service._ahead._slots  # cached
    assert "u7" in service.pipeline._proposals._entries
    Eraser(trained).erase("u7")
    assert "u7" not in service._states._entries and "u7" not in service._ahead._slots
    assert "u7" not in service.pipeline._proposals._entries


def test_a_version_deleted_under_the_loader_is_retried(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fyp.feed.live_models as live_models

    real = live_models.current_version
    calls: list[int] = []

    def vanishing(region_dir: Path) -> str | None:
        calls.append(1)  # the first answer names a version deleted right after
        return "19700101T000000-000000000" if len(calls) == 1 else real(region_dir)

    monkeypatch.setattr(live_models, "current_version", vanishing)
    assert FeedService(trained).feed("u2", n=3, record=False).items


def test_what_was_served_before_the_seen_window_counts_as_unseen(trained: Deployment) -> None:
    """What was shown before the window may be shown again (the serving store's
    maintenance forgets it: tests/storage/test_sqlite_maintenance.py)."""
    served_log = trained.served_log(trained.home_region("u6"))
    long_ago = time.time_ns() // 1_000_000 - 10 * 86_400_000
    served_log.record_served("u6", ["old-1", "old-2"], long_ago)
    service = FeedService(trained, seen_window_ms=86_400_000)
    assert {"old-1", "old-2"}.isdisjoint(
        service.state("u6", service.model(trained.home_region("u6"))).seen
    )
    page = service.feed("u6", n=5)
    assert {i.video_id for i in page.items} <= service.state(
        "u6", service.model(trained.home_region("u6"))
    ).seen.keys()


def test_a_new_event_rebuilds_the_state_without_rereading_the_served_log(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heavy users have long served logs: an events-only change reuses the cached part."""
    service = FeedService(trained)
    served_log = trained.served_log(trained.home_region("u5"))

    def like(video_id: str, n: int) -> None:
        event = {"event_id": f"like-u5-{n}", "user_id": "u5", "video_id": video_id}
        Ingestor(trained).ingest([{**event, "type": "like"}])

    first = service.feed("u5", n=5)  # from the order ranked at training: no state built
    like(first.items[0].video_id, 1)
    second = service.feed("u5", n=5)  # builds the state: reads the served log once
    monkeypatch.setattr(
        served_log, "served_since", lambda *a: pytest.fail("the served log was read again")
    )
    like(second.items[0].video_id, 2)
    third = service.feed("u5", n=10)
    shown = [i.video_id for page in (first, second, third) for i in page.items]
    assert len(shown) == len(set(shown)) == 20


def test_a_cached_state_costs_the_collector_the_same_whatever_the_user_has_seen(
    trained: Deployment, collector_work: Callable[[object, object], tuple[int, int]]
) -> None:
    """A server caches thousands of states, and a full collection visits everything they
    track: ids kept in tracked sets made those pauses grow with every page served."""
    service = FeedService(trained)
    region = trained.home_region("u7")
    model = service.model(region)
    work = []
    for round_no in range(3):
        for _ in range(round_no + 1):
            page = service.feed("u7", n=5)
        Ingestor(trained).ingest(
            [
                {"event_id": f"u7-{round_no}-{kind}", "user_id": "u7", "type": kind, **item}
                for kind, item in (
                    ("like", {"video_id": page.items[0].video_id}),
                    ("skip", {"video_id": page.items[1].video_id}),
                    ("follow", {"video_id": page.items[2].video_id}),
                )
            ]
        )
        service.feed("u7", n=5)  # builds the state
        state = service.state("u7", model)
        work.append((len(state.seen), collector_work(state, model)))
    assert work[0][0] < work[1][0] < work[2][0]  # more seen each round,
    assert work[0][1] == work[1][1] == work[2][1]  # the same for the collector


def test_a_new_event_rebuilds_the_state_without_rereading_an_unchanged_profile(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fyp.catalog.models import User
    from fyp.feed import profile as profile_module

    service = FeedService(trained)
    store = trained.store(trained.home_region("u5"))
    model = service.model(trained.home_region("u5"))
    profile = store.get_user("u5")  # read before the counting starts
    assert profile is not None
    store.update_user(profile.model_copy(update={"birth_year": 2000, "updated_at_ms": 10}))
    before = service.state("u5", model)
    assert before.age == profile.model_copy(update={"birth_year": 2000}).age()
    reads: list[str] = []
    real = store.get_user
    real_row = profile_module.profile_row

    def counting(user_id: str) -> User | None:
        reads.append(user_id)
        return real(user_id)

    def counting_row(on: Any, user_id: str) -> tuple[Any, ...] | None:
        reads.append(user_id)
        return real_row(on, user_id)

    monkeypatch.setattr(store, "get_user", counting)
    monkeypatch.setattr(profile_module, "profile_row", counting_row)
    Ingestor(trained).ingest(
        [{"event_id": "u5-like", "user_id": "u5", "video_id": "v1", "type": "like"}]
    )
    after_event = service.state("u5", model)
    assert after_event is not before and len(after_event.acted) > len(before.acted or ())
    assert reads == [] and after_event.age == before.age
    store.update_user(profile.model_copy(update={"birth_year": 1980, "updated_at_ms": 20}))
    assert service.state("u5", model).age == profile.model_copy(update={"birth_year": 1980}).age()
    assert reads == ["u5"]  # the profile changed: read again


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.sampled_from(["skip", "like", "share", "follow", "not_interested", "play"]), max_size=8
    )
)
@example(["play", "skip", "share"])  # the share is about the played video: its weight changes
def test_proposals_reused_after_an_event_are_those_fetched_afresh(
    trained: Deployment, kinds: list[str]
) -> None:
    """A source's proposal is reused while what it reads of the state is unchanged
    (``CandidateSource.inputs``): it must then be exactly what fetching gives."""
    service = FeedService(trained)
    user = f"u{len(kinds) % 4 + 20}"
    model = service.model(trained.home_region(user))
    page = service.feed(user, n=6, record=False, debug=True)
    targets: list[str] = []
    for k, kind in enumerate(kinds):
        if not page.items:
            break  # everything left was marked not interested
        watch = {"watch_ms": 500 if k % 2 else 40_000} if kind == "play" else {}
        event = {"event_id": f"p-{uuid.uuid4()}", "user_id": user, "type": kind, **watch}
        # every third event is about the first video acted on (its weight changes)
        video = targets[0] if k % 3 == 2 else page.items[k % len(page.items)].video_id
        targets.append(video)
        Ingestor(trained).ingest([{**event, "video_id": video}])
        state = service.state(user, model)
        kept = service.pipeline._proposals.get(state, model, service.pipeline.sources)
        for got, source in zip(kept, service.pipeline.sources, strict=True):
            want = source.fetch(model, state)
            assert got.items.tolist() == want.items.tolist() and got.source == want.source
            assert got.scores.tolist() == want.scores.tolist()
            assert [got.explain(r) for r in range(len(got.items))] == [
                want.explain(r) for r in range(len(want.items))
            ]
        page = service.feed(user, n=6, record=False, debug=True)


def test_paging_past_an_order_ranked_ahead_does_not_read_the_profile_again(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order the user used up was ranked from the profile the marker still names,
    so the state built to rank further takes the age from it. The profile is read once
    per process and profile version (the consent and language its first page needs:
    fyp.feed.profile), never again while the marker names it."""
    service = FeedService(trained)
    store = trained.store(trained.home_region("u9"))
    ranked: list[int] = []
    real_rank = FeedService._rank
    monkeypatch.setattr(
        FeedService, "_rank", lambda self, *a, **k: ranked.append(1) or real_rank(self, *a, **k)
    )
    reads: list[str] = []
    real_get_user = store.get_user
    monkeypatch.setattr(store, "get_user", lambda u: reads.append(u) or real_get_user(u))
    from fyp.feed import profile as profile_module

    real_row = profile_module.profile_row
    monkeypatch.setattr(
        profile_module, "profile_row", lambda on, u: reads.append(u) or real_row(on, u)
    )
    cursor = None
    for _ in range(8):  # past the 50 videos ranked at training
        page = service.feed("u9", n=10, cursor=cursor)
        cursor = page.cursor
    assert ranked  # the pipeline ran, without reading the profile again
    assert reads == ["u9"]


def test_a_user_erased_by_another_process_gets_no_page_and_leaves_memory(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another serving host erased u9: this one's route, state and order are stale. The
    next request is a 404 that ranks nothing and writes nothing to the served log (a
    page written and deleted again would still have been written)."""
    from fyp.sovereignty import erasure

    service = FeedService(trained)
    service.feed("u9", n=5)
    service.feed("u9", n=5, record=False, debug=True)  # a state built at the latest marker
    with Deployment.open(trained.config.root) as other, monkeypatch.context() as elsewhere:
        elsewhere.setattr(erasure, "_HOOKS", [])  # another process: no hook of this one runs
        erasure.Eraser(other).erase("u9")
    assert "u9" in service._states._entries
    log = trained.served_log("eu")
    written: list[str] = []
    monkeypatch.setattr(log, "record_served", lambda user, *_: written.append(user))
    with pytest.raises(UnknownUser, match="in any region"):
        service.feed("u9", n=5)
    assert written == []
    assert "u9" not in service._states._entries and "u9" not in service._ahead._slots
    assert "u9" not in service.pipeline._proposals._entries
    assert trained.locate_users(["u9"]) == {}  # the route is forgotten


@pytest.mark.parametrize("behind_ms", [0, 5_000])
def test_videos_served_by_another_process_count_in_the_next_feed(
    trained: Deployment, behind_ms: int
) -> None:
    """``behind_ms``: the other process is on a host whose clock is that far behind."""
    service = FeedService(trained)
    service.feed("u4", n=5)  # the state is cached now
    same_page = encode_cursor(1, 3)
    upcoming = [i.video_id for i in service.feed("u4", n=5, cursor=same_page, record=False).items]
    with Deployment.open(trained.config.root) as other:  # another worker shows two of them
        other.served_log(other.home_region("u4")).record_served(
            "u4", upcoming[:2], time.time_ns() // 1_000_000 - behind_ms
        )
    shown = [i.video_id for i in service.feed("u4", n=5, cursor=same_page).items]
    assert set(upcoming[:2]).isdisjoint(shown)


def test_the_feed_section_of_the_config_sets_the_window_and_the_caches(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = FeedConfig(seen_window_days=2, state_cache_users=0, proposal_cache_users=3)
    monkeypatch.setattr(trained, "config", replace(trained.config, feed=feed))
    service = FeedService(trained)
    assert service.seen_window_ms == 2 * 86_400_000
    assert service._states.max_users == 0 and service.pipeline._proposals.max_users == 3
    assert len(service.feed("u5", n=5).items) == 5  # no caches at all still serves
    assert FeedService(trained, seen_window_ms=1000).seen_window_ms == 1000


@given(page=st.integers(0, 2**40), session=st.integers(0, 2**31))
def test_cursor_is_the_json_it_always_was_and_round_trips(page: int, session: int) -> None:
    import base64
    import json

    from fyp.feed.service import decode_cursor

    as_json = json.dumps({"p": page, "s": session}, separators=(",", ":")).encode()
    assert encode_cursor(page, session) == base64.urlsafe_b64encode(as_json).decode().rstrip("=")
    assert decode_cursor(encode_cursor(page, session)) == (page, session)


@pytest.mark.parametrize(
    "raw",
    [b'{"p":1e999,"s":1}', b'{"p":-1,"s":1}', b'{"p":true,"s":1}', b'{"p":"1","s":1}', b"[1]"],
)
def test_a_crafted_cursor_is_a_client_error(raw: bytes) -> None:
    import base64

    from fyp.feed.service import decode_cursor

    with pytest.raises(InvalidRequest, match="cursor is not a next_cursor"):
        decode_cursor(base64.urlsafe_b64encode(raw).decode().rstrip("="))


def test_warming_up_leaves_the_first_request_nothing_to_load(trained: Deployment) -> None:
    from fyp.moderation.snapshot import snapshot_for

    service = FeedService(trained)
    assert service.warm() == ["us", "eu"]
    for region in ("us", "eu"):
        snapshot = snapshot_for(trained.store(region))
        assert snapshot.seq is not None  # the catalogue is read
        assert set(snapshot._barred) == {False, True}  # and what each kind of viewer may not see


def test_a_serving_process_loads_a_new_artifact_while_the_old_one_serves(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import fyp.feed.live_models as live_models
    from fyp.models.region_model import RegionModel

    monkeypatch.setattr(live_models, "RELOAD_CHECK_S", 0.0)
    service = FeedService(trained, reload_in_background=True)
    assert service.warm() == ["us", "eu"]  # both trained: loaded before any request
    before = service.model("us").manifest.version
    release = threading.Event()
    real_load = RegionModel.load.__func__  # type: ignore[attr-defined]

    def slow_load(cls: type[RegionModel], *args: object) -> RegionModel:
        release.wait(10)
        return real_load(cls, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(RegionModel, "load", classmethod(slow_load))
    new = train_and_publish(
        trained.store("us"), trained.config.region_dir("us"), consent=ConsentPolicy()
    ).version
    # while the new artifact loads, requests keep the loaded model instead of waiting
    assert service.feed("u12", n=5, record=False).model_version == before
    assert service.feed("u12", n=5, record=False).model_version == before
    release.set()
    deadline = time.monotonic() + 10
    while service.model("us").manifest.version != new and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.feed("u12", n=5, record=False).model_version == new


def test_a_failed_background_load_keeps_the_loaded_model(
    trained: Deployment, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    import fyp.feed.live_models as live_models

    monkeypatch.setattr(live_models, "RELOAD_CHECK_S", 0.0)
    service = FeedService(trained, reload_in_background=True)
    before = service.model("us").manifest.version
    us_dir = trained.config.region_dir("us")
    eu_dir = trained.config.region_dir("eu")
    version = (eu_dir / "models" / "current").read_text()
    shutil.copytree(eu_dir / "models" / version, us_dir / "models" / "planted")
    (us_dir / "models" / "current").write_text("planted")  # another region's artifact
    loads: list[str | None] = []
    load = service._live._load

    def counting(region: str, version: str | None) -> Any:
        loads.append(version)
        return load(region, version)

    monkeypatch.setattr(service._live, "_load", counting)
    for _ in range(20):
        assert service.feed("u12", n=5, record=False).model_version == before
        time.sleep(0.01)
    assert service.model("us").manifest.region == "us"
    # tried once, logged once: not every check of the next minute
    assert loads == ["planted"]
    assert sum("planted" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.setattr(live_models, "RETRY_FAILED_LOAD_S", 0.0)
    service.model("us")
    deadline = time.monotonic() + 5
    while len(loads) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loads == ["planted", "planted"]  # retried once the backoff is over


def test_a_user_who_has_seen_every_source_s_quota_still_gets_full_pages(
    trained: Deployment,
) -> None:
    from fyp.feed.candidates import Fresh, Trending

    service = FeedService(trained)
    service.pipeline.sources = [Trending(12), Fresh(3)]  # quotas far below the catalogue
    service.pipeline._proposals.max_users = 0
    shown: list[str] = []
    for _ in range(6):
        page = service.feed("u4", n=10)
        assert len(page.items) == 10  # trending goes deeper instead of running dry
        shown += [i.video_id for i in page.items]
    assert len(set(shown)) == 60
    deep = [i for i in page.items if i.source == "trending"]
    assert deep and {i.reason for i in deep} == {"popular in your region"}


def test_fyp_recommend_prints_the_feed_and_audits_the_read(trained: Deployment) -> None:
    from typer.testing import CliRunner

    from fyp.audit.log import AuditLog
    from fyp.cli.app import app
    from fyp.sovereignty.ledger import user_pseudonym

    root = str(trained.config.root)
    store = trained.store("us")
    for video in list(store.iter_videos()):  # captions, as the store holds them
        store.update_video(video.model_copy(update={"caption": f"标题{video.video_id} #舞蹈"}))
    done = CliRunner().invoke(
        app, ["recommend", root, "u2", "--n", "5", "--reason", "ticket 12"], env={"COLUMNS": "200"}
    )
    assert done.exit_code == 0, done.output
    assert "feed of u2 (us)" in done.output
    rows = [line for line in done.output.splitlines() if line.startswith("│")]
    assert len(rows) == 5
    for row in rows:  # each video's caption beside its id
        video_id = row.split("│")[2].strip()
        assert f"标题{video_id} #舞蹈" in row
    (entry,) = AuditLog(trained.store("us")).entries(action="user_data.read")
    assert entry.actor == "cli:fyp recommend"
    assert entry.subject == user_pseudonym(trained.config, "us", "u2")
    assert entry.details == {"route": "fyp recommend", "reason": "ticket 12"}
    # no reason, no read: an empty one went in the log as "(none given)"
    for reason in ("", "   ", "x" * 501):
        refused = CliRunner().invoke(app, ["recommend", root, "u2", "--reason", reason])
        assert refused.exit_code == 2 and "--reason" in refused.output, refused.output
    assert len(list(AuditLog(trained.store("us")).entries(action="user_data.read"))) == 1
