"""``POST /v1/events`` without the router: the single-event route is the hottest one.

A single event costs the store a few tens of microseconds; FastAPI's routing and request
machinery around it cost several times that. This pure ASGI layer sits just inside the
access check (which has already authenticated the key and placed its regions in the
scope) and answers exactly what the route in ``fyp.serving.routers.events`` answers,
with the same validation, ingestion call and JSON error shape; every other request goes
on to the router, and the route itself stays the documented (OpenAPI) contract.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fyp.access.guard import PRINCIPAL
from fyp.errors import FypError, PayloadTooLarge, error_body, http_status
from fyp.events.ingest import Ingestor
from fyp.serving.routers.events import _EVENT, REGION_HEADER, _parse

PATH = "/v1/events"
MAX_BODY = 1 << 20  # one event is a few hundred bytes; a batch has its own route
_JSON = [(b"content-type", b"application/json")]
log = logging.getLogger("fyp.serving")


class SingleEventFastPath:
    def __init__(self, app: ASGIApp, ingestor: Ingestor) -> None:
        self.app = app
        self.ingestor = ingestor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        try:
            raw = await _body(receive)
            event = _parse(raw, _EVENT)
            region = None
            for name, value in scope["headers"]:
                if name == REGION_HEADER.encode():
                    region = value.decode("latin-1")
            principal = scope.get(PRINCIPAL)
            allowed = None if principal is None or principal.all_regions else principal.regions
            result = self.ingestor.ingest([event], region=region, allowed=allowed).results[0]
            if result.error is not None:
                raise result.error
            await _respond(send, 201 if result.status == "stored" else 200, result.to_dict())
        except FypError as exc:
            if http_status(exc) >= 500:  # logged as the app's FypError handler does
                log.error("server error: %s", exc.message, extra={"details": exc.details})
            await _respond(send, http_status(exc), error_body(exc))


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"a single event must be under {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
