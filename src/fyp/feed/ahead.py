"""Serving from orders ranked ahead (``fyp.models.ahead``): the next page of a user whose
profile and events are unchanged since their order was ranked is its next videos not
served since, after the same final checks as any page.

Orders come from two places: the artifact (``fyp train`` ranks every user of the region
with the new model, ``rank_region``), and the serving process itself, which ranks
``[feed] rank_ahead`` videos whenever it runs the pipeline and keeps the order for the
next pages (``AheadCache``). What was served from an order is tracked from the served
counter it was ranked at and kept in step with what this process records; when the
counter says another process served the user meanwhile (``Store.user_version``), what
was served since the order was ranked is read from the served log once (a handful of
pages).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fyp.feed.candidates import Candidates
from fyp.feed.pipeline import RankedPage
from fyp.feed.reasons import Reason
from fyp.models.ahead import RANKED_PERSONALISED, RankedAhead, to_arrays
from fyp.models.artifacts import Manifest
from fyp.models.region_model import RegionModel
from fyp.storage.base import Store
from fyp.storage.served_logs import CLOCK_SLACK_MS

if TYPE_CHECKING:
    from fyp.regions.deployment import Deployment


@dataclass(slots=True)
class _Slot:
    """A few objects around arrays: a serving process keeps thousands, and each full
    pass of the garbage collector visits all they hold (docs/benchmarks.md)."""

    model: RegionModel
    order: RankedAhead | None  # the user's latest order (ranked here or by training)
    served_seq: int = -1  # the served counter ``served`` is in step with
    served_for: RankedAhead | None = None  # the order ``served`` was read for
    # per position of ``served_for``: served since it was ranked
    served: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


class AheadCache:
    """Per user: the order this process ranked last, and what was served since an order
    was ranked (bounded, least recently used evicted)."""

    def __init__(self, max_users: int) -> None:
        self.max_users = max_users
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._lock = threading.Lock()

    def order(
        self,
        user_id: str,
        model: RegionModel,
        marker: tuple[int, ...],
        stored: bool = True,
        personalised: bool = True,
    ) -> RankedAhead | None:
        """The freshest order for the user's current state: this process's, else the
        artifact's (unless not ``stored``); None when neither was ranked from the state
        the user is in, or ranked otherwise than ``personalised`` says (an order ranked
        on the user's profile is never served once their consent is off, nor the
        non-profiled one once it is on)."""
        with self._lock:
            slot = self._slots.get(user_id)
            if slot is not None and slot.model is model:
                self._slots.move_to_end(user_id)
                order = slot.order
                if (
                    order is not None
                    and order.fresh_for(marker)
                    and order.personalised is personalised
                ):
                    return order
        if not stored or model.ahead is None:
            return None
        ranked = model.ahead.get(user_id)
        if ranked is None or not (ranked.fresh_for(marker) and ranked.personalised is personalised):
            return None
        self.keep(user_id, model, ranked)  # the same object next time: in step with it
        return ranked

    def clear(self) -> None:
        """Forget every user's order (what ranked them changed)."""
        with self._lock:
            self._slots.clear()

    def keep(self, user_id: str, model: RegionModel, order: RankedAhead) -> None:
        """Make ``order`` the user's latest. Nothing of an order was served at the counter
        it was ranked at, so what is served from it is tracked from there on without
        reading the served log (``served_since``) unless another process serves too."""
        with self._lock:
            slot = self._slots.get(user_id)
            if slot is None or slot.model is not model or slot.served_for is not order:
                served = np.zeros(len(order.items), bool)
                slot = self._slots[user_id] = _Slot(model, order, order.served_seq, order, served)
            slot.order = order
            self._touch(user_id)

    def served_since(
        self,
        user_id: str,
        model: RegionModel,
        order: RankedAhead,
        served_seq: int,
        read: Callable[[int], Sequence[str]],
    ) -> np.ndarray:
        """Which positions of ``order`` were served to the user since it was ranked
        (bools). ``read(ms)`` reads the served log from a time; it runs only when the
        served counter moved since the order was ranked and this process is not in step
        with it."""
        with self._lock:
            slot = self._slots.get(user_id)
            if (
                slot is not None
                and slot.model is model
                and slot.served_for is order
                and slot.served_seq == served_seq
            ):
                return slot.served
        served = np.zeros(len(order.items), bool)
        if served_seq != order.served_seq:
            index = model.video_index
            ids = read(order.ranked_at_ms - CLOCK_SLACK_MS)
            served = np.isin(order.items, [index[v] for v in ids if v in index])
        with self._lock:
            slot = self._slots.get(user_id)
            if slot is None or slot.model is not model:
                slot = self._slots[user_id] = _Slot(model, None)
            slot.served_for, slot.served_seq, slot.served = order, served_seq, served
            self._touch(user_id)
        return served

    def _touch(self, user_id: str) -> None:
        """Mark the user's slot most recently used and evict beyond the bound (caller
        holds the lock)."""
        self._slots.move_to_end(user_id)
        while len(self._slots) > self.max_users:
            self._slots.popitem(last=False)

    def recorded(
        self, user_id: str, order: RankedAhead, before: int, after: int | None, rows: np.ndarray
    ) -> None:
        """This process recorded positions ``rows`` of ``order`` as served; counter
        ``before`` -> ``after``. In step only if the counter went up by exactly one (no
        other process served)."""
        with self._lock:
            slot = self._slots.get(user_id)
            if slot is None or slot.served_for is not order:
                return
            if slot.served_seq == before and after == before + 1:
                slot.served[rows] = True
                slot.served_seq = after
            else:
                slot.served_for = None

    def drop(self, user_id: str) -> None:
        with self._lock:
            self._slots.pop(user_id, None)


