"""Whom a user follows and has blocked, kept in their home region
(``/v1/users/{user_id}/following`` and ``/blocked``), and the Following tab,
``/v1/users/{user_id}/following/feed``: the followed creators' videos, newest first.

A follow changes the user's feed at once (the "new from a creator you follow" source,
the scorer's follow term) and their Following tab; ``follow`` and ``unfollow`` events
from a video change the same list (:mod:`fyp.catalog.follows`). A block keeps the
creator out of the user's feeds until unblocked, and ends a follow
(:mod:`fyp.catalog.blocks`).
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status

from fyp.access.routes import any_id
from fyp.catalog.blocks import Blocking
from fyp.catalog.follows import MAX_PAGE, CreatorList, Follow, Following
from fyp.catalog.models import Id
from fyp.feed import following_tab
from fyp.feed.reasons import asked_lang
from fyp.serving.dependencies import AppState, state
from fyp.serving.inputs import JsonBodyRoute
from fyp.serving.openapi import BAD_CURSOR, BAD_LANG, answers
from fyp.serving.responses import (
    BlockAnswer,
    BlockedPage,
    FollowAnswer,
    FollowingPage,
    FollowingTabPage,
)
from fyp.serving.routers.feed import (
    ACCEPT_LANGUAGE_DOC,
    INCLUDE_DOC,
    LANG_DOC,
    language_headers,
    with_videos,
)

router = APIRouter(prefix="/v1/users", tags=["following"], route_class=JsonBodyRoute)
BLOCKING: list[str | Enum] = ["blocking"]


@router.get(
    "/{user_id}/following",
    response_model=None,
    responses=answers(404, ok=FollowingPage, also={400: BAD_CURSOR}),
)
async def following(
    user_id: str,
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    cursor: str | None = Query(None, max_length=512),
    s: AppState = Depends(state),
) -> dict[str, Any]:
    """The creators the user follows, newest follow first."""
    return _page(Following(s.deployment), "following", user_id, limit, cursor)


def _page(
    rows: CreatorList, name: str, user_id: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    region, found, next_cursor = rows.page(user_id, limit, cursor)
    return {
        "user_id": user_id,
        "region": region,
        name: [{"creator_id": f.creator_id, "since_ms": f.since_ms} for f in found],
        "next_cursor": next_cursor,
    }


def _made(
    response: Response, user_id: str, made: Follow, created: bool, flag: str
) -> dict[str, Any]:
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return {
        "user_id": user_id,
        "creator_id": made.creator_id,
        "since_ms": made.since_ms,
        flag: True,
    }


@router.get(
    "/{user_id}/following/feed",
    response_model=None,
    responses=answers(404, 503, ok=FollowingTabPage, also={400: BAD_CURSOR, 422: BAD_LANG}),
)
async def following_feed(
    user_id: str,
    n: int = Query(
        following_tab.DEFAULT_PAGE, ge=1, le=following_tab.MAX_PAGE, description="How many videos."
    ),
    cursor: str | None = Query(
        None, max_length=512, description="next_cursor of the previous page."
    ),
    include: Literal["video"] | None = Query(None, description=INCLUDE_DOC),
    lang: str | None = Query(None, description=LANG_DOC),
    accept_language: str | None = Header(None, description=ACCEPT_LANGUAGE_DOC),
    s: AppState = Depends(state),
) -> Response:
    """The Following tab: the videos of the creators the user follows, newest first
    (`created_at_ms`, then `video_id`), from their home region's catalogue; not ranked,
    not based on profiling (the same with `personalised_feed` consent off), and not
    recorded as seen by For You. Only what the user may watch there: approved,
    `restricted` (kept out of For You, shown to followers), `age_restricted` for users
    certainly 18, and only from creators who pass the creator rules; never pending,
    rejected or blocked. A page ends where the moderation check failed (503 if nothing
    could be shown). Pages never shift or repeat when new videos arrive."""
    asked = asked_lang(lang, accept_language)  # 422 before any read
    page = following_tab.FollowingTab(s.deployment).page(user_id, n, cursor)
    language = page.language(asked)
    answer = page.to_dict(language)
    if include == "video":
        with_videos(answer["items"], s.deployment.store(page.region))
    body = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
    s.metrics.tab_page(page.region, len(page.items))
    return Response(body, media_type="application/json", headers=language_headers(language))


@router.put(
    "/{user_id}/following/{creator_id}",
    status_code=status.HTTP_201_CREATED,
    response_model=None,
    responses={
        201: {"model": FollowAnswer, "description": "Followed by this call."},
        200: {"model": FollowAnswer, "description": "Already followed: nothing changed."},
        **answers(404, 409),
    },
)
@any_id  # the creator `feed` too: a PUT of .../following/feed is not the Following tab's
async def follow(
    user_id: str, creator_id: Id, response: Response, s: AppState = Depends(state)
) -> dict[str, Any]:
    """Follow ``creator_id``: 201 when this call made the follow, 200 when the user
    already followed them (a retry changes nothing). The creator must have a video
    published in the user's home region (else 404 ``unknown_creator``); one the user
    blocked is 409 ``conflict`` until unblocked. Any creator id, ``feed`` too: the
    Following tab is the GET of that path, a follow its PUT."""
    made, created = Following(s.deployment).follow(user_id, creator_id)
    return _made(response, user_id, made, created, "following")


@router.delete(
    "/{user_id}/following/{creator_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=answers(404),
)
@any_id
async def unfollow(user_id: str, creator_id: Id, s: AppState = Depends(state)) -> Response:
    """Stop following ``creator_id``; 204 whether or not the user followed them (a retry
    changes nothing)."""
    Following(s.deployment).unfollow(user_id, creator_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{user_id}/blocked",
    response_model=None,
    responses=answers(404, ok=BlockedPage, also={400: BAD_CURSOR}),
    tags=BLOCKING,
)
async def blocked(
    user_id: str,
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    cursor: str | None = Query(None, max_length=512),
    s: AppState = Depends(state),
) -> dict[str, Any]:
    """The creators the user blocked, newest block first."""
    return _page(Blocking(s.deployment), "blocked", user_id, limit, cursor)


@router.put(
    "/{user_id}/blocked/{creator_id}",
    status_code=status.HTTP_201_CREATED,
    response_model=None,
    responses={
        201: {"model": BlockAnswer, "description": "Blocked by this call."},
        200: {"model": BlockAnswer, "description": "Already blocked: nothing changed."},
        **answers(404),
    },
    tags=BLOCKING,
)
@any_id
async def block(
    user_id: str, creator_id: Id, response: Response, s: AppState = Depends(state)
) -> dict[str, Any]:
    """Block ``creator_id``: none of their videos reaches the user's feeds until unblocked,
    and a follow of them ends. 201 when this call made the block, 200 when it was there.
    The creator must have a video published in the user's home region (else 404
    ``unknown_creator``)."""
    made, created = Blocking(s.deployment).block(user_id, creator_id)
    return _made(response, user_id, made, created, "blocked")


@router.delete(
    "/{user_id}/blocked/{creator_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=answers(404),
    tags=BLOCKING,
)
@any_id
async def unblock(user_id: str, creator_id: Id, s: AppState = Depends(state)) -> Response:
    """Unblock ``creator_id``; 204 whether or not the user had blocked them."""
    Blocking(s.deployment).unblock(user_id, creator_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
