"""Re-ranking: diversity across creators and categories, and an exploration share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fyp.feed.pool import Pool
from fyp.models.region_model import RegionModel


@dataclass(frozen=True)
class RerankParams:
    creator_decay: float = 0.5
    category_decay: float = 0.8
    floor: float = 0.2
    exploration_share: float = 0.1


def diversify(
    model: RegionModel, pool: Pool, scores: np.ndarray, n: int, p: RerankParams
) -> list[int]:
    """Greedy pick: each repeat of a creator/category multiplies utility by a decay
    (never below ``floor``); never two consecutive videos of one known creator."""
    if len(pool) == 0:
        return []
    utility = scores - scores.min() + 1e-6
    creators = model.creator[pool.items]
    categories = model.category[pool.items]
    creator_count: dict[int, int] = {}
    category_count: dict[int, int] = {}
    chosen: list[int] = []
    available = np.ones(len(pool), bool)
    last_creator = -1
    shortlist = np.argsort(-utility, kind="stable")[: max(n * 8, 50)]
    for _ in range(min(n, len(pool))):
        best, best_u = -1, -1.0
        for row in shortlist:
            if not available[row]:
                continue
            c, g = int(creators[row]), int(categories[row])
            if c >= 0 and c == last_creator:
                continue
            u = utility[row]
            u *= max(p.floor, p.creator_decay ** creator_count.get(c, 0)) if c >= 0 else 1.0
            u *= max(p.floor, p.category_decay ** category_count.get(g, 0)) if g >= 0 else 1.0
            if u > best_u:
                best, best_u = int(row), u
        if best < 0:
            break
        chosen.append(best)
        available[best] = False
        c, g = int(creators[best]), int(categories[best])
        last_creator = c
        if c >= 0:
            creator_count[c] = creator_count.get(c, 0) + 1
        if g >= 0:
            category_count[g] = category_count.get(g, 0) + 1
    return chosen


def explore(
    model: RegionModel,
    pool: Pool,
    chosen: list[int],
    n: int,
    p: RerankParams,
    rng: np.random.Generator,
) -> list[int]:
    """Give ``exploration_share`` of the page to fresh videos picked by Thompson sampling
    on Beta(1 + engagements, 1 + impressions - engagements)."""
    slots = round(n * p.exploration_share)
    fresh = [r for r in range(len(pool)) if pool.source[r] == "fresh" and r not in set(chosen)]
    if slots == 0 or not fresh:
        return chosen
    items = pool.items[fresh]
    likes = model.likes[items].astype(np.float64)
    shows = np.maximum(model.impressions[items].astype(np.float64), likes)
    draws = rng.beta(1.0 + likes, 1.0 + shows - likes)
    picks = [fresh[i] for i in np.argsort(-draws)[:slots]]
    out = list(chosen)
    for k, row in enumerate(picks):
        position = min(len(out), (k + 1) * max(1, n // (slots + 1)))
        out.insert(position, row)
    return out[:n]


def separate_creators(model: RegionModel, pool: Pool, order: list[int]) -> list[int]:
    """Move a video away from a same-creator neighbour, dropping it if nothing fits."""
    creators = model.creator[pool.items]
    out: list[int] = []
    pending = list(order)
    while pending:
        last = int(creators[out[-1]]) if out else -1
        for k, row in enumerate(pending):
            c = int(creators[row])
            if c < 0 or c != last:
                out.append(pending.pop(k))
                break
        else:
            break  # every remaining video is by the previous creator
    return out
