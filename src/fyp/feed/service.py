"""The feed of a deployment: route to the home region, build state, run the pipeline.

Models are loaded per region and swapped without downtime (:mod:`fyp.feed.live_models`).
The final page is checked again against the live catalogue and the eligibility hook
just before it is returned, so a withdrawal or takedown shows in the very next feed.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import weakref
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from fyp.config import DeploymentConfig, RankingConfig
from fyp.errors import ValidationFailed, invalid_cursor
from fyp.experiments.arms import (
    RANKED_FOR,
    Arm,
    build_arms,
    orders_fit,
    settings_fit,
    settings_record,
)
from fyp.experiments.exposures import ExposureLog
from fyp.feed.ahead import AheadCache, as_order, next_rows
from fyp.feed.filters import Available, Eligibility, EligibilityCheck
from fyp.feed.guest import GuestCursor, GuestPage, guest_state
from fyp.feed.impersonal import impersonal_pipeline, impersonal_state
from fyp.feed.live_models import LiveModels
from fyp.feed.page import FeedItem, FeedPage
from fyp.feed.pipeline import FeedPipeline, RankedPage, configured_pipeline
from fyp.feed.pool import Pool, RemovedLog
from fyp.feed.profile import ProfileCache
from fyp.feed.rerank import separate_creators
from fyp.feed.scoring import RankerScorer, Scorer, ValueScorer
from fyp.feed.state import CREATOR_ACTIONS, ServedMask, StateCache, UserState, build_state
from fyp.models.ahead import RankedAhead
from fyp.models.region_model import RegionModel
from fyp.moderation.snapshot import snapshot_for
from fyp.regions.deployment import Deployment
from fyp.storage.base import Store
from fyp.storage.served_logs import ServedLog

RECENT_EVENTS = 300
MAX_PAGE = 100
DEFAULT_PAGE = 10
_NONE, _NONE_F = np.zeros(0, np.int64), np.zeros(0, np.float32)


def encode_cursor(page: int, session: int) -> str:
    # what json.dumps({"p": page, "s": session}, separators=(",", ":")) writes, at a
    # fraction of its cost on every page
    raw = f'{{"p":{int(page)},"s":{int(session)}}}'.encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[int, int]:
    if not cursor:
        return 0, int(time.time_ns() % 2**31)
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        page, session = raw["p"], raw["s"]
        # only what encode_cursor writes: ints in range (1e999 overflowed int() into a 500)
        if type(page) is not int or type(session) is not int:
            raise TypeError
        if not (0 <= page < 2**53 and 0 <= session < 2**53):
            raise ValueError
        return page, session
    except (ValueError, KeyError, TypeError, binascii.Error, OverflowError):
        raise invalid_cursor() from None


def check_page_size(n: int) -> None:
    """A page holds 1 to MAX_PAGE videos (422 otherwise)."""
    if not 1 <= n <= MAX_PAGE:
        raise ValidationFailed(f"n must be between 1 and {MAX_PAGE}, got {n}", field="n")


def scorer_for(ranking: RankingConfig) -> Scorer:
    """The scorer ``[ranking]`` asks for."""
    if ranking.scorer == "multi_objective":
        return RankerScorer(dict(ranking.objective_weights))
    return ValueScorer()


class FeedService:
    def __init__(
        self,
        deployment: Deployment,
        pipeline: FeedPipeline | None = None,
        eligibility: EligibilityCheck | None = None,
        seen_window_ms: int | None = None,
        cache_users: int | None = None,
        reload_in_background: bool = False,
        as_of_ms: int | None = None,
    ) -> None:
        """``eligibility`` defaults to the deployment's moderation state: nothing reaches
        a feed unchecked. Pass ``allow_all`` only in tests of the ranking itself.
        ``cache_users`` overrides every per-user cache size of ``[feed]`` (0: none).
        ``reload_in_background``: see :class:`fyp.feed.live_models.LiveModels`.
        ``as_of_ms`` (an evaluation on a copy cut in the past, :mod:`fyp.evaluation.temporal`):
        the time the seen window and "not interested" are measured from, instead of the
        clock; serving leaves it None."""
        if eligibility is None:
            from fyp.moderation import ModerationEligibility

            eligibility = ModerationEligibility(deployment)
        self.deployment = deployment
        feed = deployment.config.feed  # [feed]: the seen window and the cache sizes
        states = feed.state_cache_users if cache_users is None else cache_users
        proposals = feed.proposal_cache_users if cache_users is None else cache_users
        self.pipeline = pipeline or configured_pipeline(
            feed, scorer_for(deployment.config.ranking), proposals
        )
        self.eligibility = Eligibility(eligibility)
        # a hook that also removes what left the live catalogue (moderation's does, from
        # the same snapshot) makes a separate availability check on the page redundant
        self._final_checks_live = bool(getattr(eligibility, "checks_availability", False))
        self.seen_window_ms = feed.seen_window_ms if seen_window_ms is None else seen_window_ms
        self.as_of_ms = as_of_ms
        self.ahead_length = feed.rank_ahead
        self._live = LiveModels(deployment, reload_in_background)
        self._universe: tuple[Sequence[str], RegionModel, np.ndarray] | None = None
        self._states = StateCache(max_users=states)
        self._profiles = ProfileCache(deployment.config, max_users=states)
        # users whose personalised_feed consent is off (fyp.feed.impersonal)
        self._impersonal = impersonal_pipeline(self.pipeline.rerank, feed.sources)
        # per model: whether its stored orders were ranked with this deployment's
        # [ranking], [feed.sources] and [feed.rerank] (else none of them is served)
        self._settings_fit: weakref.WeakKeyDictionary[RegionModel, bool] = (
            weakref.WeakKeyDictionary()
        )
        self._ahead = AheadCache(max_users=proposals)  # orders share the proposals' arrays
        # [experiments]: a pipeline per variant, sharing the proposal cache, and who was
        # served under one (fyp.experiments.exposures); None without
        self._arms = build_arms(deployment.config, self.pipeline, scorer_for)
        self._exposures = ExposureLog(deployment)  # used only while an experiment runs
        # what is kept of a user, each dropped with them (an erasure; _forget)
        self._drops: list[Callable[[str], None]] = [self._states.drop, self._ahead.drop]
        self._drops += [self.pipeline.forget, self._profiles.drop, self._exposures.forget]
        _drop_on_erasure(self._drops)

    def prepare(self, config: DeploymentConfig) -> Callable[[], None]:
        """What swaps in the live parts of ``config`` (:mod:`fyp.serving.reload`): the
        experiments' arms and the regions' consent defaults. The orders this process
        ranked are dropped when the experiments change (one may have been ranked for an
        arm the user is no longer in); the artifact's are checked per user anyway
        (``orders_fit``, and ``personalised`` against the effective consent)."""
        arms = build_arms(config, self.pipeline, scorer_for)
        profiles = self._profiles.prepare(config)
        experiments_changed = config.experiments != self.deployment.config.experiments

        def swap() -> None:
            self._arms = arms
            profiles()
            if experiments_changed:
                self._ahead.clear()

        return swap

    def model(self, region: str) -> RegionModel:
        """The region's live model (:mod:`fyp.feed.live_models`)."""
        return self._live.get(region)

    def warm(self) -> list[str]:
        """Load every trained region's model and catalogue snapshot now (a serving
        process, before its first request); returns the regions with a model."""
        return self._live.warm()

    def _universe_items(self, model: RegionModel, universe: Sequence[str]) -> np.ndarray:
        """Catalogue indices of a fixed evaluation set, resolved once per set and model."""
        cached = self._universe
        if cached is not None and cached[0] is universe and cached[1] is model:
            return cached[2]
        items = np.asarray([model.video_index[v] for v in universe if v in model.video_index])
        self._universe = (universe, model, items)
        return items

    def state(self, user_id: str, model: RegionModel) -> UserState:
        """The user's state, rebuilt whenever the store says anything about them changed.

        One indexed lookup (``Store.user_version``) per request keeps read-your-writes
        exact, whichever process wrote: the profile, the latest event and the served log
        are all part of the marker."""
        region = self.deployment.home_region(user_id)
        store, served = self.deployment.store(region), self.deployment.served_log(region)
        return self._state(user_id, region, store, served, model, served.user_version(user_id))

    def _state(
        self,
        user_id: str,
        region: str,
        store: Store,
        served_log: ServedLog,
        model: RegionModel,
        marker: tuple[int, ...] | None,
        used_up: RankedAhead | None = None,
    ) -> UserState:
        """``used_up``: the order the user just paged through, if any (its age was read
        from the profile the marker names)."""
        age: int | None = None
        age_known = False
        served: Iterable[str] | None = None
        mask: ServedMask | None = None
        if used_up is not None and marker is not None and used_up.profile_ms == marker[0]:
            age, age_known = used_up.age, True
        if marker is None:
            self._states.drop(user_id)  # gone (erased), or a backend without versions
        else:
            hit = self._states.get(user_id, model, marker)
            if hit is not None:
                return hit
            previous = self._states.previous(user_id)
            if previous is not None:  # a new event: keep what has not changed since
                built_at, kept = previous
                if built_at[0] == marker[0]:  # the same profile
                    age, age_known = kept.age, True
                if built_at[2:] == marker[2:]:  # the same served log
                    served, mask = kept.served, kept.served_mask
        if not age_known:
            age = self._profiles.get(user_id, region, store, marker).age
        events = store.user_events(user_id, RECENT_EVENTS)
        now = self.as_of_ms
        since = (time.time_ns() // 1_000_000 if now is None else now) - self.seen_window_ms
        if served is None:
            served = served_log.served_since(user_id, since)
        # "not interested" holds for the seen window, not only while among the latest
        earlier = (
            store.user_not_interested(user_id, events[-1].seq, since)
            if len(events) == RECENT_EVENTS
            else []
        )
        outside = {
            e.video_id: None
            for e in (*events, *earlier)
            if e.type in CREATOR_ACTIONS and e.video_id not in model.video_index
        }
        codes: dict[str, tuple[int, int]] = {}
        for video_id in outside:  # rare: a video uploaded since training, acted on
            video = store.get_video(video_id)
            if video is not None:
                codes[video_id] = model.codes_of(video.creator_id, video.categories)
        codes_of = model.creator_index.get
        followed = [codes_of(c, -1) for c in store.followed_creators(user_id)]
        blocked = [codes_of(c, -1) for c in store.blocked_creators(user_id)]
        state = build_state(
            user_id,
            region,
            age,
            events,
            served,
            model,
            served_mask=mask,
            outside=codes,
            followed=followed,
            earlier=earlier,
            blocked=blocked,
        )
        if marker is not None:
            self._states.put(user_id, model, marker, state)
        return state

    def rank_ahead(
        self,
        model: RegionModel,
        state: UserState,
        marker: tuple[int, ...],
        ranked_at_ms: int,
        rng: np.random.Generator,
        pipeline: FeedPipeline | None = None,
        page: int = DEFAULT_PAGE,
        personalised: bool = True,
    ) -> RankedAhead:
        """Run the pipeline (``pipeline``: an experiment arm's, else the service's; not
        ``personalised``: the non-profiled one on what it may read of ``state``) for
        ``[feed] rank_ahead`` videos (exploration slots placed per ``page``) and keep the
        order: the next pages come from it while the user's profile and events stay as
        they are in ``marker``."""
        if not personalised:
            pipeline, state = self._impersonal, impersonal_state(state)
        ranked = self._rank_long(
            pipeline or self.pipeline, model, state, rng, page, self.ahead_length
        )
        return as_order(ranked, marker, ranked_at_ms, state.age, personalised)

    def _ranked_as_configured(self, model: RegionModel) -> bool:
        """Whether ``model``'s stored orders were ranked with the deployment's settings
        (``fyp.experiments.arms.settings_fit``; worked out once per model)."""
        fit = self._settings_fit.get(model)
        if fit is None:
            config = self.deployment.config
            fit = settings_fit(model.manifest.lineage, settings_record(config.ranking, config.feed))
            self._settings_fit[model] = fit
        return fit

    def arm(self, user_id: str, region: str) -> Arm | None:
        """The user's arm of the experiment running in ``region`` (their home), if any."""
        return None if self._arms is None else self._arms.of(user_id, region)

    def _rank_long(
        self,
        pipeline: FeedPipeline,
        model: RegionModel,
        state: UserState,
        rng: np.random.Generator,
        page: int,
        length: int,
    ) -> RankedPage:
        backfill = max(length - page, max(2, page // 4))
        return pipeline.run(
            model, state, page, rng, extra_filters=[self.eligibility], backfill=backfill
        )

    def feed(
        self,
        user_id: str,
        n: int = DEFAULT_PAGE,
        cursor: str | None = None,
        record: bool = True,
        universe: Sequence[str] | None = None,
        debug: bool = False,
    ) -> FeedPage:
        """The user's next page. ``universe`` restricts it to a fixed set (evaluation);
        ``debug`` runs the whole pipeline so the page lists what each filter removed."""
        check_page_size(n)
        started_ms = time.time_ns() // 1_000_000
        page_no, session = decode_cursor(cursor)
        region = self.deployment.home_region(user_id)
        store = self.deployment.store(region)
        served_log = self.deployment.served_log(region)  # the store's own, or Redis
        marker = served_log.user_version(user_id)
        if marker is None and not store.existing_users([user_id]):
            # the cached route is stale: moved or erased by another process since
            self._forget(user_id)
            region = self.deployment.relocate(user_id)  # UnknownUser if erased
            store = self.deployment.store(region)
            served_log = self.deployment.served_log(region)
            marker = served_log.user_version(user_id)
        model = self.model(region)
        profile = self._profiles.get(user_id, region, store, marker)
        personal = profile.personalised  # else no arm, no exposure: the non-profiled feed
        arm = None
        if self._arms is not None and personal:
            arm = self._arms.of(user_id, region, started_ms)
        pipeline = self._impersonal if not personal else arm.pipeline if arm else self.pipeline
        use_orders = universe is None and not debug and self.ahead_length > n and marker is not None
        fresh: RankedAhead | None = None
        rows = _NONE
        if use_orders and marker is not None:
            ranked_for = model.manifest.lineage.get(RANKED_FOR)  # an experiment's, if any
            stored = (ranked_for is None and arm is None) or orders_fit(ranked_for, user_id, arm)
            stored = stored and self._ranked_as_configured(model)
            fresh, rows = self._from_order(user_id, model, served_log, marker, n, stored, personal)
        removed, state = RemovedLog(), None
        if fresh is not None and len(rows) >= n:
            order = fresh
        else:
            state = self._state(user_id, region, store, served_log, model, marker, fresh)
            rng = np.random.default_rng([session, page_no, len(state.seen)])
            # a fresh order used up: the user pages on without events, so rank further
            paged_through = fresh is not None
            shown = state if personal else impersonal_state(state)  # what ranking may read
            ranked = self._rank(pipeline, model, shown, rng, n, universe, use_orders, paged_through)
            removed = ranked.removed
            order = as_order(ranked, marker or (0, 0, 0), started_ms, state.age, personal)
            rows = np.arange(len(order.items))
            if use_orders:
                self._ahead.keep(user_id, model, order)
        viewer = state or UserState(user_id, region, order.age, _NONE, _NONE_F)
        want = n + max(2, n // 4)  # the final checks' batch: the page and its spares
        page, rows = self._final_page(model, store, viewer, order, rows, n, want, removed)
        if record and page:
            if arm is not None:  # first: a dict lookup
                self._exposures.expose(region, arm.experiment, arm.variant, user_id, started_ms)
            self._record(user_id, served_log, marker, order if use_orders else None, page, rows)
        return FeedPage(
            user_id=user_id,
            region=region,
            model_version=model.manifest.version,
            items=page,
            cursor=encode_cursor(page_no + 1, session),
            removed_log=removed,
            experiment=arm,
            personalised=personal,
            profile_lang=profile.lang,
        )

    def guest_feed(
        self, region: str, n: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> GuestPage:
        """The next page of the region's feed for a viewer nobody knows (:mod:`fyp.feed.guest`):
        the non-profiled pipeline on what the cursor says was shown, checked for a
        viewer of unknown age; nothing is read of or written for the viewer."""
        check_page_size(n)
        store = self.deployment.store(region)  # UnknownRegion: 404
        after = GuestCursor.decode(cursor, region)
        model = self.model(region)
        viewer = guest_state(region, model, after)
        rng = np.random.default_rng([after.session, after.page])
        ranked = self._impersonal.run(model, viewer, n, rng, extra_filters=[self.eligibility])
        order = as_order(ranked, (0, 0, 0), time.time_ns() // 1_000_000, None, False)
        rows, want = np.arange(len(order.items)), n + max(2, n // 4)
        page, _ = self._final_page(model, store, viewer, order, rows, n, want, ranked.removed)
        shown = after.then([item.video_id for item in page])
        return GuestPage(region, model.manifest.version, page, shown.encode(region))

    def _forget(self, user_id: str) -> None:
        """Drop the route and everything cached of a user the store no longer holds: no
        page is ranked or recorded for them, and the next request is routed afresh."""
        self.deployment.forget_route(user_id)
        for drop in self._drops:
            drop(user_id)

    def _from_order(
        self,
        user_id: str,
        model: RegionModel,
        served_log: ServedLog,
        marker: tuple[int, ...],
        n: int,
        stored: bool = True,
        personalised: bool = True,
    ) -> tuple[RankedAhead | None, np.ndarray]:
        """The user's fresh order and its positions not served since (the caller ranks
        again when there is no fresh order or fewer than ``n`` are left in it).
        ``stored``: the artifact's order may be the one (not for a variant's user);
        ``personalised``: only an order ranked so (the artifact's are) may be served."""
        order = self._ahead.order(user_id, model, marker, stored, personalised)
        if order is None:
            return None, _NONE
        served = self._ahead.served_since(
            user_id, model, order, marker[2], lambda ms: served_log.served_since(user_id, ms)
        )
        return order, next_rows(served)

    def _rank(
        self,
        pipeline: FeedPipeline,
        model: RegionModel,
        state: UserState,
        rng: np.random.Generator,
        n: int,
        universe: Sequence[str] | None,
        ahead: bool,
        paged_through: bool = False,
    ) -> RankedPage:
        if ahead:
            # one page ahead, not rank_ahead: a user's events (plays, skips) between
            # pages usually make an order stale before its second page is asked for;
            # a user who paged through a whole order without one gets rank_ahead
            length = self.ahead_length if paged_through else min(self.ahead_length, 2 * n)
            return self._rank_long(pipeline, model, state, rng, n, length)
        items = None if universe is None else self._universe_items(model, universe)
        return pipeline.run(model, state, n, rng, universe=items, extra_filters=[self.eligibility])

    def _record(
        self,
        user_id: str,
        served_log: ServedLog,
        marker: tuple[int, ...] | None,
        order: RankedAhead | None,
        page: list[FeedItem],
        rows: np.ndarray,
    ) -> None:
        """Write the page (``rows`` of ``order``) to the served log and keep the caches
        in step with it."""
        shown = [p.video_id for p in page]
        now = time.time_ns() // 1_000_000
        counter = served_log.record_served(user_id, shown, now)
        if marker is None:
            return
        # profile and events as read at the start: if another process changed them
        # meanwhile, the next request's marker differs and rebuilds
        self._states.served(user_id, (*marker[:2], counter), shown)
        if order is not None:
            self._ahead.recorded(user_id, order, marker[2], counter, rows)

    def _final_page(
        self,
        model: RegionModel,
        store: Store,
        viewer: UserState,
        order: RankedAhead,
        rows: np.ndarray,
        n: int,
        want: int,
        removed: RemovedLog,
    ) -> tuple[list[FeedItem], np.ndarray]:
        """Check candidates for the page (``rows`` of ``order``, ``want`` at a time, until
        ``n`` pass) against the live catalogue and the eligibility hook once more, keep
        creators apart, and explain the first ``n``. Returns them and their positions in
        ``order``."""
        catalog = snapshot_for(store)
        live = None if self._final_checks_live else Available(catalog.live_ids)
        batches: list[np.ndarray] = []  # positions in ``order`` that passed
        found = 0
        with catalog.held():  # both checks, every batch: one version of the catalogue
            for start in range(0, len(rows), want):
                positions = rows[start : start + want]
                pool = Pool(
                    items=order.items[positions],
                    origin=np.zeros(len(positions), np.int64),
                    position=positions,
                    candidates=[],
                    removed=removed,
                )
                if live is not None:
                    pool = live.apply(model, viewer, pool)
                checked = self.eligibility.apply(model, viewer, pool)
                batches.append(checked.position)
                found += len(checked)
                if found >= want:  # the page and its spares: creators can be kept apart
                    break
        kept = batches[0] if len(batches) == 1 else np.concatenate([_NONE, *batches])
        if model.knows_creators:
            creators: list[int] = model.creator[order.items[kept]].tolist()
            kept = kept[separate_creators(creators, list(range(len(kept))))]
        chosen = kept[:n]
        ids: list[str] = model.video_ids[order.items[chosen]].tolist()
        scores: list[float] = order.scores[chosen].tolist()
        sources, reasons = order.explains.sources(chosen), order.explains.reasons(chosen)
        return [
            FeedItem(video_id, position, round(score, 6), source, reason)
            for position, (video_id, score, source, reason) in enumerate(
                zip(ids, scores, sources, reasons, strict=True)
            )
        ], chosen


def _drop_on_erasure(drops: list[Callable[[str], None]]) -> None:
    """An erased (or moved) user's state, order, proposals, profile and known exposure
    leave memory with the erasure, not at eviction (``drops``: bound methods)."""
    from fyp.sovereignty.erasure import add_erase_hook

    refs = [weakref.WeakMethod(m) for m in drops]
    remove: list[Callable[[], None]] = []

    def hook(_region: str, user_id: str) -> None:
        if refs[0]() is None:
            remove[0]()  # the service is gone: unhook
        for ref in refs:
            drop = ref()
            if drop is not None:
                drop(user_id)

    remove.append(add_erase_hook(hook))
