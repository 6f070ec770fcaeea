"""Filters: each keeps some candidates and records every one it removes, with why.

The eligibility filter is the moderation hook: it runs when candidates are gathered
and again on the final page just before the response, so a takedown shows in the very
next feed. A hook that raises removes everything it was asked about (fails closed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from fyp.feed.pool import Pool
from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel

# video ids -> {video_id: reason} for the ineligible ones
EligibilityCheck = Callable[[Sequence[str], UserState], dict[str, str]]


class Filter(ABC):
    name: str = "filter"

    @abstractmethod
    def reasons(self, model: RegionModel, state: UserState, items: np.ndarray) -> dict[int, str]:
        """Row number -> reason, for each row of ``items`` (catalogue indices) to remove."""

    def removals(
        self, model: RegionModel, state: UserState, items: np.ndarray
    ) -> tuple[np.ndarray, str | list[str]]:
        """Rows of ``items`` to remove, and why: one reason for all or one per row.
        Filters that remove many at once override this to stay vectorised."""
        drop = self.reasons(model, state, items)
        return np.fromiter(drop, np.int64, len(drop)), list(drop.values())

    def apply(self, model: RegionModel, state: UserState, pool: Pool) -> Pool:
        rows, why = self.removals(model, state, pool.items)
        if len(rows) == 0:
            return pool
        pool.removed.add(self.name, model.video_ids[pool.items[rows]], why)
        mask = np.ones(len(pool), bool)
        mask[rows] = False
        return pool.keep(mask)


class AlreadySeen(Filter):
    """No repeats: anything served to or watched by the user within the seen window."""

    name = "already_seen"

    def reasons(self, model: RegionModel, state: UserState, items: np.ndarray) -> dict[int, str]:
        rows, why = self.removals(model, state, items)
        return dict.fromkeys(rows.tolist(), str(why))

    def removals(
        self, model: RegionModel, state: UserState, items: np.ndarray
    ) -> tuple[np.ndarray, str | list[str]]:
        if not state.seen:
            return np.zeros(0, np.int64), "already seen"
        return np.nonzero(state.seen_mask(model)[items])[0], "already seen"


class NotInterested(Filter):
    name = "not_interested"

    def reasons(self, model: RegionModel, state: UserState, items: np.ndarray) -> dict[int, str]:
        out: dict[int, str] = {}
        checks = (
            (model.category[items], state.not_interested_categories, "category"),
            (model.creator[items], state.not_interested_creators, "creator"),
        )
        for values, blocked, what in checks:
            if blocked:
                for row in np.nonzero(np.isin(values, list(blocked)))[0].tolist():
                    out[row] = f"you marked this {what} not interested"
        if state.blocked_creators:
            hit = np.isin(model.creator[items], list(state.blocked_creators))
            for row in np.nonzero(hit)[0].tolist():
                out[row] = "a block between you and this creator"
        if state.not_interested_videos:
            blocked_items = [
                model.video_index[v] for v in state.not_interested_videos if v in model.video_index
            ]
            for row in np.nonzero(np.isin(items, blocked_items))[0].tolist():
                out[row] = "you marked this video not interested"
        return out


class Eligibility(Filter):
    """Moderation hook; fails closed when the check itself fails.

    A check may also offer ``ineligible_items(model, viewer)``: one bool per item of the
    model's catalogue (moderation's does). The filter then looks candidates up in it and
    asks the check itself only about the ones it removes, for the reasons."""

    name = "eligibility"

    def __init__(self, check: EligibilityCheck) -> None:
        self.check = check

    def reasons(self, model: RegionModel, state: UserState, items: np.ndarray) -> dict[int, str]:
        if self.check is allow_all:
            return {}
        video_ids: list[str] = model.video_ids[items].tolist()
        try:
            verdicts = self.check(video_ids, state)
        except Exception as exc:  # fail closed: an erroring check leaves content ineligible
            return {
                n: f"eligibility check failed: {type(exc).__name__}" for n in range(len(video_ids))
            }
        return {n: verdicts[v] for n, v in enumerate(video_ids) if v in verdicts}

    def removals(
        self, model: RegionModel, state: UserState, items: np.ndarray
    ) -> tuple[np.ndarray, str | list[str]]:
        by_item = getattr(self.check, "ineligible_items", None)
        if by_item is None:
            return super().removals(model, state, items)
        try:
            rows = by_item(model, state)[items].nonzero()[0]
            if len(rows) == 0:
                return rows, []
            video_ids: list[str] = model.video_ids[items[rows]].tolist()
            verdicts = self.check(video_ids, state)
        except Exception as exc:  # fail closed, as above
            return np.arange(len(items)), f"eligibility check failed: {type(exc).__name__}"
        # a verdict read after the lookup may have seen a newer catalogue: what the lookup
        # removed stays removed (a change the other way is caught by the page's final check)
        return rows, [verdicts.get(v, "eligibility changed while checking") for v in video_ids]


class Available(Filter):
    """Still in the region's live catalogue (a video may be withdrawn after training)."""

    name = "region_availability"

    def __init__(self, live: Callable[[Sequence[str]], set[str]]) -> None:
        self.live = live

    def reasons(self, model: RegionModel, state: UserState, items: np.ndarray) -> dict[int, str]:
        video_ids: list[str] = model.video_ids[items].tolist()
        try:
            present = self.live(video_ids)
        except Exception as exc:  # fail closed, like the eligibility hook
            return {
                n: f"availability check failed: {type(exc).__name__}" for n in range(len(video_ids))
            }
        return {
            n: "not available in your region" for n, v in enumerate(video_ids) if v not in present
        }


def allow_all(video_ids: Sequence[str], state: UserState) -> dict[str, str]:
    """The eligibility check used until moderation is configured: nothing is removed."""
    return {}
