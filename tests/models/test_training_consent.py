"""Training learns nothing from users whose effective consent to model training is false:
the models are exactly those of a store that never held their events, and they still
get a feed (serving reads their own events; training does not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from consent_helpers import (
    BACKENDS,
    OBJECTOR,
    ONLY,
    USERS,
    build,
    live,
    on_backend,
    train,
)

from fyp.catalog.models import UserPatch
from fyp.catalog.service import Catalog
from fyp.feed.service import FeedService
from fyp.models.artifacts import hash_ids
from fyp.sovereignty.lineage import LineageVerifier

LEARNED = (  # every array learned from events (not the lists of users and feeds ahead)
    "popularity",
    "nbr_idx",
    "nbr_sim",
    "item_factors",
    "impressions",
    "likes",
)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    with on_backend(request.param, monkeypatch):
        yield request.param


def test_a_user_who_objects_contributes_nothing(tmp_path: Path, backend: str) -> None:
    d = build(tmp_path / "with", {OBJECTOR: {"model_training": False}})
    without = build(tmp_path / "without", with_objector=False)
    try:
        manifest = train(d)
        train(without)
        _, arrays = live(d)
        _, expected = live(without)
        index = {str(v): n for n, v in enumerate(arrays["video_ids"])}
        assert arrays["popularity"][index[ONLY]] == 0  # only they liked it: no popularity
        assert arrays["likes"][index[ONLY]] == arrays["impressions"][index[ONLY]] == 0
        assert not (arrays["nbr_idx"] == index[ONLY]).any()  # nobody's neighbour through them
        assert OBJECTOR not in {str(u) for u in arrays["user_ids"]}  # no vector
        assert OBJECTOR not in {str(u) for u in arrays["lineage_user_ids"]}
        for name in LEARNED:  # the same models as a store without their events
            np.testing.assert_array_equal(arrays[name], expected[name], err_msg=name)
        heads = sorted(k for k in arrays if k.startswith("ranker_"))
        assert heads and heads == sorted(k for k in expected if k.startswith("ranker_"))
        for name in heads:
            assert str(arrays[name]) == str(expected[name]), name
        consent = manifest.lineage["consent"]
        assert consent["policy"] == {"model_training": True}
        assert consent["excluded_users"] == 1
        assert consent["excluded_sha256"] == hash_ids([OBJECTOR])
        assert manifest.metrics["users_learned"] == len(USERS)
        # they still get a feed: cold-start sources and their own recent events
        page = FeedService(d).feed(OBJECTOR, n=5, record=False)
        assert len(page.items) == 5
        assert all(r.ok for r in LineageVerifier(d).verify())
    finally:
        d.close()
        without.close()


def test_without_an_objection_everyone_is_learned_from(tmp_path: Path, backend: str) -> None:
    """The default policy and empty consents (an import, `fyp eval`): nobody is left out."""
    d = build(tmp_path / "d", {OBJECTOR: {"other_key": False}})
    try:
        manifest = train(d)
        _, arrays = live(d)
        assert OBJECTOR in {str(u) for u in arrays["lineage_user_ids"]}
        assert manifest.lineage["consent"]["excluded_users"] == 0
        assert manifest.lineage["consent"]["excluded_sha256"] == hash_ids([])
        assert manifest.snapshot.user_count == len(USERS) + 1
    finally:
        d.close()


def test_a_region_defaulting_to_false_learns_from_those_who_opted_in(
    tmp_path: Path, backend: str
) -> None:
    opted = {"u1": {"model_training": True}, "u2": {"model_training": True}}
    d = build(tmp_path / "d", opted, policy="model_training = false")
    try:
        manifest = train(d)
        _, arrays = live(d)
        assert {str(u) for u in arrays["lineage_user_ids"]} == {"u1", "u2"}
        assert {str(u) for u in arrays["user_ids"]} <= {"u1", "u2"}
        assert manifest.lineage["consent"]["policy"] == {"model_training": False}
        assert manifest.lineage["consent"]["excluded_users"] == len(USERS) + 1 - 2
        assert all(r.ok for r in LineageVerifier(d).verify())
        # a user opting in later is learned from at the next training
        Catalog(d).update_user("u3", UserPatch(consents={"model_training": True}))
        train(d)
        _, arrays = live(d)
        assert {str(u) for u in arrays["lineage_user_ids"]} == {"u1", "u2", "u3"}
    finally:
        d.close()
