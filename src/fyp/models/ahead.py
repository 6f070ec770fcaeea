"""Feeds ranked ahead: each user's order from the feed pipeline, worked out before it is
asked for and shipped inside the region's artifact.

Running the pipeline for a user costs milliseconds; serving the next stretch of an
order it already produced costs a small fraction of that. ``fyp train`` ranks every
user of the region with the new model (``fyp.feed.ahead``) and stores the orders here
as flat arrays, one slice per user. An order is only good for the user state it was
ranked from: it records the user's profile version and latest event, and the feed uses
it only while both are unchanged (``RankedAhead.fresh_for``), so read-your-writes holds.

Reasons are stored coded (``fyp.feed.reasons``: a code and its parameters, rendered in
the viewer's language when a page is answered), with their English text beside them for
fyp versions before codes; an artifact of those versions holds the texts only, which
are mapped back to codes once when it loads (``reasons.from_text``). None names a user:
candidate sources explain with video ids, categories and fixed phrases
(``fyp.feed.candidates``), so an erasure only has to drop the erased user's own slice
(``without_user``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fyp.feed.reasons import CODES, Reason, from_text

PREFIX = "ahead_"
USER_IDS = "ahead_user_ids"
PERSONALISED = "ahead_personalised"
RANKED_PERSONALISED = "ranked_ahead_personalised_default"
"""The manifest's lineage key: the region's ``personalised_feed`` default its orders
were ranked under (``fyp.models.schedule.retrain_reason`` ranks again when it changes)."""
_NO_AGE = -1
_META_COLUMNS = 5  # profile_ms, event_seq, served_seq, ranked_at_ms, age


class Explains(Protocol):
    """The sources and reasons of an order's positions ``rows`` (int64), worked out
    only for the videos that reach a page."""

    def sources(self, rows: np.ndarray) -> list[str]: ...

    def reasons(self, rows: np.ndarray) -> list[Reason]: ...


@dataclass(frozen=True)
class RankedAhead:
    """One user's order: catalogue items in feed order, each with its score, source and
    reason.

    A serving process keeps thousands of orders, so an order is a few objects around
    arrays (``explains`` holds arrays too, not per-video lists or closures): every
    object it holds is one more for each of the garbage collector's full passes, which
    stop the event loop (see docs/benchmarks.md)."""

    profile_ms: int  # the user's ``updated_at_ms`` when ranked
    event_seq: int  # the seq of their latest event then (-1: none)
    served_seq: int  # their served counter then: unchanged means nothing served since
    ranked_at_ms: int  # read of the served log began here: later serves are skipped
    age: int | None
    items: np.ndarray  # int64 catalogue indices
    scores: np.ndarray  # float32
    explains: Explains
    # ranked by the profiled pipeline; False: the non-profiled one (fyp.feed.impersonal),
    # for a user whose personalised_feed consent is off. Training ranks each user's kind
    personalised: bool = True

    def fresh_for(self, marker: tuple[int, ...]) -> bool:
        """True while the user's profile and events are what they were when ranked
        (``marker`` is ``Store.user_version``: profile, latest event, served counter)."""
        return marker[0] == self.profile_ms and marker[1] == self.event_seq


def to_arrays(orders: Mapping[str, RankedAhead]) -> dict[str, np.ndarray]:
    """The ``ahead_*`` arrays of an artifact holding ``orders`` (every reason rendered)."""
    users = sorted(orders)
    sizes = [len(orders[u].items) for u in users]
    ptr = np.zeros(len(users) + 1, np.int64)
    np.cumsum(sizes, out=ptr[1:])
    sources: dict[str, int] = {}
    reasons: dict[Reason, int] = {}
    source_idx = np.zeros(int(ptr[-1]), np.int16)
    reason_idx = np.zeros(int(ptr[-1]), np.int32)
    for u, start in zip(users, ptr[:-1].tolist(), strict=True):
        o = orders[u]
        rows = np.arange(len(o.items))
        for k, (source, reason) in enumerate(
            zip(o.explains.sources(rows), o.explains.reasons(rows), strict=True)
        ):
            source_idx[start + k] = sources.setdefault(source, len(sources))
            reason_idx[start + k] = reasons.setdefault(reason, len(reasons))
    meta = np.asarray(
        [
            (
                o.profile_ms,
                o.event_seq,
                o.served_seq,
                o.ranked_at_ms,
                _NO_AGE if o.age is None else o.age,
            )
            for o in (orders[u] for u in users)
        ],
        np.int64,
    ).reshape(len(users), _META_COLUMNS)
    empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
    return {
        USER_IDS: np.asarray(users, dtype=np.str_),
        "ahead_meta": meta,
        "ahead_ptr": ptr,
        "ahead_items": np.concatenate([orders[u].items for u in users] or [empty_i]).astype(
            np.int32
        ),
        "ahead_scores": np.concatenate([orders[u].scores for u in users] or [empty_f]).astype(
            np.float32
        ),
        # per user: ranked profiled (absent in artifacts from before consents: all were)
        PERSONALISED: np.asarray([orders[u].personalised for u in users], np.bool_),
        "ahead_source": source_idx,
        "ahead_reason": reason_idx,
        "ahead_source_names": np.asarray(list(sources) or [""], dtype=np.str_),
        # English, for fyp versions before codes (they read only this)
        "ahead_reasons": np.asarray([r.text() for r in reasons] or [""], dtype=np.str_),
        "ahead_reason_codes": np.asarray([r.code for r in reasons] or [""], dtype=np.str_),
        "ahead_reason_params": np.asarray(
            [json.dumps(r.params, ensure_ascii=False, sort_keys=True) for r in reasons] or ["{}"],
            dtype=np.str_,
        ),
    }


class AheadTable:
    """The ``ahead_*`` arrays of a loaded artifact, one ``RankedAhead`` per user on demand."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._row = {str(u): n for n, u in enumerate(arrays[USER_IDS].tolist())}
        self._meta = arrays["ahead_meta"]
        self._ptr = arrays["ahead_ptr"]
        self._items = arrays["ahead_items"].astype(np.int64)
        self._scores = arrays["ahead_scores"]
        self._source = arrays["ahead_source"]
        self._reason = arrays["ahead_reason"]
        self._source_names: list[str] = arrays["ahead_source_names"].tolist()
        self._reasons = _stored_reasons(arrays)  # once per artifact
        personal = arrays.get(PERSONALISED)
        self._personal = (
            np.ones(len(self._row), np.bool_) if personal is None else personal.astype(np.bool_)
        )

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> AheadTable | None:
        """None when the artifact has no orders (trained without them, or by a version
        of fyp whose layout differs: the feed then ranks every request)."""
        if USER_IDS not in arrays or arrays["ahead_meta"].shape[1:] != (_META_COLUMNS,):
            return None
        personal = arrays.get(PERSONALISED)
        if personal is not None and len(personal) != len(arrays[USER_IDS]):
            return None  # never guess who may be served a profiled order: rank live
        return cls(arrays)

    def __len__(self) -> int:
        return len(self._row)

    def get(self, user_id: str) -> RankedAhead | None:
        row = self._row.get(user_id)
        if row is None:
            return None
        start, end = int(self._ptr[row]), int(self._ptr[row + 1])
        profile_ms, event_seq, served_seq, ranked_at_ms, age = self._meta[row].tolist()
        return RankedAhead(
            profile_ms=profile_ms,
            event_seq=event_seq,
            served_seq=served_seq,
            ranked_at_ms=ranked_at_ms,
            age=None if age == _NO_AGE else age,
            items=self._items[start:end],
            scores=self._scores[start:end],
            explains=_Coded(
                self._source_names,
                self._reasons,
                self._source[start:end],
                self._reason[start:end],
            ),
            personalised=bool(self._personal[row]),
        )


