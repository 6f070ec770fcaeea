"""A region's trained models, loaded for serving (read-only, shared by all requests)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from fyp.errors import ModelError
from fyp.models.ahead import AheadTable
from fyp.models.artifacts import (
    Manifest,
    artifact_problem,
    current_version,
    read_arrays,
    read_manifest,
)
from fyp.models.ranker import Heads

FOLD_IN_REG = 0.1


def tag_bitmasks(tag_ptr: np.ndarray, tag_idx: np.ndarray) -> np.ndarray:
    """One 64-bit mask per video so "shares a tag" is a single AND. Tag vocabularies over
    64 fold onto the same bits: a rare false "shared" only makes diversity stricter."""
    bits = np.left_shift(np.uint64(1), (tag_idx % 64).astype(np.uint64))
    owners = np.repeat(np.arange(len(tag_ptr) - 1), np.diff(tag_ptr))
    out = np.zeros(len(tag_ptr) - 1, np.uint64)
    np.bitwise_or.at(out, owners, bits)
    return out


def _heads(arrays: dict[str, np.ndarray]) -> Heads | None:
    texts = {
        k.removeprefix("ranker_"): str(v) for k, v in arrays.items() if k.startswith("ranker_")
    }
    return Heads(texts) if texts else None


@dataclass(eq=False)  # identity: models key per-model caches (arrays cannot compare)
class RegionModel:
    manifest: Manifest
    video_ids: np.ndarray
    video_index: dict[str, int]
    user_index: dict[str, int]
    popularity: np.ndarray
    trending_order: np.ndarray
    nbr_idx: np.ndarray
    nbr_sim: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    fold_in_matrix: np.ndarray
    impressions: np.ndarray
    likes: np.ndarray
    category: np.ndarray
    category_names: np.ndarray
    creator: np.ndarray
    creator_ids: np.ndarray
    created_at_ms: np.ndarray
    tag_ptr: np.ndarray
    tag_idx: np.ndarray
    category_orders: dict[int, np.ndarray]
    creator_index: dict[str, int]
    tag_bits: np.ndarray  # uint64 per video: bit (tag % 64) set for each of its tags
    heads: Heads | None = None  # the multi-objective ranker, when the region could train it
    ahead: AheadTable | None = None  # every user's order, ranked by ``fyp train``

    @property
    def n_items(self) -> int:
        return len(self.video_ids)

    @cached_property
    def knows_creators(self) -> bool:
        """Whether any video's creator is known (KuaiRec names none): where none is,
        the feed has no creators to keep apart, and skips looking them up per page."""
        return bool((self.creator >= 0).any())

    def codes_of(self, creator_id: str | None, categories: Sequence[str]) -> tuple[int, int]:
        """The model's creator and category codes (-1: unknown to it) of a video it has
        not learned: a "not interested" in a video uploaded after training still
        reaches its creator's other videos."""
        creator = -1 if creator_id is None else self.creator_index.get(creator_id, -1)
        if not categories:
            return creator, -1
        names = list(map(str, self.category_names))
        return creator, names.index(categories[0]) if categories[0] in names else -1

    @classmethod
    def from_arrays(cls, manifest: Manifest, a: dict[str, np.ndarray]) -> RegionModel:
        video_ids = a["video_ids"]
        pop = a["popularity"].astype(np.float32)
        item_factors = a["item_factors"].astype(np.float32)
        k = item_factors.shape[1]
        gram = item_factors.T @ item_factors + FOLD_IN_REG * np.eye(k, dtype=np.float32)
        order = np.argsort(-pop, kind="stable").astype(np.int32)
        category = a["category"]
        category_orders = {
            int(c): order[category[order] == c] for c in np.unique(category) if c >= 0
        }
        return cls(
            manifest=manifest,
            video_ids=video_ids,
            video_index={str(v): n for n, v in enumerate(video_ids)},
            user_index={str(u): n for n, u in enumerate(a["user_ids"])},
            popularity=pop,
            trending_order=order,
            nbr_idx=a["nbr_idx"],
            nbr_sim=a["nbr_sim"],
            user_factors=a["user_factors"].astype(np.float32),
            item_factors=item_factors,
            fold_in_matrix=np.linalg.inv(gram).astype(np.float32),
            impressions=a["impressions"],
            likes=a["likes"],
            category=category,
            category_names=a["category_names"],
            creator=a["creator"],
            creator_ids=a["creator_ids"],
            created_at_ms=a["created_at_ms"],
            tag_ptr=a["tag_ptr"],
            tag_idx=a["tag_idx"],
            category_orders=category_orders,
            creator_index={str(c): n for n, c in enumerate(a["creator_ids"])},
            tag_bits=tag_bitmasks(a["tag_ptr"], a["tag_idx"]),
            heads=_heads(a),
            ahead=AheadTable.from_arrays(a),
        )

    @classmethod
    def load(cls, region_dir: Path, version: str | None = None) -> RegionModel:
        version = version or current_version(region_dir)
        if version is None:
            raise ModelError(
                f"region {region_dir.name!r} has no trained model: run `fyp train`",
                region=region_dir.name,
            )
        manifest = read_manifest(region_dir, version)
        arrays = read_arrays(region_dir, version)
        if manifest.arrays_sha256 is not None:  # damaged but loadable is never served
            damaged = artifact_problem(region_dir, version, manifest)
            if damaged is not None:
                raise ModelError(f"{region_dir.name}/{version}: {damaged}", version=version)
        try:
            return cls.from_arrays(manifest, arrays)
        except (KeyError, ValueError, TypeError, IndexError, np.linalg.LinAlgError) as exc:
            raise ModelError(
                f"model arrays of {region_dir.name}/{version} are incomplete or inconsistent: "
                f"{type(exc).__name__}: {exc}",
                version=version,
            ) from exc

    def user_vector(self, user_id: str, recent_items: np.ndarray) -> np.ndarray | None:
        """The user's learned vector, moved towards (or, if new, folded in from) recent items."""
        learned = self.user_index.get(user_id)
        if len(recent_items) == 0:
            return None if learned is None else np.asarray(self.user_factors[learned])
        folded: np.ndarray = self.fold_in_matrix @ self.item_factors[recent_items].sum(axis=0)
        if learned is None:
            return folded
        return np.asarray(0.5 * self.user_factors[learned] + 0.5 * folded)
