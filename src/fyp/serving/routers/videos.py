from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, status

from fyp.access.guard import principal
from fyp.access.keys import OPERATOR_ROLES
from fyp.catalog.models import Id, Region, Video, VideoIn, VideoPatch
from fyp.errors import UnknownVideo
from fyp.feed.watch import find_viewer, link_region, may_watch
from fyp.serving.dependencies import AppState, state
from fyp.serving.errors import failed
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


VIEWER_DOC = (
    "The user the app shows the video to. A `feed` key needs it for an `age_restricted` "
    "video (served only if they are certainly 18: else 403 `age_restricted`), and then "
    "the video is judged in their home region, which the key must reach (else 403). "
    "Other roles' reads (operators, ingest) ignore it."
)


@router.get("/{video_id}", response_model=Video, responses=answers(404, 503))
async def get_video(
    request: Request,
    video_id: str,
    region: Region | None = Query(None),
    viewer_id: Id | None = Query(None, description=VIEWER_DOC),
    s: AppState = Depends(state),
) -> Video:
    """A video by link. A feed key (the app showing videos to people) gets only what the
    viewer may watch (:mod:`fyp.feed.watch`, the Following tab's rule): approved or
    `restricted` ("never in For You, viewable by link") with no viewer named;
    `age_restricted` only with a `viewer_id` certainly 18, judged in their home region;
    never pending, rejected or blocked, nor anything of a creator who fails the creator
    rules, nor a video of a creator the viewer blocked or who blocked the viewer.
    Refused: 403 `age_restricted` when only the viewer's age (or naming none)
    bars it, so the app can show an "age-restricted" screen (the rating is no secret:
    any adult may fetch it); 404 `unknown_video` for every other bar, as for no video,
    so the answer says nothing of what moderation found or of a creator's age; 503 when
    the check failed (nothing is shown unchecked). A key with the feed role gets this
    rule whatever other service roles it has (an app's one key for feeds and events
    included); operator keys (admin, moderator, auditor) and ingest-only keys read every
    video, as does an app mounting this router without fyp's access check (no key on the
    request; `fyp serve` always has one): they ignore `viewer_id`."""
    check_regions(s.deployment, "query.region", region)
    key = principal(request)
    if key is None or "feed" not in key.roles or key.roles & OPERATOR_ROLES:
        return s.catalog.get_video(video_id, region)
    d = s.deployment
    if viewer_id is None:
        held = [region] if region else d.locate_video(video_id)
        regions = [r for r in held if key.all_regions or r in key.regions]
        adult = False  # unknown age: never certainly 18
    else:
        viewer = find_viewer(d, viewer_id)  # 404 unknown_user; 403 outside the key's regions
        if region is not None and region != viewer.region:
            raise failed(
                [
                    {
                        "field": "query.region",
                        "problem": f"a video for viewer {viewer_id!r} is judged in their "
                        f"home region {viewer.region!r}: name that region, or none",
                    }
                ]
            )
        regions, adult = [viewer.region], viewer.adult
    shown = link_region(may_watch(d), video_id, regions, adult, viewer_id)
    video = s.catalog.get_video(video_id, shown)
    if viewer_id is not None and video.creator_id in d.store(shown).blocked_creators(viewer_id):
        # a block either way (fyp.catalog.blocks): as for no video, saying nothing of who
        raise UnknownVideo(f"no video {video_id!r}", video_id=video_id)
    return video


@router.patch("/{video_id}", response_model=Video, responses=answers(404, *BODY))
async def update_video(video_id: str, body: VideoPatch, s: AppState = Depends(state)) -> Video:
    check_regions(s.deployment, "body.regions", body.regions)
    return s.catalog.update_video(video_id, body)


@router.delete("/{video_id}", response_model=None, responses=answers(404, ok=VideoDeletion))
async def delete_video(video_id: str, s: AppState = Depends(state)) -> dict[str, Any]:
    return {"video_id": video_id, "deleted_from": s.catalog.delete_video(video_id)}
