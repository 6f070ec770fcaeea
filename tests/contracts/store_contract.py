"""The behaviour every ``fyp.storage.base.Store`` backend must have.

A backend's test module subclasses :class:`StoreContract` (the class has no ``Test``
prefix, so pytest only collects it through subclasses) and provides:

- a ``store`` fixture: a fresh, migrated store of region ``"us"``;
- :meth:`StoreContract.open_database`: open a store on a named database of the test
  (the same name means the same underlying database, so it can be re-opened);
- :meth:`StoreContract.raw_insert`: write a row with the backend's own driver, bypassing
  the ``Store`` API, so the contract can check the database itself refuses foreign rows;
- :meth:`StoreContract.raw_execute`: run one statement with the raw driver (as someone
  with SQL access would), for the guards the database itself keeps;
- ``integrity_errors``: the driver exceptions a refused raw write raises;
- ``audit_log_edits``: raw statements that would edit the audit log and must be refused
  (the base class's hold for every backend; a backend adds its own, e.g. TRUNCATE).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from fyp.audit.log import AuditLog
from fyp.catalog.models import User, Video
from fyp.errors import (
    AlreadyExists,
    ResidencyViolation,
    ServerError,
    StorageError,
    UnknownUser,
)
from fyp.events.schema import play_labels
from fyp.storage.base import ErasedCounts, EventRow, LabelRow, Store, VideoRow

T0 = 1_700_000_000_000  # a fixed epoch-ms base for event timestamps


def make_user(user_id: str, home_region: str = "us", **fields: Any) -> User:
    data: dict[str, Any] = {
        "consents": {},
        "attributes": {},
        "created_at_ms": T0,
        "updated_at_ms": T0,
        **fields,
    }
    return User(user_id=user_id, home_region=home_region, **data)


def make_video(
    video_id: str, regions: Sequence[str] = ("us",), duration_ms: int = 10_000, **fields: Any
) -> Video:
    data: dict[str, Any] = {"created_at_ms": T0, "updated_at_ms": T0, **fields}
    return Video(video_id=video_id, regions=list(regions), duration_ms=duration_ms, **data)


def make_row(
    event_id: str,
    user_id: str = "u1",
    video_id: str = "v1",
    type: str = "play",
    ts_ms: int = T0,
    watch_ms: int | None = 5_000,
    duration_ms: int = 10_000,
) -> EventRow:
    labels = play_labels(watch_ms, duration_ms)
    return EventRow(
        event_id,
        user_id,
        video_id,
        type,
        ts_ms,
        watch_ms,
        labels.watch_ratio,
        labels.valid_play,
        labels.long_play,
        labels.short_play,
    )


class StoreContract:
    """Contract tests; subclasses provide the ``store`` fixture and the hooks below."""

    integrity_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    audit_log_edits: ClassVar[tuple[str, ...]] = (
        "UPDATE audit_log SET actor = 'someone else' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_log",  # SQLite's TRUNCATE
    )

    # -- hooks ------------------------------------------------------------------
    def open_database(self, name: str, region: str = "us", *, migrate: bool = True) -> Store:
        """Open a store on the test's database ``name`` (the fixture's is ``"main"``)."""
        raise NotImplementedError

    def raw_insert(self, store: Store, table: str, values: dict[str, Any]) -> None:
        """Insert one row into ``table`` of ``store``'s database with the raw driver."""
        raise NotImplementedError

    def raw_execute(self, store: Store, sql: str) -> None:
        """Run ``sql`` on ``store``'s database with the raw driver, in a transaction of
        its own (committed if it succeeds)."""
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------
    @staticmethod
    def seed(store: Store, *user_ids: str, videos: Sequence[str] = ("v1",)) -> None:
        for uid in user_ids:
            store.insert_user(make_user(uid))
        for vid in videos:
            store.insert_video(make_video(vid))

    # -- lifecycle --------------------------------------------------------------
    def test_store_knows_its_region(self, store: Store) -> None:
        assert store.region == "us"
        assert isinstance(store.url, str) and store.url

    def test_fresh_store_is_migrated_and_remigrate_applies_nothing(self, store: Store) -> None:
        version = store.schema_version()
        assert version >= 1
        assert store.migrate() == []
        assert store.migrate() == []
        assert store.schema_version() == version

    def test_migrate_applies_versions_once_and_records_them(self, store: Store) -> None:
        fresh = self.open_database("fresh", migrate=False)
        applied = fresh.migrate()
        assert applied, "a fresh database needs at least one migration"
        assert applied == sorted(set(applied))
        assert fresh.schema_version() == max(applied) == store.schema_version()
        assert fresh.migrate() == []
        # Recorded in the database itself, not in the Python object.
        again = self.open_database("fresh", migrate=False)
        assert again.migrate() == []
        assert again.schema_version() == max(applied)

    def test_unmigrated_store_reports_schema_version_zero(self, store: Store) -> None:
        fresh = self.open_database("unmigrated", migrate=False)
        assert fresh.schema_version() == 0

    def test_reopened_store_keeps_its_data(self, store: Store) -> None:
        self.seed(store, "u1")
        store.insert_events([make_row("e1")])
        again = self.open_database("main")
        assert again.get_user("u1") == store.get_user("u1")
        assert again.get_video("v1") == store.get_video("v1")
        assert again.get_event("e1") == store.get_event("e1")

    def test_opening_with_the_wrong_region_is_refused(self, store: Store) -> None:
        self.seed(store, "u1")
        with pytest.raises(StorageError) as info:
            self.open_database("main", region="eu")
        assert info.value.details.get("store_region") == "us"
        # The refusal changed nothing: the store still works as the us store.
        assert store.get_user("u1") is not None
        assert self.open_database("main", region="us").count_users() == 1

    def test_transaction_rolls_back_everything_on_error(self, store: Store) -> None:
        with pytest.raises(RuntimeError), store.transaction():
            store.insert_user(make_user("u1"))
            with store.transaction():  # nested use joins the outer transaction
                store.insert_user(make_user("u2"))
            raise RuntimeError("boom")
        assert store.get_user("u1") is None
        assert store.get_user("u2") is None
        assert store.count_users() == 0

    def test_nested_transactions_commit_with_the_outer_one(self, store: Store) -> None:
        with store.transaction():
            store.insert_user(make_user("u1"))
            with store.transaction():
                store.insert_user(make_user("u2"))
        assert store.existing_users(["u1", "u2"]) == {"u1", "u2"}

    # -- users ------------------------------------------------------------------
    def test_user_round_trip(self, store: Store) -> None:
        user = make_user(
            "u1",
            birth_year=1990,
            country="US",
            language="en",
            consents={"personalised": True, "ads": False},
            attributes={"nick": "雪 ❄", "tags": ["a", "b"], "n": 3},
        )
        store.insert_user(user)
        assert store.get_user("u1") == user

    def test_get_missing_user_is_none(self, store: Store) -> None:
        assert store.get_user("nobody") is None

    def test_duplicate_user_is_refused_and_original_kept(self, store: Store) -> None:
        store.insert_user(make_user("u1", country="US"))
        with pytest.raises(AlreadyExists):
            store.insert_user(make_user("u1", country="CA"))
        stored = store.get_user("u1")
        assert stored is not None and stored.country == "US"
        assert store.count_users() == 1

    def test_update_user(self, store: Store) -> None:
        store.insert_user(make_user("u1", country="US"))
        changed = make_user("u1", country="CA", birth_year=2001, updated_at_ms=T0 + 5)
        store.update_user(changed)
        assert store.get_user("u1") == changed

    def test_update_missing_user_raises_unknown_user(self, store: Store) -> None:
        with pytest.raises(UnknownUser):
            store.update_user(make_user("nobody"))
        assert store.count_users() == 0

    def test_user_homed_elsewhere_is_refused_and_nothing_written(self, store: Store) -> None:
        with pytest.raises(ResidencyViolation):
            store.insert_user(make_user("eve", home_region="eu"))
        assert store.get_user("eve") is None
        assert store.count_users() == 0

    def test_update_cannot_move_a_user_elsewhere(self, store: Store) -> None:
        store.insert_user(make_user("u1"))
        with pytest.raises(ResidencyViolation):
            store.update_user(make_user("u1", home_region="eu", country="FR"))
        stored = store.get_user("u1")
        assert stored is not None
        assert stored.home_region == "us"
        assert stored.country is None

    def test_existing_count_and_iter_users(self, store: Store) -> None:
        for uid in ("b", "a", "c"):
            store.insert_user(make_user(uid))
        assert store.existing_users(["a", "c", "zz", "a"]) == {"a", "c"}
        assert store.existing_users([]) == set()
        assert store.count_users() == 3
        assert {u.user_id for u in store.iter_users()} == {"a", "b", "c"}

    @pytest.mark.parametrize("page_rows", [1, 3, 7, 100])
    def test_iterators_page_in_key_order_and_survive_writes_between_pages(
        self, store: Store, page_rows: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # pages of page_rows rows (1: every row its own page; 3: 9 rows, an exact multiple)
        monkeypatch.setattr("fyp.storage.sqlite_rows.PAGE_ROWS", page_rows)
        ids = [f"u{i}" for i in range(9)]
        store.bulk_insert_users([make_user(u) for u in reversed(ids)])
        store.bulk_insert_videos([make_video(f"v{i}") for i in range(9)])
        store.insert_label_sets("ds", "test", {u: ["b", "a"] for u in ids})
        assert [u.user_id for u in store.iter_users()] == ids
        assert [v.video_id for v in store.iter_videos()] == [f"v{i}" for i in range(9)]
        labels = [(r.user_id, r.video_id) for r in store.iter_labels("ds", "test")]
        assert labels == [(u, v) for u in ids for v in ("a", "b")]
        # the caller writes between rows (as a rank-ahead or a consent re-apply does):
        # no cursor is held across them, each row comes once, and a row deleted before
        # its page is read does not come (u7 is on a later page than u2 unless one page
        # holds them all)
        seen = []
        for user in store.iter_users():
            seen.append(user.user_id)
            if user.user_id != "u7":  # gone by the time it is read on a one-page run
                store.update_user(user.model_copy(update={"country": "US"}))
            if user.user_id == "u2":
                store.delete_user("u7")
        assert seen == [u for u in ids if u != "u7" or page_rows > 7]
        assert {u.country for u in store.iter_users()} == {"US"}

    def test_existing_users_with_many_ids(self, store: Store) -> None:
        users = [make_user(f"u{i}") for i in range(2_000)]
        assert store.bulk_insert_users(users) == 2_000
        asked = [f"u{i}" for i in range(0, 3_000, 3)]
        assert store.existing_users(asked) == {f"u{i}" for i in range(0, 2_000, 3)}

    def test_delete_user_counts_events_and_labels(self, store: Store) -> None:
        self.seed(store, "u1", "u2")
        store.insert_events([make_row("e1"), make_row("e2"), make_row("e3", user_id="u2")])
        store.insert_labels(
            [
                LabelRow("ds", "test", "u1", "v1"),
                LabelRow("ds", "test", "u1", "v2"),
                LabelRow("ds", "val", "u1", "v1"),
                LabelRow("ds", "test", "u2", "v1"),
            ]
        )
        assert store.delete_user("u1") == ErasedCounts(users=1, events=2, labels=3)
        assert store.get_user("u1") is None
        assert store.user_events("u1") == []
        assert store.get_event("e1") is None
        assert store.count_labels() == 1
        # The other user is untouched.
        assert store.get_user("u2") is not None
        assert [e.event_id for e in store.user_events("u2")] == ["e3"]
        assert store.delete_user("u1") == ErasedCounts(users=0, events=0, labels=0)

    def test_bulk_insert_users_is_idempotent(self, store: Store) -> None:
        users = [make_user(f"u{i}") for i in range(5)]
        assert store.bulk_insert_users(users[:3]) == 3
        assert store.bulk_insert_users(users) == 2
        assert store.bulk_insert_users(users) == 0
        assert store.count_users() == 5

    def test_bulk_insert_users_refuses_foreign_users_and_writes_nothing(self, store: Store) -> None:
        users = [make_user("u1"), make_user("eve", home_region="eu"), make_user("u2")]
        with pytest.raises(ResidencyViolation):
            store.bulk_insert_users(users)
        assert store.count_users() == 0

    # -- videos -----------------------------------------------------------------
    def test_video_round_trip(self, store: Store) -> None:
        video = make_video(
            "v1",
            regions=["us", "eu"],
            creator_id="c1",
            caption="naïve café 搞笑",
            hashtags=["搞笑", "fun"],
            categories=["comedy"],
            tags=["t"],
            attributes={"fps": 30},
        )
        store.insert_video(video)
        assert store.get_video("v1") == video

    def test_get_missing_video_is_none(self, store: Store) -> None:
        assert store.get_video("nope") is None

    def test_duplicate_video_is_refused(self, store: Store) -> None:
        store.insert_video(make_video("v1", caption="first"))
        with pytest.raises(AlreadyExists):
            store.insert_video(make_video("v1", caption="second"))
        stored = store.get_video("v1")
        assert stored is not None and stored.caption == "first"

    def test_video_not_published_here_is_refused(self, store: Store) -> None:
        with pytest.raises(ResidencyViolation):
            store.insert_video(make_video("v1", regions=["eu"]))
        assert store.get_video("v1") is None
        assert store.count_videos() == 0
        with pytest.raises(ResidencyViolation):
            store.bulk_insert_videos([make_video("v2"), make_video("v3", regions=["eu"])])
        assert store.count_videos() == 0

    def test_update_video(self, store: Store) -> None:
        store.insert_video(make_video("v1"))
        changed = make_video("v1", caption="new", duration_ms=20_000, updated_at_ms=T0 + 1)
        store.update_video(changed)
        assert store.get_video("v1") == changed
        assert store.video_durations(["v1"]) == {"v1": 20_000}

    def test_update_video_refuses_a_video_not_published_here(self, store: Store) -> None:
        store.insert_video(make_video("v1"))
        with pytest.raises(ResidencyViolation):
            store.update_video(make_video("v1", regions=["eu"], caption="moved"))
        stored = store.get_video("v1")
        assert stored is not None and stored.caption == ""

    def test_delete_video(self, store: Store) -> None:
        store.insert_video(make_video("v1"))
        assert store.delete_video("v1") is True
        assert store.get_video("v1") is None
        assert store.delete_video("v1") is False

    def test_video_durations_omit_absent_ids(self, store: Store) -> None:
        store.insert_video(make_video("v1", duration_ms=1_234))
        store.insert_video(make_video("v2", duration_ms=60_000))
        assert store.video_durations(["v1", "v2", "nope", "v1"]) == {"v1": 1_234, "v2": 60_000}
        assert store.video_durations([]) == {}

    def test_video_durations_with_many_ids(self, store: Store) -> None:
        videos = [make_video(f"v{i}", duration_ms=1_000 + i) for i in range(1_500)]
        assert store.bulk_insert_videos(videos) == 1_500
        asked = [f"v{i}" for i in range(0, 2_000, 2)]
        assert store.video_durations(asked) == {f"v{i}": 1_000 + i for i in range(0, 1_500, 2)}

    def test_count_and_iter_videos(self, store: Store) -> None:
        for vid in ("b", "a"):
            store.insert_video(make_video(vid))
        assert store.count_videos() == 2
        assert {v.video_id for v in store.iter_videos()} == {"a", "b"}

    def test_get_videos_reads_many_at_once_and_omits_absent_ones(self, store: Store) -> None:
        videos = [
            make_video(f"v{i}", caption=f"第{i}个 #舞蹈", hashtags=["舞蹈"]) for i in range(3)
        ]
        for v in videos:
            store.insert_video(v)
        got = store.get_videos(["v2", "v0", "ghost", "v2"])
        assert got == {"v2": videos[2], "v0": videos[0]}
        assert store.get_videos([]) == {}
        many = [make_video(f"m{i}") for i in range(1_200)]  # past SQLite's chunk of ids
        store.bulk_insert_videos(many)
        assert len(store.get_videos(v.video_id for v in many)) == 1_200

    def test_bulk_insert_videos_is_idempotent(self, store: Store) -> None:
        videos = [make_video(f"v{i}") for i in range(4)]
        assert store.bulk_insert_videos(videos[:1]) == 1
        assert store.bulk_insert_videos(videos) == 3
        assert store.bulk_insert_videos(videos) == 0
        assert store.count_videos() == 4

    def test_bulk_insert_takes_encoded_video_rows(self, store: Store) -> None:
        """What an import sends: rows encoded once for every region, read back as Videos."""
        video = make_video(
            "v1",
            regions=["eu", "us"],
            caption="晚饭后",
            hashtags=["#健身"],
            attributes={"k": [1, 2.5, None], "t": "é"},
        )
        assert store.bulk_insert_videos([VideoRow.of(video), make_video("v2")]) == 2
        assert store.get_video("v1") == video
        assert store.bulk_insert_videos([VideoRow.of(video)]) == 0
        with pytest.raises(ResidencyViolation):
            store.bulk_insert_videos([VideoRow.of(make_video("v3", regions=["eu"]))])
        assert store.count_videos() == 2

    # -- events -----------------------------------------------------------------
    def test_insert_events_reports_written_flags(self, store: Store) -> None:
        self.seed(store, "u1")
        assert store.insert_events([make_row("e1"), make_row("e2")]) == [True, True]
        assert store.insert_events([make_row("e2"), make_row("e3"), make_row("e1")]) == [
            False,
            True,
            False,
        ]
        assert store.count_events() == 3
        assert store.existing_event_ids(["e1", "e3", "e9"]) == {"e1", "e3"}

    def test_duplicates_inside_a_batch_are_stored_once(self, store: Store) -> None:
        self.seed(store, "u1")
        flags = store.insert_events(
            [make_row("e1", ts_ms=T0), make_row("e1", ts_ms=T0 + 1), make_row("e2")]
        )
        assert flags == [True, False, True]
        assert store.count_events() == 2
        stored = store.get_event("e1")
        assert stored is not None and stored.ts_ms == T0  # the first copy wins

    def test_a_stored_duplicate_is_not_overwritten(self, store: Store) -> None:
        self.seed(store, "u1")
        store.insert_events([make_row("e1", watch_ms=1_000)])
        assert store.insert_events([make_row("e1", watch_ms=9_000)]) == [False]
        stored = store.get_event("e1")
        assert stored is not None and stored.watch_ms == 1_000

    def test_events_for_an_unknown_user_are_refused_and_nothing_written(self, store: Store) -> None:
        self.seed(store, "u1")
        with pytest.raises(UnknownUser):
            store.insert_events([make_row("e1"), make_row("e2", user_id="ghost")])
        assert store.count_events() == 0
        assert store.get_event("e1") is None
        # The refused batch left the ids free.
        assert store.insert_events([make_row("e1")]) == [True]

    def test_get_event_round_trip_with_labels(self, store: Store) -> None:
        self.seed(store, "u1")
        row = make_row("e1", watch_ms=18_000, duration_ms=10_000, ts_ms=T0 + 42)
        store.insert_events([row])
        stored = store.get_event("e1")
        assert stored is not None
        assert stored.seq >= 1
        assert (stored.event_id, stored.user_id, stored.video_id, stored.type) == row[:4]
        assert (stored.ts_ms, stored.watch_ms) == (row.ts_ms, row.watch_ms)
        assert stored.watch_ratio == pytest.approx(1.8)
        assert (stored.valid_play, stored.long_play, stored.short_play) == (True, True, False)
        like = make_row("e2", type="like", watch_ms=None)
        store.insert_events([like])
        stored_like = store.get_event("e2")
        assert stored_like is not None
        assert stored_like.watch_ms is None and stored_like.watch_ratio is None
        assert not (stored_like.valid_play or stored_like.long_play or stored_like.short_play)
        assert store.get_event("nope") is None

    def test_user_version_changes_with_everything_about_the_user(self, store: Store) -> None:
        self.seed(store, "u1", "u2")
        marks = [store.user_version("u1")]
        if marks[0] is None:
            pytest.skip("this backend does not offer user versions")
        store.insert_events([make_row("e1")])
        marks.append(store.user_version("u1"))
        store.record_served("u1", ["v1"], T0)
        marks.append(store.user_version("u1"))
        store.record_served("u1", ["v1"], T0 + 5)  # the same video again, later
        marks.append(store.user_version("u1"))
        store.record_served("u1", ["v1"], T0 + 5)  # and again in the same millisecond
        marks.append(store.user_version("u1"))
        # the served counter: one up per record, the rest of the marker unchanged
        assert marks[-1] == (*marks[-2][:2], marks[-2][2] + 1)  # type: ignore[index]
        user = store.get_user("u1")
        assert user is not None
        store.update_user(user.model_copy(update={"updated_at_ms": user.updated_at_ms + 1}))
        marks.append(store.user_version("u1"))
        assert len(set(marks)) == len(marks)
        before = store.user_version("u1")
        store.insert_events([make_row("x1", user_id="u2")])  # someone else's event
        store.record_served("u2", ["v1"], T0)
        assert store.user_version("u1") == before
        assert store.user_version("nobody") is None

    def test_a_store_whose_served_log_is_elsewhere_refuses_its_own(self, store: Store) -> None:
        """Once the region's served log is kept elsewhere (a Redis server), a page
        recorded in the store, or a read of the store's pages alone, would go past the
        log the feed reads: both are refused, loudly; the pages left from before stay
        readable to that log (``left_here``) and still age out."""
        self.seed(store, "u1")
        store.record_served("u1", ["before"], T0)
        store.flush_served()
        store.hand_served_log_to("redis://redis-us.internal:6379/0")
        for attempt in (
            lambda: store.record_served("u1", ["after"], T0 + 1),
            lambda: store.served_since("u1", 0),
        ):
            with pytest.raises(ServerError, match=r"Deployment.served_log\('us'\)") as info:
                attempt()
            assert "redis://redis-us.internal:6379/0" in info.value.message
            assert not isinstance(info.value, StorageError)  # a bug, not "retry later"
        assert store.served_since("u1", 0, left_here=True) == ["before"]
        assert store.forget_served_before(T0 + 1) == 1

    def test_events_expire_oldest_first_in_bounded_chunks(self, store: Store) -> None:
        self.seed(store, "u1", "u2")
        # times out of seq order, as clients' timestamps come
        times = [T0 + 50, T0 + 10, T0 + 90, T0 + 30, T0 + 70, T0 + 20]
        store.insert_events(
            [make_row(f"e{n}", f"u{n % 2 + 1}", ts_ms=t) for n, t in enumerate(times)]
        )
        assert store.count_events_before(T0 + 60) == 4
        assert store.expire_events_before(T0 + 60, limit=3) == 3  # the 3 oldest
        assert {e.event_id for e in store.iter_events()} == {"e0", "e2", "e4"}
        assert store.expire_events_before(T0 + 60, limit=3) == 1
        assert store.expire_events_before(T0 + 60, limit=3) == 0
        assert store.count_events_before(T0 + 60) == 0
        assert sorted(e.ts_ms for e in store.iter_events()) == [T0 + 70, T0 + 90]

    def test_the_served_log_forgets_what_is_older_than_asked(self, store: Store) -> None:
        self.seed(store, "u1", "u2")
        store.record_served("u1", ["old", "again"], T0)
        store.record_served("u2", ["old"], T0)
        store.record_served("u1", ["again", "new"], T0 + 100)
        before = store.user_version("u2")
        assert store.forget_served_before(T0 + 50) == 2  # a page of each user
        assert sorted(store.served_since("u1", 0)) == ["again", "new"]
        assert store.served_since("u2", 0) == []
        assert store.forget_served_before(T0 + 50) == 0
        # u2's last page is gone, and their counter did not go back with it
        assert store.user_version("u2") == before
        counter = store.record_served("u2", ["later"], T0 + 200)
        assert before is None or counter == before[2] + 1
        with pytest.raises(UnknownUser):
            store.record_served("ghost", ["v"], T0)

    def test_user_events_newest_first(self, store: Store) -> None:
        self.seed(store, "u1", "u2")
        for i in range(5):
            store.insert_events([make_row(f"e{i}", ts_ms=T0 + i)])
            store.insert_events([make_row(f"x{i}", user_id="u2", ts_ms=T0 + i)])
        events = store.user_events("u1")
        assert [e.event_id for e in events] == ["e4", "e3", "e2", "e1", "e0"]
        assert [e.seq for e in events] == sorted((e.seq for e in events), reverse=True)
        assert [e.event_id for e in store.user_events("u1", limit=2)] == ["e4", "e3"]
        assert store.user_events("nobody") == []

    def test_user_not_interested_reads_past_the_latest_events(self, store: Store) -> None:
        self.seed(store, "u1", "u2")
        kinds = ["not_interested", "play", "not_interested", "like", "not_interested"]
        for i, kind in enumerate(kinds):
            store.insert_events([make_row(f"e{i}", type=kind, ts_ms=T0 + i)])
        store.insert_events([make_row("x", user_id="u2", type="not_interested", ts_ms=T0)])
        seqs = {e.event_id: e.seq for e in store.user_events("u1", 10)}
        found = store.user_not_interested("u1", seqs["e4"], T0)
        assert [e.event_id for e in found] == ["e2", "e0"]  # older than e4, newest first
        assert [e.event_id for e in store.user_not_interested("u1", seqs["e4"], T0 + 1)] == ["e2"]
        assert [e.event_id for e in store.user_not_interested("u1", 10**9, T0, limit=1)] == ["e4"]
        assert store.user_not_interested("nobody", 10**9, 0) == []

    def test_iter_events_in_seq_order_with_paging(self, store: Store) -> None:
        self.seed(store, "u1", "u2")
        ids = [f"e{i:02d}" for i in range(25)]
        for i, eid in enumerate(ids):
            store.insert_events([make_row(eid, user_id="u1" if i % 2 else "u2")])
        events = list(store.iter_events(batch=4))
        assert [e.event_id for e in events] == ids
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert store.max_event_seq() == seqs[-1]
        assert store.count_events() == 25
        # Resuming after a seq yields exactly the rest, whatever the page size.
        for cut in (0, 1, 7, 24):
            rest = list(store.iter_events(after_seq=seqs[cut], batch=3))
            assert [e.event_id for e in rest] == ids[cut + 1 :]
        assert list(store.iter_events(after_seq=seqs[-1])) == []

    def test_empty_store_event_counters(self, store: Store) -> None:
        assert store.count_events() == 0
        assert store.max_event_seq() == 0
        assert list(store.iter_events()) == []

    def test_bulk_insert_events_is_idempotent(self, store: Store) -> None:
        self.seed(store, "u1")
        rows = [make_row(f"e{i}") for i in range(6)]
        assert store.bulk_insert_events(rows[:2]) == 2
        assert store.bulk_insert_events(rows) == 4
        assert store.bulk_insert_events(rows) == 0
        assert store.bulk_insert_events([rows[0], make_row("e9"), make_row("e9")]) == 1
        assert store.count_events() == 7
        assert store.insert_events([make_row("e9")]) == [False]

    def test_bulk_insert_events_for_an_unknown_user_writes_nothing(self, store: Store) -> None:
        self.seed(store, "u1")
        with pytest.raises(UnknownUser):
            store.bulk_insert_events([make_row("e1"), make_row("e2", user_id="ghost")])
        assert store.count_events() == 0

    def test_concurrent_inserts_store_each_event_once(self, store: Store) -> None:
        self.seed(store, "u1")
        ids = [f"e{i}" for i in range(60)]
        written: list[list[bool]] = []
        errors: list[BaseException] = []

        def worker(offset: int) -> None:
            rotated = ids[offset:] + ids[:offset]  # every thread tries every id
            try:
                for start in range(0, len(rotated), 6):
                    chunk = rotated[start : start + 6]
                    written.append(store.insert_events([make_row(e) for e in chunk]))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k * 7,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert {e.event_id for e in store.iter_events()} == set(ids)
        assert store.count_events() == len(ids)
        assert sum(flag for flags in written for flag in flags) == len(ids)

    # -- held-out labels ----------------------------------------------------------
    def test_labels_insert_iter_count(self, store: Store) -> None:
        self.seed(store, "u1", "u2")
        rows = [
            LabelRow("kuairec", "test", "u2", "v1"),
            LabelRow("kuairec", "test", "u1", "v2"),
            LabelRow("kuairec", "val", "u1", "v1"),
            LabelRow("other", "test", "u1", "v1"),
        ]
        assert store.insert_labels(rows) == 4
        assert store.insert_labels(rows) == 0
        assert store.insert_labels([*rows, LabelRow("other", "test", "u2", "v3")]) == 1
        assert set(store.iter_labels("kuairec", "test")) == {rows[0], rows[1]}
        assert list(store.iter_labels("kuairec", "val")) == [rows[2]]
        assert list(store.iter_labels("nope", "test")) == []
        assert store.count_labels() == 5
        assert store.count_labels("kuairec") == 3
        assert store.count_labels("other") == 2
        assert store.count_labels("nope") == 0

    def test_a_label_set_grows_across_calls_and_counts_each_video_once(self, store: Store) -> None:
        self.seed(store, "u1")
        first = [LabelRow("ds", "test", "u1", v) for v in ("v1", "v2", "v1")]
        assert store.insert_labels(first) == 2
        assert store.insert_labels([LabelRow("ds", "test", "u1", v) for v in ("v2", "v3")]) == 1
        assert [r.video_id for r in store.iter_labels("ds", "test")] == ["v1", "v2", "v3"]
        assert store.count_labels("ds") == 3
        assert store.delete_user("u1").labels == 3
        assert store.count_labels() == 0

    def test_label_sets_count_new_labels_and_refuse_an_unknown_user_whole(
        self, store: Store
    ) -> None:
        self.seed(store, "u1", "u2")
        assert store.insert_label_sets("ds", "test", {"u1": ["a", "b", "a"], "u2": ["c"]}) == 3
        assert store.insert_label_sets("ds", "test", {"u1": ["b", "d"]}) == 1
        assert store.insert_label_sets("ds", "val", {"u1": ["a"]}) == 1
        with pytest.raises(UnknownUser):
            store.insert_label_sets("ds", "test", {"u2": ["e"], "ghost": ["x"]})
        assert store.count_labels("ds") == 5
        assert [(r.user_id, r.video_id) for r in store.iter_labels("ds", "test")] == [
            ("u1", "a"),
            ("u1", "b"),
            ("u1", "d"),
            ("u2", "c"),
        ]

    def test_labels_for_an_unknown_user_are_refused(self, store: Store) -> None:
        self.seed(store, "u1")
        with pytest.raises(UnknownUser):
            store.insert_labels(
                [LabelRow("ds", "test", "u1", "v1"), LabelRow("ds", "test", "ghost", "v1")]
            )
        assert store.count_labels() == 0

    # -- the database itself refuses foreign rows -----------------------------------
    def test_raw_insert_hook_writes_to_the_store_database(self, store: Store) -> None:
        self.raw_insert(
            store,
            "users",
            {"user_id": "raw", "home_region": "us", "created_at_ms": T0, "updated_at_ms": T0},
        )
        assert store.existing_users(["raw"]) == {"raw"}

    def test_database_refuses_a_foreign_user(self, store: Store) -> None:
        assert self.integrity_errors, "the backend must name its integrity errors"
        with pytest.raises(self.integrity_errors):
            self.raw_insert(
                store,
                "users",
                {"user_id": "eve", "home_region": "eu", "created_at_ms": T0, "updated_at_ms": T0},
            )
        assert store.count_users() == 0

    def test_database_refuses_a_foreign_video(self, store: Store) -> None:
        with pytest.raises(self.integrity_errors):
            self.raw_insert(
                store,
                "videos",
                {
                    "video_id": "v1",
                    "region": "eu",
                    "duration_ms": 1_000,
                    "regions": '["eu"]',
                    "created_at_ms": T0,
                    "updated_at_ms": T0,
                },
            )
        assert store.count_videos() == 0

    def test_database_refuses_a_foreign_event(self, store: Store) -> None:
        self.seed(store, "u1")
        with pytest.raises(self.integrity_errors):
            self.raw_insert(
                store,
                "events",
                {
                    "event_id": "e1",
                    "region": "eu",
                    "user_id": "u1",
                    "video_id": "v1",
                    "type": "like",
                    "ts_ms": T0,
                },
            )
        assert store.count_events() == 0

    def test_database_refuses_a_foreign_label(self, store: Store) -> None:
        self.seed(store, "u1")
        with pytest.raises(self.integrity_errors):
            self.raw_insert(
                store,
                "labels",
                {
                    "dataset": "ds",
                    "split": "test",
                    "region": "eu",
                    "user_id": "u1",
                    "video_ids": '["v"]',
                },
            )
        assert store.count_labels() == 0

    # -- the database itself keeps the audit log append-only -------------------------
    def test_the_audit_log_refuses_every_edit(self, store: Store) -> None:
        log = AuditLog(store)
        entries = [log.append("reviewer", "verdict", f"v{k}", {"k": k}) for k in range(3)]
        head = f"{entries[-1].seq}:{entries[-1].hash}"
        for sql in self.audit_log_edits:
            with pytest.raises(Exception, match="append-only"):
                self.raw_execute(store, sql)
        assert [e.hash for e in log.entries()] == [e.hash for e in entries]
        report = log.verify(expect_head=head)
        assert report.ok and report.entries == 3 and report.triggers
