"""The candidate pool: merged candidates with their per-source features and reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fyp.feed.candidates import Candidates


@dataclass
class Removed:
    video_id: str
    stage: str
    reason: str


@dataclass
class Pool:
    items: np.ndarray  # int64 catalogue indices, unique
    source: list[str]  # the source that proposed the item with the best rank
    reason: list[str]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # source -> score, 0 if absent
    removed: list[Removed] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def keep(self, mask: np.ndarray) -> Pool:
        """A pool of the rows where ``mask`` is True (removed rows are recorded by callers)."""
        idx = np.nonzero(mask)[0]
        return Pool(
            items=self.items[idx],
            source=[self.source[i] for i in idx],
            reason=[self.reason[i] for i in idx],
            features={k: v[idx] for k, v in self.features.items()},
            removed=self.removed,
        )


def merge(candidates: list[Candidates], n_items: int) -> Pool:
    """Union of all sources; an item's source is the one that ranked it highest."""
    best_rank = np.full(n_items, np.inf)
    best_source = np.full(n_items, -1, np.int64)
    best_pos = np.zeros(n_items, np.int64)
    features: dict[str, np.ndarray] = {}
    for s, c in enumerate(candidates):
        if len(c.items) == 0:
            continue
        rank = np.arange(len(c.items), dtype=np.float64) / max(len(c.items), 1)
        better = rank < best_rank[c.items]
        upd = c.items[better]
        best_rank[upd] = rank[better]
        best_source[upd] = s
        best_pos[upd] = np.nonzero(better)[0]
        dense = np.zeros(n_items, np.float32)
        dense[c.items] = c.scores
        features[c.source] = dense
    items = np.nonzero(best_source >= 0)[0]
    return Pool(
        items=items,
        source=[candidates[best_source[i]].source for i in items],
        reason=[candidates[best_source[i]].reasons[best_pos[i]] for i in items],
        features={k: v[items] for k, v in features.items()},
    )
