"""The serving snapshot of eligibility stays exact, whichever connection writes."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fyp.catalog.models import Video
from fyp.moderation.service import cell
from fyp.moderation.snapshot import PENDING, CatalogSnapshot, barred_reason, snapshot_for
from fyp.regions.deployment import Deployment
from fyp.storage import open_store


def video(vid: str) -> Video:
    return Video(video_id=vid, regions=["us"], duration_ms=5_000, created_at_ms=1, updated_at_ms=1)


def test_changes_from_another_connection_show_in_the_next_lookup(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "d", ["us"]) as d:
        store = d.store("us")
        store.bulk_insert_videos([video("a"), video("b")])
        cell(store).mod.write("a", "approved", True, "r", "auto", "t", 1, {})
        snap = CatalogSnapshot(store)
        assert snap.lookup(["a", "b", "zz"]) == {
            "a": ("approved", True),
            "b": ("pending", False),
            "zz": None,
        }
        # a second connection to the same file stands in for another process
        other = open_store(d.config.resolve_url(d.config.region("us").store), "us")
        try:
            cell(other).mod.write("a", "rejected", False, "takedown", "review", "t", 2, {})
            other.delete_video("b")
            other.bulk_insert_videos([video("c")])
        finally:
            other.close()
        assert snap.lookup(["a", "b", "c"]) == {
            "a": ("rejected", False),
            "b": None,
            "c": ("pending", False),
        }
        assert snap.reloads == 1  # caught up from the change feed, no full reload


def test_a_reader_behind_pruned_changes_reloads_in_full(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "d", ["us"]) as d:
        store = d.store("us")
        behind = CatalogSnapshot(store)
        behind.refresh()
        writer = CatalogSnapshot(store, keep_changes=3)
        writer.refresh()
        for k in range(10):
            store.bulk_insert_videos([video(f"v{k}")])
            writer.refresh()  # prunes as it goes
        assert store.query("SELECT COUNT(*) FROM catalog_changes")[0][0] < 10  # type: ignore[attr-defined]
        assert behind.live_ids([f"v{k}" for k in range(10)]) == {f"v{k}" for k in range(10)}
        assert behind.reloads == 2


def test_one_snapshot_per_store_object(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "d", ["us", "eu"]) as d:
        assert snapshot_for(d.store("us")) is snapshot_for(d.store("us"))
        assert snapshot_for(d.store("us")) is not snapshot_for(d.store("eu"))


def test_held_checks_share_one_version_of_the_catalogue(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "d", ["us"]) as d:
        store = d.store("us")
        store.bulk_insert_videos([video("a")])
        snap = CatalogSnapshot(store)
        with snap.held():
            store.bulk_insert_videos([video("b")])  # lands while a page is checked
            assert snap.live_ids(["a", "b"]) == {"a"}
            with snap.held():  # nested: still the same version
                assert snap.live_ids(["a", "b"]) == {"a"}
        assert snap.live_ids(["a", "b"]) == {"a", "b"}  # the next page sees it


def test_a_failing_refresh_is_not_held(tmp_path: Path) -> None:
    """Each check then refreshes itself, and fails closed on its own."""
    with Deployment.init(tmp_path / "d", ["us"]) as d:
        snap = CatalogSnapshot(d.store("us"))
        fail = [True]

        def head() -> int:
            if fail[0]:
                raise RuntimeError("disk on fire")
            return 0

        snap._head = head  # type: ignore[method-assign]
        with snap.held():
            fail[0] = False
            assert snap.live_ids(["a"]) == set()  # refreshed inside, not skipped
            assert snap.seq == 0


@dataclass(eq=False)
class Catalogue:
    """A model's catalogue, as ``blocked_items`` reads it."""

    video_ids: np.ndarray
    video_index: dict[str, int]


MOD_STATES = ["approved", "age_restricted", "pending", "rejected", "restricted", "blocked"]
CHANGES = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.one_of(
            st.none(),  # the video is deleted
            st.tuples(st.sampled_from(MOD_STATES), st.booleans()),  # (re)moderated
            st.just("upload"),  # (re)inserted, without a moderation row of its own
        ),
    ),
    max_size=8,
)


@settings(max_examples=30, deadline=None)
@given(CHANGES)
def test_the_barred_videos_kept_in_step_match_a_fresh_snapshot(
    changes: list[tuple[str, Any]],
) -> None:
    """Also per item of a model's catalogue (``blocked_items``): "c" is not in it."""
    model = Catalogue(np.asarray(["b", "z", "a"]), {"b": 0, "z": 1, "a": 2})
    with tempfile.TemporaryDirectory() as tmp, Deployment.init(Path(tmp) / "d", ["us"]) as d:
        store = d.store("us")
        store.bulk_insert_videos([video("a"), video("b")])
        kept = CatalogSnapshot(store)
        for adult in (True, False):
            kept.barred(adult)  # worked out now, then only kept in step
            kept.blocked_items(model, adult)
        for k, (vid, change) in enumerate(changes):
            if change is None:
                store.delete_video(vid)
            elif change == "upload":
                if store.get_video(vid) is None:
                    store.bulk_insert_videos([video(vid)])
            else:
                cell(store).mod.write(vid, change[0], change[1], "r", "auto", "t", k, {})
            kept.refresh()
            fresh = CatalogSnapshot(store)
            for adult in (True, False):
                assert kept.barred(adult) == fresh.barred(adult)
                want = {
                    v: reason
                    for v in fresh.live
                    if (reason := barred_reason(fresh.states.get(v, PENDING), adult))
                }
                assert fresh.barred(adult) == want
                blocked = [v not in fresh.live or v in want for v in model.video_ids]
                assert kept.blocked_items(model, adult).tolist() == blocked
                assert fresh.blocked_items(model, adult).tolist() == blocked
