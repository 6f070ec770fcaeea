"""The candidate pool: merged candidates, their per-source features, and provenance."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from fyp.feed.candidates import Candidates
from fyp.feed.reasons import Reason


@dataclass
class Removed:
    video_id: str
    stage: str
    reason: str


class RemovedLog:
    """What the filters removed and why, kept as arrays until someone reads it (a feed
    asked for with ``debug``): a user's history alone can remove hundreds of candidates
    per request, and most requests never look."""

    def __init__(self) -> None:
        self._parts: list[tuple[str, np.ndarray, str | list[str]]] = []

    def add(self, stage: str, video_ids: np.ndarray, reasons: str | list[str]) -> None:
        """``reasons``: one for every video, or one per video."""
        if isinstance(reasons, list) and len(reasons) != len(video_ids):
            raise ValueError(f"{len(video_ids)} videos but {len(reasons)} reasons")
        self._parts.append((stage, video_ids, reasons))

    def __len__(self) -> int:
        return sum(len(ids) for _, ids, _ in self._parts)

    def __iter__(self) -> Iterator[Removed]:
        for stage, ids, reasons in self._parts:
            for k, video_id in enumerate(ids.tolist()):
                reason = reasons if isinstance(reasons, str) else reasons[k]
                yield Removed(str(video_id), stage, reason)

    def to_dicts(self) -> list[dict[str, str]]:
        return [r.__dict__ for r in self]


@dataclass
class Pool:
    items: np.ndarray  # int64 catalogue indices, unique
    origin: np.ndarray  # index into ``candidates`` of the source that ranked the item best
    position: np.ndarray  # the item's row in that source's candidates
    candidates: Sequence[Candidates]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # source -> score, 0 if absent
    removed: RemovedLog = field(default_factory=RemovedLog)

    def __len__(self) -> int:
        return len(self.items)

    def source(self, row: int) -> str:
        return self.candidates[int(self.origin[row])].source

    def reason(self, row: int) -> Reason:
        return self.candidates[int(self.origin[row])].explain(int(self.position[row]))

    def is_from(self, source: str) -> np.ndarray:
        names = np.asarray([c.source == source for c in self.candidates], bool)
        return names[self.origin] if len(self.origin) else np.zeros(0, bool)

    def keep(self, mask: np.ndarray) -> Pool:
        """A pool of the rows where ``mask`` is True (removed rows are recorded by callers)."""
        idx = np.nonzero(mask)[0]
        return Pool(
            items=self.items[idx],
            origin=self.origin[idx],
            position=self.position[idx],
            candidates=self.candidates,
            features={k: v[idx] for k, v in self.features.items()},
            removed=self.removed,
        )


def merge(candidates: Sequence[Candidates], n_items: int) -> Pool:
    """Union of all sources; an item's origin is the source that ranked it highest."""
    best_rank = np.full(n_items, np.inf)
    best_source = np.full(n_items, -1, np.int64)
    best_pos = np.zeros(n_items, np.int64)
    features: dict[str, np.ndarray] = {}
    for s, c in enumerate(candidates):
        if len(c.items) == 0:
            continue
        rank = np.arange(len(c.items), dtype=np.float64) / len(c.items)
        better = rank < best_rank[c.items]
        upd = c.items[better]
        best_rank[upd] = rank[better]
        best_source[upd] = s
        best_pos[upd] = np.nonzero(better)[0]
        dense = features.setdefault(c.source, np.zeros(n_items, np.float32))
        dense[c.items] = np.maximum(dense[c.items], c.scores)
    items = np.nonzero(best_source >= 0)[0]
    return Pool(
        items=items,
        origin=best_source[items],
        position=best_pos[items],
        candidates=candidates,
        features={k: v[items] for k, v in features.items()},
    )
