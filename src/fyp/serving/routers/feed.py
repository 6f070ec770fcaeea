"""The For You feed route. Like the event routes, it answers with pre-encoded JSON:
FastAPI's response encoder would cost a noticeable share of a feed request."""

from __future__ import annotations

import json

from fastapi import APIRouter, Query, Request, Response

from fyp.feed.service import DEFAULT_PAGE, MAX_PAGE
from fyp.serving.dependencies import AppState
from fyp.serving.openapi import answers
from fyp.serving.responses import FeedPage

router = APIRouter(prefix="/v1/users", tags=["feed"])


@router.get("/{user_id}/feed", responses=answers(404, 503, ok=FeedPage))
async def feed(
    request: Request,
    user_id: str,
    n: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="How many videos."),
    cursor: str | None = Query(None, description="next_cursor of the previous page."),
    debug: bool = Query(False, description="Include what each filter removed and why."),
) -> Response:
    """The next videos for the user, each with its score, source and reason.

    Learned only from the user's home region; videos on earlier pages never repeat."""
    s: AppState = request.app.state.fyp
    page = s.feed.feed(user_id, n=n, cursor=cursor, debug=debug)
    s.metrics.page(page.region, page.items)
    body = json.dumps(page.to_dict(debug=debug), ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")
