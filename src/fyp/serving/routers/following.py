"""Who a user follows: ``/v1/users/{user_id}/following``, kept in their home region.

A follow changes the user's feed at once (the "new from a creator you follow" source,
the scorer's follow term); ``follow`` and ``unfollow`` events from a video change the
same list (:mod:`fyp.catalog.follows`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response, status

from fyp.catalog.follows import MAX_PAGE, Following
from fyp.catalog.models import Id
from fyp.serving.dependencies import AppState, state
from fyp.serving.inputs import JsonBodyRoute
from fyp.serving.openapi import answers
from fyp.serving.responses import FollowAnswer, FollowingPage

router = APIRouter(prefix="/v1/users", tags=["following"], route_class=JsonBodyRoute)


@router.get("/{user_id}/following", response_model=None, responses=answers(404, ok=FollowingPage))
async def following(
    user_id: str,
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    cursor: str | None = Query(None, max_length=512),
    s: AppState = Depends(state),
) -> dict[str, Any]:
    """The creators the user follows, newest follow first."""
    region, follows, next_cursor = Following(s.deployment).page(user_id, limit, cursor)
    return {
        "user_id": user_id,
        "region": region,
        "following": [{"creator_id": f.creator_id, "since_ms": f.since_ms} for f in follows],
        "next_cursor": next_cursor,
    }


@router.put(
    "/{user_id}/following/{creator_id}",
    status_code=status.HTTP_201_CREATED,
    response_model=None,
    responses={
        201: {"model": FollowAnswer, "description": "Followed by this call."},
        200: {"model": FollowAnswer, "description": "Already followed: nothing changed."},
        **answers(404),
    },
)
async def follow(
    user_id: str, creator_id: Id, response: Response, s: AppState = Depends(state)
) -> dict[str, Any]:
    """Follow ``creator_id``: 201 when this call made the follow, 200 when the user
    already followed them (a retry changes nothing). The creator must have a video
    published in the user's home region (else 404 ``unknown_creator``)."""
    made, created = Following(s.deployment).follow(user_id, creator_id)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return {
        "user_id": user_id,
        "creator_id": made.creator_id,
        "since_ms": made.since_ms,
        "following": True,
    }


@router.delete(
    "/{user_id}/following/{creator_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=answers(404),
)
async def unfollow(user_id: str, creator_id: Id, s: AppState = Depends(state)) -> Response:
    """Stop following ``creator_id``; 204 whether or not the user followed them (a retry
    changes nothing)."""
    Following(s.deployment).unfollow(user_id, creator_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
