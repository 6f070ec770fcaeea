"""Event ingestion routes.

These are the hottest routes of the API, so they read the raw body and validate it
with pydantic's JSON validator directly, and answer with pre-encoded JSON: FastAPI's
dependency and encoder machinery would cost more than storing the event. The request
schemas are still published in OpenAPI.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from fyp.access.guard import key_regions
from fyp.errors import InvalidRequest, ValidationFailed
from fyp.events.schema import EventIn
from fyp.serving.dependencies import AppState

M = TypeVar("M", bound=BaseModel)
router = APIRouter(prefix="/v1/events", tags=["events"])
REGION_HEADER = "x-fyp-region"
_REGION_PARAM = {
    "name": "X-Fyp-Region",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "Region the client believes the users live in; a mismatch is refused.",
}


class EventBatchIn(BaseModel):
    """Items are validated one by one, so one bad event does not sink the batch. An
    unknown field beside ``events`` is refused, as on a single event (a misspelt option
    would otherwise be ignored)."""

    model_config = ConfigDict(extra="forbid")

    events: list[Any]


_BATCH = TypeAdapter(EventBatchIn)


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "parameters": [_REGION_PARAM],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        },
    }


def _json(content: dict[str, Any], status: int) -> Response:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json")


def _parse(raw: bytes, adapter: TypeAdapter[M]) -> M:
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidRequest("request body is not valid JSON") from None
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field'] or 'body'}: {p['problem']}" for p in problems[:3])
        raise ValidationFailed(f"invalid request: {summary}", problems=problems) from None


_EVENT = TypeAdapter(EventIn)


@router.post(
    "",
    status_code=201,
    openapi_extra=_body_schema(EventIn),
    responses={200: {"description": "Duplicate: this event_id was already stored."}},
)
async def ingest_event(request: Request) -> Response:
    """Ingest one event: 201 when stored, 200 when its event_id was already stored."""
    s: AppState = request.app.state.fyp
    event = _parse(await request.body(), _EVENT)
    result = s.ingestor.ingest(
        [event], region=request.headers.get(REGION_HEADER), allowed=key_regions(request)
    ).results[0]
    if result.error is not None:
        raise result.error
    return _json(result.to_dict(), 201 if result.status == "stored" else 200)


@router.post("/batch", openapi_extra=_body_schema(EventBatchIn))
async def ingest_batch(request: Request) -> Response:
    """Ingest up to ``limits.max_batch`` events with one result per event, in order."""
    s: AppState = request.app.state.fyp
    batch = _parse(await request.body(), _BATCH)
    result = s.ingestor.ingest(
        batch.events, region=request.headers.get(REGION_HEADER), allowed=key_regions(request)
    )
    return _json(result.to_dict(), 200)
