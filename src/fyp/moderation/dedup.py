"""Re-upload detection: MinHash LSH over caption character n-grams, and media hashes.

A caption's fingerprint is built so that the usual edits of a re-upload barely move it:

- the caption is NFKC-normalised and case-folded, and everything that is not a letter
  or digit is dropped, so punctuation, spacing and emoji changes vanish;
- inline ``#hashtags`` and the hashtag field become one shingle per tag (a set), so
  reordering hashtags changes nothing;
- the remaining text becomes overlapping character n-grams (n = 3), so cutting or
  padding a caption removes or adds only the n-grams at the edit: the Jaccard
  similarity falls in proportion to how much was changed.

MinHash (128 permutations, fixed seed: the same caption always gets the same
signature) estimates Jaccard similarity; LSH bands find candidates without comparing
against every caption, and each candidate is confirmed against the region's
``duplicate_threshold``. Captions with fewer than :data:`MIN_CHARS` letters carry too
little signal to tell a re-upload from a coincidence ("好看吗") and get no fingerprint.
An exact media match (``attributes.media_sha256``) needs no threshold.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fyp.moderation.models import Match
from fyp.moderation.text import all_hashtags, squeeze, strip_tags

NGRAM = 3
NUM_PERM = 128
SEED = 1
MIN_CHARS = 8
MAX_MATCHES = 5
LSH_MARGIN = 0.15  # LSH bands tuned below the threshold; candidates are confirmed exactly
REMOVED = frozenset({"rejected", "blocked"})
VERSION = f"minhash-n{NGRAM}-p{NUM_PERM}-s{SEED}-min{MIN_CHARS}"


def shingles(caption: str, hashtags: Iterable[str] = ()) -> set[str]:
    """The caption's n-grams plus one ``#tag`` shingle per hashtag; empty if too short."""
    body = squeeze(strip_tags(caption))
    if len(body) < MIN_CHARS:
        return set()
    grams = {body[i : i + NGRAM] for i in range(len(body) - NGRAM + 1)}
    grams.update("#" + tag for tag in all_hashtags(caption, hashtags))
    return grams


@dataclass(frozen=True)
class Signature:
    hashvalues: np.ndarray  # uint32, NUM_PERM values

    def to_bytes(self) -> bytes:
        return np.asarray(self.hashvalues, np.uint32).tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Signature:
        return cls(np.frombuffer(raw, np.uint32).copy())

    def jaccard(self, other: Signature) -> float:
        return float(np.count_nonzero(self.hashvalues == other.hashvalues)) / NUM_PERM


class _Hasher:
    """One datasketch MinHash reused for every caption: permutations are drawn once,
    and building a MinHash per caption would cost more than hashing it."""

    def __init__(self) -> None:
        from datasketch import MinHash

        self._minhash = MinHash(num_perm=NUM_PERM, seed=SEED)
        self.scheme = str(self._minhash.scheme)
        self._lock = threading.Lock()

    def signature(self, grams: set[str]) -> Signature:
        with self._lock:
            m = self._minhash
            m.clear()
            m.update_batch([g.encode("utf-8") for g in sorted(grams)])
            return Signature(np.array(m.hashvalues, np.uint32))


_hasher_lock = threading.Lock()
_hasher: _Hasher | None = None


def hasher() -> _Hasher:
    global _hasher
    if _hasher is None:
        with _hasher_lock:
            if _hasher is None:
                _hasher = _Hasher()
    return _hasher


def signature(caption: str, hashtags: Iterable[str] = ()) -> Signature | None:
    """The caption's MinHash signature, or None when it is too short to fingerprint."""
    grams = shingles(caption, hashtags)
    return hasher().signature(grams) if grams else None


class _View:
    """What datasketch's LSH reads of a MinHash, over a stored signature."""

    __slots__ = ("hashvalues", "scheme")

    def __init__(self, sig: Signature) -> None:
        self.hashvalues = sig.hashvalues
        self.scheme = hasher().scheme

    def __len__(self) -> int:
        return len(self.hashvalues)


class DuplicateIndex:
    """The fingerprints of one region's catalogue, for finding re-uploads."""

    def __init__(self, threshold: float) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=max(0.05, threshold - LSH_MARGIN), num_perm=NUM_PERM)
        self._sigs: dict[str, Signature] = {}
        self._media: dict[str, set[str]] = {}
        self._media_of: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self.creators: dict[str, str | None] = {}

    def __len__(self) -> int:
        return len(self._sigs)

    def add(
        self,
        video_id: str,
        sig: Signature | None,
        media_sha256: str | None,
        state: str,
        creator_id: str | None,
    ) -> None:
        """Index (or re-index) a video; its old fingerprint is replaced."""
        self.remove(video_id)
        if sig is not None:
            self._sigs[video_id] = sig
            self._lsh.insert(video_id, _View(sig))
        if media_sha256:
            self._media.setdefault(media_sha256, set()).add(video_id)
            self._media_of[video_id] = media_sha256
        self.states[video_id] = state
        self.creators[video_id] = creator_id

    def remove(self, video_id: str) -> None:
        if self._sigs.pop(video_id, None) is not None:
            self._lsh.remove(video_id)
        media = self._media_of.pop(video_id, None)
        if media is not None:
            self._media.get(media, set()).discard(video_id)
        self.states.pop(video_id, None)
        self.creators.pop(video_id, None)

    def matches(
        self,
        video_id: str,
        sig: Signature | None,
        media_sha256: str | None,
        creator_id: str | None,
    ) -> tuple[Match, ...]:
        """Other indexed videos this one duplicates; removed ones first, then closest."""
        found: dict[str, Match] = {}
        for other in sorted(self._media.get(media_sha256 or "", ())):
            if other != video_id:
                found[other] = self._match(other, "media", 1.0, creator_id)
        if sig is not None:
            for other in self._lsh.query(_View(sig)):
                if other == video_id or other in found:
                    continue
                similarity = sig.jaccard(self._sigs[other])
                if similarity >= self.threshold:
                    found[other] = self._match(other, "caption", round(similarity, 4), creator_id)
        ranked = sorted(
            found.values(),
            key=lambda m: (m.state not in REMOVED, m.kind != "media", -m.similarity, m.video_id),
        )
        return tuple(ranked[:MAX_MATCHES])

    def _match(self, other: str, kind: str, similarity: float, creator_id: str | None) -> Match:
        creator = self.creators.get(other)
        return Match(
            video_id=other,
            kind=kind,
            similarity=similarity,
            state=self.states.get(other, "pending"),
            same_creator=creator is not None and creator == creator_id,
        )
