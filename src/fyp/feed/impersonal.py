"""The feed that is not based on profiling, for users whose ``personalised_feed`` consent
is off (``fyp.regions.consent``; the option the EU Digital Services Act, Art. 38, asks
very large platforms to offer beside a profiled feed).

It is the same pipeline with other parts, so the filters, the final checks, the
diversity rules and exploration stay exactly as they are for everyone:

- **sources**: the region's most engaged-with videos (``trending``) and recent videos
  with few impressions (``fresh``), the same for every user of the region. Not
  co-engagement, the embedding, category interests, nor the creators the user follows:
  a follow is an explicit choice, not an inference, but a feed that mixes followed
  creators in ranks by the user's own history, so the strict reading leaves it out (the
  app's Following tab is the place for it: :mod:`fyp.feed.following_tab`, which is not
  ranked and the same whatever the consent);
- **score**: the region's popularity prior alone (``RegionalPopularity``), no user or
  cross feature; exploration draws from the region's engagement counts;
- **what it still reads of the user** (``impersonal_state``): what they were shown or
  acted on within the seen window (no repeats), what they marked not interested
  (videos, creators, categories), and their home region and age (availability and
  moderation's age gates). Their positives, affinities, follows, learned vector and
  latest videos are not handed to the pipeline at all, so no part of it can use them;
- **reasons** say so: ``not_personalised`` and ``new_not_personalised``.

Two users who have seen the same videos and said no to the same things get the same
page for the same cursor, whatever else they did.
"""

from __future__ import annotations

import numpy as np

from fyp.feed.candidates import CandidateSource, Fresh, Trending
from fyp.feed.pipeline import FeedPipeline
from fyp.feed.pool import Pool
from fyp.feed.scoring import Scorer
from fyp.feed.settings import RerankParams, SourceQuotas
from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel

PERSONAL_SOURCES = frozenset({"co_engagement", "embedding", "following", "category_interest"})
"""Sources that read the user's profile or history: never on a non-profiled page."""
REASONS = frozenset({"not_personalised", "new_not_personalised"})
"""The reason codes of a non-profiled page."""


class PopularHere(Trending):
    """The region's most engaged-with videos, the same for everyone."""

    reason = "not_personalised"


class NewHere(Fresh):
    """Recent videos with few impressions, the same for everyone."""

    reason = "new_not_personalised"


class RegionalPopularity(Scorer):
    """The region's popularity prior (the value model's first term): no user feature."""

    name = "regional_popularity"

    def score(self, model: RegionModel, state: UserState, pool: Pool) -> np.ndarray:
        scores: np.ndarray = np.log(model.popularity[pool.items].astype(np.float64) + 1e-6)
        return scores


def impersonal_sources(quotas: SourceQuotas | None = None) -> list[CandidateSource]:
    """The quotas of the profiled feed's ``trending`` and ``fresh`` (``[feed.sources]``;
    one at 0 is left out here too)."""
    q = quotas or SourceQuotas()
    made = [PopularHere(q.trending), NewHere(q.fresh, q.fresh_max_impressions)]
    return [s for s in made if s.quota > 0]


def impersonal_pipeline(rerank: RerankParams, quotas: SourceQuotas | None = None) -> FeedPipeline:
    """No proposal is kept per user: both sources are worked out once per model. The
    refill past the quotas says ``not_personalised`` even with ``trending`` off."""
    return FeedPipeline(
        sources=impersonal_sources(quotas),
        scorer=RegionalPopularity(),
        rerank=rerank,
        proposal_cache_users=0,
        refill_reason=PopularHere.reason,
    )


def impersonal_state(state: UserState) -> UserState:
    """What the non-profiled feed may know of the user (see the module's docstring)."""
    return UserState(
        user_id=state.user_id,
        region=state.region,
        age=state.age,
        positives=np.zeros(0, np.int64),
        positive_weights=np.zeros(0, np.float32),
        seen=state.seen,
        served=state.served,
        acted=state.acted,
        not_interested_videos=state.not_interested_videos,
        not_interested_creators=state.not_interested_creators,
        not_interested_categories=state.not_interested_categories,
        blocked_creators=state.blocked_creators,
        served_mask=state.served_mask,
    )
