from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, status

from fyp.catalog.models import Video, VideoIn, VideoPatch
from fyp.serving.dependencies import AppState, state
from fyp.serving.inputs import JsonBodyRoute, check_regions
from fyp.serving.openapi import BODY, answers
from fyp.serving.responses import VideoDeletion

router = APIRouter(prefix="/v1/videos", tags=["videos"], route_class=JsonBodyRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Video,
    responses=answers(404, 409, *BODY),
)
async def create_video(body: VideoIn, s: AppState = Depends(state)) -> Video:
    """Publish a video to one or more regions' catalogues."""
    check_regions(s.deployment, "body.regions", body.regions)
    return s.catalog.create_video(body)


@router.get("/{video_id}", response_model=Video, responses=answers(404))
async def get_video(
    video_id: str, region: str | None = Query(None), s: AppState = Depends(state)
) -> Video:
    check_regions(s.deployment, "query.region", region)
    return s.catalog.get_video(video_id, region)


@router.patch("/{video_id}", response_model=Video, responses=answers(404, *BODY))
async def update_video(video_id: str, body: VideoPatch, s: AppState = Depends(state)) -> Video:
    check_regions(s.deployment, "body.regions", body.regions)
    return s.catalog.update_video(video_id, body)


@router.delete("/{video_id}", response_model=None, responses=answers(404, ok=VideoDeletion))
async def delete_video(video_id: str, s: AppState = Depends(state)) -> dict[str, Any]:
    return {"video_id": video_id, "deleted_from": s.catalog.delete_video(video_id)}
