"""The guest feed, ``GET /v1/regions/{region}/feed``: For You for a viewer nobody knows
yet (:mod:`fyp.feed.guest`), so an app can show a feed before anyone signs up without
creating a user.

Not on the fast path (``fyp.serving.fastpath``): a user's page mostly comes from an
order ranked ahead (a few hundred microseconds, of which the framework was a large
share), a guest's page always runs the non-profiled pipeline (about a millisecond),
and nobody's order is kept for a guest. HEAD is answered as the GET (nothing is
recorded), with a page of its own: a new session draws its own exploration.
"""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Header, Query, Request, Response

from fyp.feed.reasons import asked_lang
from fyp.feed.service import DEFAULT_PAGE, MAX_PAGE
from fyp.serving.dependencies import AppState
from fyp.serving.openapi import BAD_CURSOR, BAD_LANG, answers
from fyp.serving.responses import GuestFeedPage
from fyp.serving.routers.feed import ACCEPT_LANGUAGE_DOC, INCLUDE_DOC, language_headers, with_videos

router = APIRouter(prefix="/v1/regions", tags=["feed"])

LANG_DOC = (
    "Language of each item's `reason`, as on the user's feed (`en`, `zh-Hans`, `zh-Hant`, or "
    "a tag that falls back to one; any other value: 422). Without it, the `Accept-Language` "
    "header's most preferred supported language, else `en`."
)


@router.get(
    "/{region}/feed",
    responses=answers(404, 503, ok=GuestFeedPage, also={400: BAD_CURSOR, 422: BAD_LANG}),
)
async def guest_feed(
    request: Request,
    region: str,
    n: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="How many videos."),
    cursor: str | None = Query(None, description="next_cursor of the previous page."),
    include: Literal["video"] | None = Query(None, description=INCLUDE_DOC),
    lang: str | None = Query(None, description=LANG_DOC),
    accept_language: str | None = Header(None, description=ACCEPT_LANGUAGE_DOC),
) -> Response:
    """The region's feed for a viewer nobody knows yet (an app before sign-up): the feed
    not based on profiling (`personalised: false`; the region's popular and new videos,
    scored by its popularity prior, diversified), only videos eligible for For You in the
    region for a viewer of unknown age (never `age_restricted`, pending, rejected or
    restricted ones, nor any not published there).

    Nothing about the viewer is stored: no user, no served log, no experiment, no audit
    entry. The cursor alone keeps videos from repeating within a session (the last 256
    served); an unknown region is a 404."""
    s: AppState = request.app.state.fyp
    asked = asked_lang(lang, accept_language)  # 422 before any read
    page = s.feed.guest_feed(region, n=n, cursor=cursor)
    s.metrics.guest_page(page.region, len(page.items))
    language = page.language(asked)
    answer = page.to_dict(language)
    if include == "video":
        with_videos(answer["items"], s.deployment.store(page.region))
    body = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json", headers=language_headers(language))