def as_order(
    ranked: RankedPage,
    marker: tuple[int, ...],
    ranked_at_ms: int,
    age: int | None,
    personalised: bool = True,
) -> RankedAhead:
    """A ranked page as an order: keeps only its rows' items and how to explain them
    (the pool's candidates are shared with the proposal cache)."""
    pool = ranked.pool
    idx = np.asarray(ranked.order, np.int64)
    return RankedAhead(
        profile_ms=marker[0],
        event_seq=marker[1],
        served_seq=marker[2],
        ranked_at_ms=ranked_at_ms,
        age=age,
        items=pool.items[idx],
        scores=ranked.scores[idx].astype(np.float32),
        explains=_FromPool(pool.candidates, pool.origin[idx], pool.position[idx]),
        personalised=personalised,
    )


class _FromPool:
    """A ranked page's sources and reasons: its rows' candidates, explained on demand."""

    __slots__ = ("_candidates", "_origin", "_position")

    def __init__(
        self, candidates: Sequence[Candidates], origin: np.ndarray, position: np.ndarray
    ) -> None:
        self._candidates, self._origin, self._position = candidates, origin, position

    def sources(self, rows: np.ndarray) -> list[str]:
        candidates = self._candidates
        return [candidates[o].source for o in self._origin[rows].tolist()]

    def reasons(self, rows: np.ndarray) -> list[Reason]:
        candidates = self._candidates
        pairs = zip(self._origin[rows].tolist(), self._position[rows].tolist(), strict=True)
        return [candidates[o].explain(p) for o, p in pairs]


def next_rows(served: np.ndarray) -> np.ndarray:
    """The positions of an order not served since, in order (``served``: per position,
    from ``AheadCache.served_since``)."""
    rows: np.ndarray = (~served).nonzero()[0]
    return rows


def rank_region(
    deployment: Deployment, region: str, manifest: Manifest, arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Rank every user of ``region`` with the model in ``arrays`` (not yet live) through
    the feed pipeline, and return the ``ahead_*`` arrays to ship in its artifact."""
    from fyp.experiments.arms import RANKED_FOR, RANKED_WITH, region_record, settings_record
    from fyp.feed.service import FeedService
    from fyp.regions.consent import PERSONALISED_FEED, consent_policy, effective

    config = deployment.config
    record = region_record(config, region)
    if record is not None:  # written with the manifest, after this
        manifest.lineage[RANKED_FOR] = record
    # the settings ranked with: orders ranked under others are not served
    manifest.lineage[RANKED_WITH] = settings_record(config.ranking, config.feed)
    length = deployment.config.feed.rank_ahead
    if length <= 0:
        return {}
    consent = consent_policy(deployment.config, region)
    # the kind of order a user who recorded nothing got: a changed default is a reason
    # to rank again (fyp.models.schedule.retrain_reason)
    manifest.lineage[RANKED_PERSONALISED] = consent.default(PERSONALISED_FEED)
    model = RegionModel.from_arrays(manifest, arrays)
    service = FeedService(deployment, cache_users=0)
    store: Store = deployment.store(region)
    served_log = deployment.served_log(region)
    orders: dict[str, RankedAhead] = {}
    for n, user in enumerate(store.iter_users()):
        ranked_at = time.time_ns() // 1_000_000
        marker = served_log.user_version(user.user_id)
        if marker is None:
            continue
        # consent off: the non-profiled order (no arm: they are in no experiment)
        personal = effective(user.consents, consent, PERSONALISED_FEED)
        arm = service.arm(user.user_id, region) if personal else None  # ranked as it ranks
        state = service.state(user.user_id, model)
        rng = np.random.default_rng([n, len(state.seen)])
        pipeline = None if arm is None else arm.pipeline
        orders[user.user_id] = service.rank_ahead(
            model, state, marker, ranked_at, rng, pipeline, personalised=personal
        )
    return to_arrays(orders)


def ranks_ahead(
    deployment: Deployment, region: str
) -> Callable[[Manifest, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """``rank_region`` for ``train_and_publish(augment=...)``."""
    return lambda manifest, arrays: rank_region(deployment, region, manifest, arrays)
