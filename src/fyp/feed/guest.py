"""The guest feed: For You for a viewer nobody knows yet (an app before sign-up).

A user's feed needs a stored user (a profile with a home region, a served log). An app
that had to create one per install just to show something would store personal data
of people who never agreed to anything; ``GET /v1/regions/{region}/feed`` serves the
region's feed not based on profiling (:mod:`fyp.feed.impersonal`) to nobody in
particular instead, and stores nothing about the viewer:

- **what it shows**: the region's popular (``trending``) and new (``fresh``) videos
  scored by the region's popularity prior, re-ranked for diversity, with the same
  filters, exploration and final checks as a user's page. Eligibility is For You's in
  that region for a viewer of unknown age (``age=None`` fails every age gate closed), so
  never pending, rejected, restricted, blocked or ``age_restricted`` videos, nor those
  of creators failing the creator rules, nor videos not published in the region;
- **what it stores**: nothing. No user, no served-log row, no experiment exposure (no
  arm applies), no audit entry; only the process's page counters (``/metrics``);
- **no repeats** come from the cursor alone (:class:`GuestCursor`): it carries a 32-bit
  hash of each of the last :data:`MEMORY` videos served in the session, which the next
  page's ``already seen`` filter removes (a hash names the video, not a model's row,
  so it holds across a retrained model whose trending moved). A hash collision can
  only leave out a video that was not shown, never show one twice;
- **integrity**: the cursor ends with a BLAKE2b check over its region and bytes, so an
  edited, truncated or foreign cursor (a user feed's, another region's) is a 400. It is
  a checksum, not a secret: whoever forges one can only hide videos from themselves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import struct
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fyp.errors import invalid_cursor
from fyp.feed.page import FeedItem, page_fields
from fyp.feed.reasons import DEFAULT_LANG
from fyp.feed.state import UserState
from fyp.models.region_model import RegionModel

MEMORY = 256
"""Videos a cursor remembers: no video comes twice within the last 256 served (25 pages
of 10, 2 of 100); older ones may come back, as a user's do after the seen window."""
VERSION = 1
_HEAD = struct.Struct(">BII")  # version, page number, session
_HASH = 4  # bytes per remembered video
_CHECK = 8  # bytes of the check
MAX_BYTES = _HEAD.size + MEMORY * _HASH + _CHECK
MAX_CURSOR_CHARS = -(-MAX_BYTES * 4 // 3)
"""The longest cursor, in characters (unpadded base64url of :data:`MAX_BYTES`): 1388."""
_PERSON = b"fyp-guest-feed"
_LAST_PAGE = 2**32 - 1
_NONE, _NONE_F = np.zeros(0, np.int64), np.zeros(0, np.float32)


def video_hash(video_id: str) -> int:
    """The 32 bits a cursor remembers a video by (the same in every model)."""
    return int.from_bytes(hashlib.blake2b(video_id.encode(), digest_size=_HASH).digest(), "big")


_MODEL_HASHES: weakref.WeakKeyDictionary[RegionModel, np.ndarray] = weakref.WeakKeyDictionary()


def model_hashes(model: RegionModel) -> np.ndarray:
    """:func:`video_hash` of each video of ``model``'s catalogue (worked out once per model:
    ~10 ms for 10,000 videos)."""
    hashes = _MODEL_HASHES.get(model)
    if hashes is None:
        ids: list[str] = model.video_ids.tolist()
        hashes = np.fromiter(map(video_hash, ids), np.uint32, len(ids))
        _MODEL_HASHES[model] = hashes
    return hashes


def _check(region: str, body: bytes) -> bytes:
    named = len(region.encode()).to_bytes(4, "big") + region.encode()
    return hashlib.blake2b(named + body, digest_size=_CHECK, person=_PERSON).digest()


@dataclass(frozen=True)
class GuestCursor:
    """Where a guest is: the page number and session (which seed exploration, as a
    user's cursor does) and the videos served so far, oldest first, at most
    :data:`MEMORY`, by :func:`video_hash`."""

    page: int
    session: int
    shown: tuple[int, ...] = ()

    @classmethod
    def start(cls) -> GuestCursor:
        return cls(0, secrets.randbits(32))

    def then(self, video_ids: Sequence[str]) -> GuestCursor:
        """The cursor after a page of ``video_ids``: the oldest forgotten past MEMORY."""
        shown = (*self.shown, *map(video_hash, video_ids))[-MEMORY:]
        return GuestCursor(min(self.page + 1, _LAST_PAGE), self.session, shown)

    def seen(self, model: RegionModel) -> list[str]:
        """The videos of ``model`` this cursor remembers as shown."""
        if not self.shown:
            return []
        hit = np.isin(model_hashes(model), np.asarray(self.shown, np.uint32))
        ids: list[str] = model.video_ids[hit].tolist()
        return ids

    def encode(self, region: str) -> str:
        body = _HEAD.pack(VERSION, self.page, self.session)
        body += np.asarray(self.shown, ">u4").tobytes()
        raw = body + _check(region, body)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str | None, region: str) -> GuestCursor:
        """The cursor ``encode`` wrote for ``region``; a new session without one; a 400
        for anything else (too long, not base64url, edited, another region's, a user
        feed's)."""
        if not cursor:
            return cls.start()
        if len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
            raise invalid_cursor()
        try:
            raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise invalid_cursor() from None
        body, check = raw[:-_CHECK], raw[-_CHECK:]
        hashes = len(body) - _HEAD.size
        if hashes < 0 or hashes % _HASH or hashes > MEMORY * _HASH:
            raise invalid_cursor()
        if not secrets.compare_digest(check, _check(region, body)):
            raise invalid_cursor()
        version, page, session = _HEAD.unpack_from(body)
        if version != VERSION:
            raise invalid_cursor()
        shown = np.frombuffer(body, ">u4", offset=_HEAD.size).tolist()
        found = cls(page, session, tuple(shown))
        if found.encode(region) != cursor:  # one spelling per cursor (base64's spare bits)
            raise invalid_cursor()
        return found


def guest_state(region: str, model: RegionModel, cursor: GuestCursor) -> UserState:
    """All the pipeline may know of a guest: the region, an unknown age, and what the
    cursor says was shown (the non-profiled state, :func:`fyp.feed.impersonal.impersonal_state`,
    of a user with nothing else)."""
    shown = dict.fromkeys(cursor.seen(model))
    return UserState(
        user_id="",  # nobody: the non-profiled pipeline keeps nothing per user
        region=region,
        age=None,
        positives=_NONE,
        positive_weights=_NONE_F,
        seen=shown,
        served=dict(shown),
        acted={},
    )


@dataclass
class GuestPage:
    """A guest feed page: as a user's (:class:`fyp.feed.page.FeedPage`) without a user,
    never profiled."""

    region: str
    model_version: str
    items: list[FeedItem]
    cursor: str

    def language(self, asked: str | None) -> str:
        """The reasons' language: the request's, else ``en`` (a guest has no profile)."""
        return asked or DEFAULT_LANG

    def to_dict(self, lang: str = DEFAULT_LANG) -> dict[str, Any]:
        return {
            "region": self.region,
            "model_version": self.model_version,
            **page_fields(self.items, self.cursor, lang, personalised=False),
        }
