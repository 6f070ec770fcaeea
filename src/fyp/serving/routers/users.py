from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from fyp.access.guard import REASON_HEADER, principal
from fyp.catalog.models import MoveIn, User, UserIn, UserPatch
from fyp.catalog.service import API_ACTOR
from fyp.errors import InvalidRequest
from fyp.serving.dependencies import AppState, state
from fyp.serving.inputs import JsonBodyRoute, check_regions
from fyp.serving.openapi import BODY, answers
from fyp.serving.responses import UserErasure, UserEvents, UserExport, UserMove

router = APIRouter(prefix="/v1/users", tags=["users"], route_class=JsonBodyRoute)


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=User, responses=answers(409, *BODY)
)
async def create_user(body: UserIn, request: Request, s: AppState = Depends(state)) -> User:
    """Create a user in their home region (fixed for life)."""
    check_regions(s.deployment, "body.home_region", body.home_region)
    return s.catalog.create_user(body, _actor(request))


@router.get("/{user_id}", response_model=User, responses=answers(404))
async def get_user(user_id: str, s: AppState = Depends(state)) -> User:
    return s.catalog.get_user(user_id)


@router.patch("/{user_id}", response_model=User, responses=answers(404, *BODY))
async def update_user(
    user_id: str, body: UserPatch, request: Request, s: AppState = Depends(state)
) -> User:
    """Change the user's profile; a change of ``consents`` is recorded in their home
    region's audit log (``consent.change``)."""
    return s.catalog.update_user(user_id, body, _actor(request))


def _actor(request: Request) -> str:
    """The caller as the audit log names them."""
    caller = principal(request)
    return API_ACTOR if caller is None else f"key:{caller.key_id}"


@router.delete("/{user_id}", response_model=None, responses=answers(404, ok=UserErasure))
async def delete_user(
    user_id: str, request: Request, s: AppState = Depends(state)
) -> dict[str, Any]:
    """Erase the user: profile, events, labels, served log, uploads, their vectors in
    model artifacts (the share in aggregates by a retrain before the receipt's deadline).
    Returns a signed deletion receipt."""
    caller = principal(request)
    actor = None if caller is None else f"key:{caller.key_id}"  # the audit log names them
    receipt = await run_in_threadpool(s.catalog.erase_user, user_id, actor)  # rewrites artifacts
    return {"user_id": user_id, "deleted": receipt.removed, "receipt": receipt.to_dict()}


@router.post(
    "/{user_id}/move",
    response_model=None,
    responses=answers(404, 409, *BODY, ok=UserMove),
)
async def move_user(
    user_id: str,
    body: MoveIn,
    request: Request,
    s: AppState = Depends(state),
    reason: str | None = Header(
        None,
        alias=REASON_HEADER,
        max_length=500,
        description="Why the user moves (required, else 400): kept in the audit logs of "
        "both regions.",
    ),
) -> dict[str, Any]:
    """Move the user's home region to ``to``: everything about them is copied there and
    removed from the region they leave (as completely as an erasure), under the source
    region's policy (``[regions.R.policy.moves] allow_to``; else 403 ``move_not_allowed``).
    Needs ``X-Fyp-Reason`` (kept in both regions' audit logs) and a key for both regions.
    Returns the signed move receipt; an unfinished move of the user is finished."""
    from fyp.sovereignty.move import Mover

    check_regions(s.deployment, "body.to", body.to)
    why = (reason or "").strip()
    if not why:
        raise InvalidRequest(
            f"moving a user needs a reason: send the {REASON_HEADER} header",
            header=REASON_HEADER,
        )
    caller = principal(request)
    actor = "api" if caller is None else f"key:{caller.key_id}"
    receipt = await run_in_threadpool(Mover(s.deployment).move, user_id, body.to, why, actor)
    return {"user_id": user_id, "receipt": receipt.to_dict()}


@router.get("/{user_id}/export", responses=answers(404, ok=UserExport))
async def export_user(
    request: Request, user_id: str, s: AppState = Depends(state)
) -> StreamingResponse:
    """Everything held about the user, as one JSON document streamed in sections. A key
    scoped to some regions reads only those (the user's uploads and appeals elsewhere
    are left out: `manifest.regions_not_read`); a key for every region exports all."""
    from fyp.sovereignty.export import UserExport

    key = principal(request)
    regions = None if key is None or key.all_regions else key.regions
    export = UserExport(s.deployment, user_id, regions)  # 404 before the stream starts
    return StreamingResponse(
        export.chunks(),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="{user_id}-export.json"'},
    )


@router.get("/{user_id}/events", response_model=None, responses=answers(404, ok=UserEvents))
async def user_events(
    user_id: str, limit: int = Query(50, ge=1, le=1000), s: AppState = Depends(state)
) -> dict[str, Any]:
    """The user's latest events, newest first, read from their home region."""
    region = s.deployment.homed_region(user_id)  # a stale route is located again
    events = s.deployment.store(region).user_events(user_id, limit)
    return {"user_id": user_id, "region": region, "events": [e._asdict() for e in events]}
