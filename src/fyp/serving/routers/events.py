from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Response, status
from pydantic import BaseModel

from fyp.events.ingest import BatchResult
from fyp.events.schema import EventIn
from fyp.serving.dependencies import AppState, state

router = APIRouter(prefix="/v1/events", tags=["events"])
REGION_HEADER = Header(
    None,
    alias="X-Fyp-Region",
    description="Region the client believes the users live in; a mismatch is refused.",
)


class EventBatchIn(BaseModel):
    """Items are validated one by one, so one bad event does not sink the batch."""

    events: list[Any]


@router.post("", status_code=status.HTTP_201_CREATED)
async def ingest_event(
    body: EventIn,
    response: Response,
    s: AppState = Depends(state),
    x_fyp_region: str | None = REGION_HEADER,
) -> dict[str, Any]:
    """Ingest one event: 201 when stored, 200 when its event_id was already stored."""
    result = s.ingestor.ingest([body], region=x_fyp_region).results[0]
    if result.error is not None:
        raise result.error
    if result.status == "duplicate":
        response.status_code = status.HTTP_200_OK
    return result.to_dict()


@router.post("/batch")
async def ingest_batch(
    body: EventBatchIn, s: AppState = Depends(state), x_fyp_region: str | None = REGION_HEADER
) -> dict[str, Any]:
    """Ingest up to ``limits.max_batch`` events with one result per event, in order."""
    result: BatchResult = s.ingestor.ingest(body.events, region=x_fyp_region)
    return result.to_dict()
