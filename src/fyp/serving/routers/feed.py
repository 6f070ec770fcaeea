from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from fyp.serving.dependencies import AppState, state

router = APIRouter(prefix="/v1/users", tags=["feed"])


@router.get("/{user_id}/feed")
async def feed(
    user_id: str,
    n: int = Query(10, ge=1, le=100, description="How many videos."),
    cursor: str | None = Query(None, description="next_cursor of the previous page."),
    debug: bool = Query(False, description="Include what each filter removed and why."),
    s: AppState = Depends(state),
) -> dict[str, Any]:
    """The next videos for the user, each with its score, source and reason.

    Learned only from the user's home region; videos on earlier pages never repeat."""
    return s.feed.feed(user_id, n=n, cursor=cursor).to_dict(debug=debug)