def _stored_reasons(arrays: Mapping[str, np.ndarray]) -> list[Reason]:
    """The artifact's table of reasons. Codes where it has them; else (trained before
    codes, or a code this version does not know) the English text mapped back."""
    texts: list[str] = arrays["ahead_reasons"].tolist()  # plain str
    if "ahead_reason_codes" not in arrays:
        return [from_text(t) for t in texts]
    out: list[Reason] = []
    codes, params = arrays["ahead_reason_codes"].tolist(), arrays["ahead_reason_params"].tolist()
    for text, code, given in zip(texts, codes, params, strict=True):
        try:
            out.append(Reason(code, json.loads(given)) if code in CODES else from_text(text))
        except (ValueError, TypeError):  # parameters this version does not take
            out.append(from_text(text))
    return out


class _Coded:
    """An artifact order's sources and reasons: codes into the artifact's tables."""

    __slots__ = ("_names", "_reason", "_source", "_table")

    def __init__(
        self, names: list[str], table: list[Reason], source: np.ndarray, reason: np.ndarray
    ) -> None:
        self._names, self._table, self._source, self._reason = names, table, source, reason

    def sources(self, rows: np.ndarray) -> list[str]:
        names = self._names
        return [names[c] for c in self._source[rows].tolist()]

    def reasons(self, rows: np.ndarray) -> list[Reason]:
        table = self._table
        return [table[c] for c in self._reason[rows].tolist()]


def without_user(
    arrays: Mapping[str, np.ndarray], user_id: str
) -> tuple[dict[str, np.ndarray], int]:
    """The ``ahead_*`` arrays with the user's order gone; returns how many videos it held."""
    out = dict(arrays)
    if USER_IDS not in arrays:
        return out, 0
    users = arrays[USER_IDS]
    hit = np.nonzero(users == user_id)[0]
    if len(hit) == 0:
        return out, 0
    ptr = arrays["ahead_ptr"]
    keep_users = np.ones(len(users), bool)
    keep_users[hit] = False
    keep = np.ones(int(ptr[-1]), bool)
    for row in hit.tolist():
        keep[int(ptr[row]) : int(ptr[row + 1])] = False
    sizes = np.diff(ptr)[keep_users]
    new_ptr = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=new_ptr[1:])
    out[USER_IDS] = users[keep_users]
    out["ahead_meta"] = arrays["ahead_meta"][keep_users]
    if PERSONALISED in arrays:
        out[PERSONALISED] = arrays[PERSONALISED][keep_users]
    out["ahead_ptr"] = new_ptr
    for name in ("ahead_items", "ahead_scores", "ahead_source", "ahead_reason"):
        out[name] = arrays[name][keep]
    return out, int((~keep).sum()) + len(hit)
