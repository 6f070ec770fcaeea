"""Re-ranking: diversity across creators and categories, and an exploration share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fyp.feed.pool import Pool
from fyp.models.region_model import RegionModel


@dataclass(frozen=True)
class RerankParams:
    creator_decay: float = 0.5
    # Mild: the tag window below already keeps look-alikes apart. On KuaiRec-EAR's
    # train->valid split (scripts/ear_valid_split.py) 0.8 cost 7-20 % of NDCG@10
    # against 1.0 (off); 0.9 is within 1 % of off and still spreads categories.
    category_decay: float = 0.9
    floor: float = 0.2
    # a candidate sharing a tag with one of the last ``tag_window`` videos (shown on this
    # page or watched just before) is multiplied by ``tag_decay``: no run of look-alikes
    tag_window: int = 4
    tag_decay: float = 0.5
    exploration_share: float = 0.05


def shortlist_size(n: int) -> int:
    """How many of the best-scored candidates the greedy re-ranker considers for ``n``
    picks: plenty for a page, capped for long orders ranked ahead (every candidate
    costs on every pick that penalises its creator or category)."""
    return min(max(n * 8, 50), 200)


def diversify(
    model: RegionModel,
    pool: Pool,
    scores: np.ndarray,
    n: int,
    p: RerankParams,
    recent: np.ndarray | None = None,
) -> list[int]:
    """Greedy pick: each repeat of a creator/category multiplies utility by a decay
    (never below ``floor``); sharing a tag with the last few videos (``recent``: the
    user's latest, newest first) costs ``tag_decay``; never two consecutive videos of
    one known creator; ties go to the better-ranked.

    Each step rescores the whole shortlist in a few array operations, penalties kept
    per creator and per category. (A lazy heap that re-scored only what could win was
    slower on real shortlists: the tag window changes every step, so most of the top of
    the heap was popped and pushed back each time; 0.76 against 0.43 ms for 20 picks.)"""
    if len(pool) == 0:
        return []
    short = np.argsort(-scores, kind="stable")[: shortlist_size(n)]
    top = scores[short].astype(np.float64)
    utility = top - top.min() + 1e-6
    items = pool.items[short]
    creators, creator_of = np.unique(model.creator[items], return_inverse=True)
    categories, category_of = np.unique(model.category[items], return_inverse=True)
    tags = model.tag_bits[items]
    creator_pen = np.ones(len(creators))
    category_pen = np.ones(len(categories))
    window: list[int] = (
        [] if recent is None else model.tag_bits[recent[: p.tag_window]][::-1].tolist()
    )
    any_creator = bool(creators[-1] >= 0)  # unique() sorts: -1 (unknown) comes first
    chosen: list[int] = []
    last = -1  # index into ``creators`` of the previous pick's known creator
    for _ in range(min(n, len(short))):
        recent_tags = 0
        for bits in window[-p.tag_window :]:
            recent_tags |= bits
        if any_creator:
            value = utility * creator_pen[creator_of] * category_pen[category_of]
        else:  # every creator penalty is 1: the same floats without that product
            value = utility * category_pen[category_of]
        if recent_tags:
            value[(tags & np.uint64(recent_tags)) != 0] *= p.tag_decay
        if last >= 0:
            value[creator_of == last] = -1.0
        best = int(np.argmax(value))  # the first of equals: the better-ranked
        if value[best] < 0:
            break
        utility[best] = -1.0  # taken: negative whatever the penalties
        chosen.append(int(short[best]))
        window.append(int(tags[best]))
        c, k = creator_of[best], category_of[best]
        last = int(c) if creators[c] >= 0 else -1
        if creators[c] >= 0:
            creator_pen[c] = max(p.floor, creator_pen[c] * p.creator_decay)
        if categories[k] >= 0:
            category_pen[k] = max(p.floor, category_pen[k] * p.category_decay)
    return chosen


def explore(
    model: RegionModel,
    pool: Pool,
    chosen: list[int],
    page: int,
    p: RerankParams,
    rng: np.random.Generator,
) -> list[int]:
    """Give an ``exploration_share`` of each page to fresh videos picked by Thompson
    sampling on Beta(1 + engagements, 1 + impressions - engagements).

    A page of ``page`` videos gets floor(page * share + U) slots (U uniform), so the
    share holds on average even for short pages; slots go in the second half of the
    page: the first videos are the surest bets. ``chosen`` may run past the page
    (backfill); slots are placed in each page-sized window."""
    taken = set(chosen)
    fresh = [int(r) for r in np.nonzero(pool.is_from("fresh"))[0] if int(r) not in taken]
    if p.exploration_share <= 0 or not fresh or page <= 0:
        return chosen
    out = list(chosen)
    start = 0
    while start < len(out) and fresh:
        slots = int(page * p.exploration_share + rng.random())
        if slots:
            items = pool.items[fresh]
            likes = model.likes[items].astype(np.float64)
            shows = np.maximum(model.impressions[items].astype(np.float64), likes)
            draws = rng.beta(1.0 + likes, 1.0 + shows - likes)
            picks = [fresh[i] for i in np.argsort(-draws)[:slots]]
            half = page // 2
            # distinct offsets in [half, page), uniformly (a permutation is far cheaper
            # than Generator.choice without replacement on such small ranges)
            positions = sorted((half + rng.permutation(page - half)[: len(picks)]).tolist())
            for row, offset in zip(picks, positions, strict=False):
                out.insert(min(len(out), start + int(offset)), row)
                fresh.remove(row)
        start += page
    return out


def separate_creators(creators: list[int], order: list[int]) -> list[int]:
    """Move a video away from a same-creator neighbour, dropping it if nothing fits
    (``creators``: each row's creator index, -1 when unknown)."""
    if all(c < 0 for c in creators):
        return list(order)  # no known creators (e.g. KuaiRec): nothing to keep apart
    out: list[int] = []
    pending = list(order)
    while pending:
        last = creators[out[-1]] if out else -1
        for k, row in enumerate(pending):
            c = creators[row]
            if c < 0 or c != last:
                out.append(pending.pop(k))
                break
        else:
            break  # every remaining video is by the previous creator
    return out
