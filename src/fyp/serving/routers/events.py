"""Event ingestion routes.

These are the hottest routes of the API, so they read the raw body and validate it
with pydantic's JSON validator directly, and answer with pre-encoded JSON: FastAPI's
dependency and encoder machinery would cost more than storing the event. The request
schemas are still published in OpenAPI.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, TypeAdapter

from fyp.access.guard import key_regions
from fyp.catalog.models import REGION_MARK
from fyp.events.ingest import Ingestor
from fyp.events.schema import EventIn
from fyp.serving.dependencies import AppState
from fyp.serving.errors import located
from fyp.serving.inputs import check_regions, enumerated, parse_json
from fyp.serving.openapi import BODY, answers, json_body
from fyp.serving.responses import BatchResult, EventResult

router = APIRouter(prefix="/v1/events", tags=["events"])
REGION_HEADER = "x-fyp-region"
REGION_FIELD = f"header.{REGION_HEADER}"
_REGION_PARAM = {
    "name": "X-Fyp-Region",
    "in": "header",
    "required": False,
    "schema": {"type": "string", REGION_MARK: True},
    "description": "Region the client believes the users live in: a user homed elsewhere "
    "is refused (403 `residency_violation`), an undeclared region is a 422.",
}


class EventBatchIn(BaseModel):
    """Items are validated one by one, so one bad event does not sink the batch. An
    unknown field beside ``events`` is refused, as on a single event (a misspelt option
    would otherwise be ignored)."""

    model_config = ConfigDict(extra="forbid")

    events: list[Any]


_BATCH = TypeAdapter(EventBatchIn)


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"parameters": [_REGION_PARAM], "requestBody": json_body(model)}


def _json(content: dict[str, Any], status: int) -> Response:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json")


_EVENT = TypeAdapter(EventIn)


def ingest_one(
    ingestor: Ingestor,
    body: bytes,
    content_type: str | None,
    region: str | None,
    allowed: Collection[str] | None,
) -> tuple[int, dict[str, Any]]:
    """One event as both its route and the fast path (``fyp.serving.fastpath``) answer
    it: 201 stored, 200 already stored, else the event's error is raised."""
    event = parse_json(body, content_type, _EVENT)
    check_regions(ingestor.deployment, REGION_FIELD, region)
    result = ingestor.ingest([event], region=region, allowed=allowed).results[0]
    if result.error is not None:
        raise located(result.error, "body")
    return 201 if result.status == "stored" else 200, result.to_dict()


EVENT_LIMITS = (
    "`validation_failed`: an event over the deployment's limits: a `watch_ms` over `[limits] "
    "max_watch_ms`, a `ts` more than `[limits] max_future_skew_s` ahead, before 2000 or "
    "past the region's retention limit."
)


@router.post(
    "",
    status_code=201,
    openapi_extra=_body_schema(EventIn),
    responses={
        201: {"model": EventResult, "description": "Stored."},
        200: {"model": EventResult, "description": "Duplicate: this event_id was already stored."},
        **answers(404, 409, *BODY, also={422: EVENT_LIMITS}),
    },
)
async def ingest_event(request: Request) -> Response:
    """Ingest one event: 201 when stored, 200 when this very event was already stored
    (a retry), 409 when its event_id already names a different event."""
    s: AppState = request.app.state.fyp
    headers = request.headers
    status, content = ingest_one(
        s.ingestor,
        await request.body(),
        headers.get("content-type"),
        headers.get(REGION_HEADER),
        key_regions(request),
    )
    return _json(content, status)


@router.post(
    "/batch",
    openapi_extra=_body_schema(EventBatchIn),
    responses=answers(*BODY, ok=BatchResult),
)
async def ingest_batch(request: Request) -> Response:
    """Ingest up to ``limits.max_batch`` events with one result per event, in order."""
    s: AppState = request.app.state.fyp
    batch = parse_json(await request.body(), request.headers.get("content-type"), _BATCH)
    region = request.headers.get(REGION_HEADER)
    check_regions(s.deployment, REGION_FIELD, region)
    result = s.ingestor.ingest(batch.events, region=region, allowed=key_regions(request))
    for path, each in enumerated("body.events", result.results):
        if each.error is not None:
            each.error = located(each.error, path)
    return _json(result.to_dict(), 200)
