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
    short = np.argsort(-scores, kind="stable")[: max(n * 8, 50)]
    utility = scores[short] - scores[short].min() + 1e-6
    creators = model.creator[pool.items[short]]
    categories = model.category[pool.items[short]]
    creator_pen = np.ones(len(short))
    category_pen = np.ones(len(short))
    open_ = np.ones(len(short), bool)
    chosen: list[int] = []
    last_creator = -1
    for _ in range(min(n, len(short))):
        u = np.where(open_, utility * creator_pen * category_pen, -1.0)
        if last_creator >= 0:
            u[creators == last_creator] = -1.0
        best = int(np.argmax(u))
        if u[best] < 0:
            break
        chosen.append(int(short[best]))
        open_[best] = False
        last_creator = int(creators[best])
        if last_creator >= 0:
            same = creators == last_creator
            creator_pen[same] = np.maximum(p.floor, creator_pen[same] * p.creator_decay)
        if categories[best] >= 0:
            same = categories == categories[best]
            category_pen[same] = np.maximum(p.floor, category_pen[same] * p.category_decay)
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
    taken = set(chosen)
    fresh = [int(r) for r in np.nonzero(pool.is_from("fresh"))[0] if int(r) not in taken]
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
