"""May this viewer watch this video in region R: the rule for videos a viewer chose.

For You picks videos for a viewer; two other ways serve a video the viewer chose
themselves: the Following tab (the creators they follow,
:mod:`fyp.feed.following_tab`) and a video opened by link (``GET /v1/videos/{id}``
with a feed key). Both apply one rule, moderation's
:func:`fyp.moderation.snapshot.followers_barred_reason`, through :func:`may_watch`:
approved and ``restricted`` yes ("never in For You, still viewable by link and by
followers"), ``age_restricted`` only for a viewer certainly 18 (the rule of For You,
:func:`fyp.moderation.models.certainly_at_least`), and only while the creator passes
the creator rules; never pending, rejected or blocked, nor a video no longer published
in R. The states come from R's catalogue snapshot, kept exact by the change feed, so
a takedown holds on the very next request.

:func:`link_region` is the by-link read's use of it. The viewer, when the app names one,
is judged in their home region (the catalogue they see everywhere else); a request
naming no viewer is judged as a viewer not known to be 18, in the regions the key may
act for. A check that raises shows nothing (fail closed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fyp.audit.log import sql_store
from fyp.catalog.models import age_of
from fyp.errors import AgeRestricted, StorageError, UnknownUser, UnknownVideo
from fyp.moderation.models import certainly_at_least
from fyp.moderation.service import ADULT
from fyp.moderation.snapshot import snapshot_for
from fyp.regions.deployment import Deployment

log = logging.getLogger("fyp.feed")

# (region, video ids, viewer certainly 18) -> {video_id: why} for those the viewer may
# not be shown
WatchCheck = Callable[[str, Sequence[str], bool], dict[str, str]]


def may_watch(deployment: Deployment) -> WatchCheck:
    """The check: moderation's rule for videos a viewer chose, from the region's snapshot."""

    def check(region: str, video_ids: Sequence[str], adult: bool) -> dict[str, str]:
        return snapshot_for(deployment.store(region)).barred_for_followers(video_ids, adult)

    return check


@dataclass(frozen=True, slots=True)
class Viewer:
    """What the rule needs of a user (and the Following tab of their profile)."""

    user_id: str
    region: str  # home region
    birth_year: int | None
    language: str | None

    @property
    def adult(self) -> bool:
        """Certainly 18 by the birth year (the same rule as For You); unknown is not."""
        return certainly_at_least(age_of(self.birth_year), ADULT)


def find_viewer(deployment: Deployment, user_id: str) -> Viewer:
    """The user, read in their home region's store: a cached route gone stale (moved,
    erased) is located once more (Forbidden if they now live outside the request's key's
    regions, UnknownUser if nowhere)."""
    region = deployment.home_region(user_id)  # UnknownUser if nowhere
    for attempt in (0, 1):
        if attempt:
            region = deployment.relocate(user_id)  # UnknownUser if erased
        rows = sql_store(deployment.store(region)).query(
            "SELECT birth_year, language FROM users WHERE user_id = ?", (user_id,)
        )
        if rows:
            year, language = rows[0]
            return Viewer(user_id, region, None if year is None else int(year), language)
    raise UnknownUser(f"no user {user_id!r}", user_id=user_id)


def link_region(
    check: WatchCheck,
    video_id: str,
    regions: Sequence[str],
    adult: bool,
    viewer_id: str | None = None,
) -> str:
    """The first of ``regions`` where a viewer (``adult``: certainly 18) may watch the
    video they opened by link, whose copy to serve. Otherwise, in this order: 503
    ``storage_error`` when a region's check failed (nothing is shown unchecked; a retry
    may show it), 403 ``age_restricted`` when only the viewer's age bars it (the app can
    say so), else 404 ``unknown_video``, as for no video at all (a pending, rejected or
    blocked video, or one whose creator fails the creator rules: telling those apart
    would say what moderation found, or that the creator is a minor)."""
    failed: list[str] = []
    age_only = False
    for region in regions:
        try:
            if not check(region, [video_id], adult):
                return region
            age_only = age_only or (not adult and not check(region, [video_id], True))
        except Exception:  # fail closed: not shown from this region
            log.exception("video by link: the moderation check of region %s failed", region)
            failed.append(region)
    if failed:
        raise StorageError(
            f"the moderation state of video {video_id!r} could not be checked: no video is "
            "shown unchecked; try again",
            video_id=video_id,
            regions=failed,
        )
    if age_only:
        who = (
            "no viewer was named (viewer_id)"
            if viewer_id is None
            else f"viewer {viewer_id!r} is not certainly 18"
        )
        details = {"video_id": video_id}
        if viewer_id is not None:
            details["viewer_id"] = viewer_id
        raise AgeRestricted(
            f"video {video_id!r} is age-restricted (18+): it is shown only to a viewer "
            f"certainly 18, and {who}",
            **details,
        )
    raise UnknownVideo(f"no video {video_id!r}", video_id=video_id)
