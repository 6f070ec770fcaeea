from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, status

from fyp.access.guard import principal
from fyp.catalog.models import Region, Video, VideoIn, VideoPatch
from fyp.errors import UnknownVideo
from fyp.moderation.models import State
from fyp.moderation.service import cell
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
    request: Request,
    video_id: str,
    region: Region | None = Query(None),
    s: AppState = Depends(state),
) -> Video:
    """A feed key (the app showing videos to people) gets only a video that is
    approved, restricted (kept out of For You, viewable by link) or age-restricted in
    one of its regions: a rejected caption is not served to a client by another route."""
    check_regions(s.deployment, "query.region", region)
    video = s.catalog.get_video(video_id, region)
    key = principal(request)
    if key is not None and key.roles <= {"feed"}:
        shown = (State.approved.value, State.restricted.value, State.age_restricted.value)
        regions = [r for r in video.regions if key.all_regions or r in key.regions]
        if not any(
            cell(s.deployment.store(r)).mod.states([video_id]).get(video_id, ("",))[0] in shown
            for r in regions
        ):
            raise UnknownVideo(f"no video {video_id!r}", video_id=video_id)
    return video


@router.patch("/{video_id}", response_model=Video, responses=answers(404, *BODY))
async def update_video(video_id: str, body: VideoPatch, s: AppState = Depends(state)) -> Video:
    check_regions(s.deployment, "body.regions", body.regions)
    return s.catalog.update_video(video_id, body)


@router.delete("/{video_id}", response_model=None, responses=answers(404, ok=VideoDeletion))
async def delete_video(video_id: str, s: AppState = Depends(state)) -> dict[str, Any]:
    return {"video_id": video_id, "deleted_from": s.catalog.delete_video(video_id)}
