"""The Following tab: the newest videos of the creators a user follows, newest first.

Beside For You, short-video apps have a tab the user fills by choice: every video of
the creators they follow, in upload order, not ranked by profiling. So it reads no
model and no consent, and of the user's events only their "not interested" marks: the
user's home region's store only, in one query (``Store.following_videos``: the followed
creators' videos through the index on ``videos(creator_id, created_at_ms DESC,
video_id)``, keyset on ``(created_at_ms, video_id)``; each store's SQL in
:mod:`fyp.storage.following_sql`, so a page's cost grows with the follows, not the
catalogue), and it is the same whether their ``personalised_feed`` consent is on or off
(it is where followed creators belong when it is off, :mod:`fyp.feed.impersonal`).

- **Region**: the catalogue of the user's home region, so a video is on the tab only
  while it is published there; a video of a followed creator published elsewhere only
  is not.
- **Moderation**, per video, in that region, failing closed
  (:func:`fyp.feed.watch.may_watch`, moderation's
  :func:`~fyp.moderation.snapshot.followers_barred_reason`): what the user may watch
  there, the rule a video opened by link follows too. Approved yes; ``restricted`` yes
  (never in For You, "still viewable by followers": this tab is where that promise is
  kept); ``age_restricted`` only for a viewer certainly 18; pending (a video without a
  verdict too), rejected and blocked never; and, as For You, only when the creator
  passed the creator rules (certainly 16: anyone may follow anyone, so a follow is no
  gate keeping an under-16 creator's videos from strangers). The states come from the
  region's catalogue snapshot, kept exact by the change feed, so a takedown shows on the
  very next page. A check that raises leaves its videos out: the page ends before them
  (its cursor points before them, so the next page tries them again), and a page that
  would be empty answers 503 instead of claiming the end.
- **Not interested**: a video the user marked ``not_interested`` is left out while For
  You leaves it out, the seen window (``[feed] seen_window_days``), read from the same
  events in the same query. Only the video: For You also takes the mark as a "no" to
  the creator (and, repeated, the category), a guess about what to propose unasked;
  here the follow is the user's own word on the creator, which an unfollow or a block
  takes back, not a "no" to one of their videos.
- **Paging**: ``next_cursor`` names the last video served; the next page starts after
  it. A new upload is newer than every page already served, so it never shifts or
  repeats what later pages hold; it shows on a fresh first page. An unfollow takes the
  creator's videos off the next page.
- **Not the For You served log**: these pages are not recorded there (that log keeps
  For You from repeating what it showed; a video seen here may still come in For You).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fyp.catalog.follows import keyset_cursor, read_keyset
from fyp.catalog.models import now_ms
from fyp.errors import StorageError, ValidationFailed
from fyp.feed.reasons import DEFAULT_LANG, Reason, fixed, match_lang
from fyp.feed.watch import WatchCheck, find_viewer, may_watch
from fyp.regions.deployment import Deployment

log = logging.getLogger("fyp.feed")

DEFAULT_PAGE = 10
MAX_PAGE = 100
MAX_BATCH = 1000
REASON = "followed_creator"


@dataclass(frozen=True, slots=True)
class TabItem:
    video_id: str
    creator_id: str
    created_at_ms: int


@dataclass(frozen=True)
class TabPage:
    user_id: str
    region: str
    items: list[TabItem]
    cursor: str | None
    profile_lang: str | None = None  # the supported language of the user's profile, if any

    def language(self, asked: str | None) -> str:
        """The reason's language: the request's, else the profile's, else ``en``."""
        return asked or self.profile_lang or DEFAULT_LANG

    def to_dict(self, lang: str = DEFAULT_LANG) -> dict[str, Any]:
        why: Reason = fixed(REASON)
        text, explanation = why.text(lang), why.to_dict()
        return {
            "user_id": self.user_id,
            "region": self.region,
            "lang": lang,
            "items": [
                {
                    "video_id": item.video_id,
                    "creator_id": item.creator_id,
                    "created_at_ms": item.created_at_ms,
                    "position": position,
                    "reason": text,
                    "explanation": explanation,
                }
                for position, item in enumerate(self.items)
            ],
            "next_cursor": self.cursor,
        }


class FollowingTab:
    """Pages of the Following tab, each read from the user's home region."""

    def __init__(self, deployment: Deployment, check: WatchCheck | None = None) -> None:
        self.deployment = deployment
        self.check = check or may_watch(deployment)  # the rule a video by link follows too

    def page(self, user_id: str, n: int = DEFAULT_PAGE, cursor: str | None = None) -> TabPage:
        if not 1 <= n <= MAX_PAGE:
            raise ValidationFailed(f"n must be between 1 and {MAX_PAGE}, got {n}", field="n")
        after = read_keyset(cursor) if cursor else None  # 400 before any read
        viewer = find_viewer(self.deployment, user_id)
        region, language = viewer.region, viewer.language
        items, more = self._scan(user_id, region, viewer.adult, n, after)
        last = items[-1] if items else None
        if more is None and last is None:
            raise StorageError(
                f"the moderation state of region {region!r} could not be checked: no "
                "video is shown unchecked; try again",
                region=region,
            )
        next_cursor = None
        if last is not None and more is not False:
            next_cursor = keyset_cursor(last.created_at_ms, last.video_id)
        return TabPage(
            user_id=user_id,
            region=region,
            items=items,
            cursor=next_cursor,
            profile_lang=None if language is None else match_lang(language),
        )

    def _scan(
        self, user_id: str, region: str, adult: bool, n: int, after: tuple[int, str] | None
    ) -> tuple[list[TabItem], bool | None]:
        """Up to ``n`` videos the user may watch after ``after``, and whether more follow
        (None: a check failed; the page ends before the videos it was asked about)."""
        store = self.deployment.store(region)
        # "not interested" holds as long as in For You: the seen window (one start per page)
        since = now_ms() - self.deployment.config.feed.seen_window_ms
        shown: list[TabItem] = []
        batch = n + 1  # the page and one more, to know whether there is a next page
        while True:
            rows = store.following_videos(user_id, after, batch, since)
            found = [TabItem(*row) for row in rows]
            if not found:
                return shown, False
            try:
                barred = self.check(region, [i.video_id for i in found], adult)
            except Exception:  # fail closed: leave them out, end the page before them
                log.exception("following tab: the moderation check of region %s failed", region)
                return shown, None
            for item in found:
                if item.video_id in barred:
                    continue
                if len(shown) == n:
                    return shown, True
                shown.append(item)
            if len(found) < batch:
                return shown, False
            after = (found[-1].created_at_ms, found[-1].video_id)
            batch = min(2 * batch, MAX_BATCH)  # much left out: read further at once
