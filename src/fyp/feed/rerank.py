"""Re-ranking: diversity across creators and categories, and an exploration share."""

from __future__ import annotations

import heapq
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
    one known creator.

    Lazy greedy: penalties only ever shrink ``utility x creator x category``, so a heap
    of those products, refreshed when popped, finds each step's best without scoring
    the whole shortlist again (same picks, ties to the better-ranked, as a full scan)."""
    if len(pool) == 0:
        return []
    short = np.argsort(-scores, kind="stable")[: shortlist_size(n)]
    top = scores[short]
    utility: list[float] = (top - top.min() + 1e-6).tolist()
    items = pool.items[short]
    creators: list[int] = model.creator[items].tolist()
    categories: list[int] = model.category[items].tolist()
    tags: list[int] = model.tag_bits[items].tolist()
    size = len(utility)
    creator_pen = [1.0] * size
    category_pen = [1.0] * size
    by_creator: dict[int, list[int]] = {}
    by_category: dict[int, list[int]] = {}
    for i in range(size):
        by_creator.setdefault(creators[i], []).append(i)
        by_category.setdefault(categories[i], []).append(i)
    window: list[int] = (
        [] if recent is None else model.tag_bits[recent[: p.tag_window]][::-1].tolist()
    )
    heap = [(-u, i) for i, u in enumerate(utility)]
    heapq.heapify(heap)
    chosen: list[int] = []
    last_creator = -1
    for _ in range(min(n, size)):
        recent_tags = 0
        for bits in window[-p.tag_window :]:
            recent_tags |= bits
        best, best_val = -1, -1.0
        held: list[int] = []
        while heap:
            neg, i = heap[0]
            if -neg < best_val or (-neg == best_val and i > best):
                break  # nothing left can beat (or tie ahead of) the best so far
            heapq.heappop(heap)
            bound = utility[i] * creator_pen[i] * category_pen[i]
            if bound < -neg:
                heapq.heappush(heap, (-bound, i))  # a penalty landed since: re-file it
                continue
            held.append(i)
            if last_creator >= 0 and creators[i] == last_creator:
                continue
            value = bound * (p.tag_decay if tags[i] & recent_tags else 1.0)
            if value > best_val or (value == best_val and i < best):
                best, best_val = i, value
        for i in held:
            if i != best:
                heapq.heappush(heap, (-(utility[i] * creator_pen[i] * category_pen[i]), i))
        if best < 0:
            break
        chosen.append(int(short[best]))
        window.append(tags[best])
        last_creator = creators[best]
        if last_creator >= 0:
            for j in by_creator[last_creator]:
                creator_pen[j] = max(p.floor, creator_pen[j] * p.creator_decay)
        if categories[best] >= 0:
            for j in by_category[categories[best]]:
                category_pen[j] = max(p.floor, category_pen[j] * p.category_decay)
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


def separate_creators(model: RegionModel, pool: Pool, order: list[int]) -> list[int]:
    """Move a video away from a same-creator neighbour, dropping it if nothing fits."""
    creators: list[int] = model.creator[pool.items].tolist()
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
