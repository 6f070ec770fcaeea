"""The two hottest routes without the router: ``POST /v1/events`` (one event) and
``GET /v1/users/{id}/feed``.

A single event costs the store a few tens of microseconds, and a feed page served from
an order ranked ahead a few hundred; FastAPI's routing and request machinery around
them cost a large share of that. These pure ASGI layers sit just inside the access
check (which has already authenticated the key, checked the user's region and placed
the key in the scope) and answer exactly what the routes in ``fyp.serving.routers``
answer, with the same validation, service call and JSON error shape; every other
request goes on to the router, and the routes stay the documented (OpenAPI) contract.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qsl

from pydantic_core import to_json
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fyp.access.guard import PRINCIPAL
from fyp.errors import FypError, PayloadTooLarge, error_body, http_status
from fyp.events.ingest import Ingestor
from fyp.feed.service import DEFAULT_PAGE, MAX_PAGE, FeedService
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


class FeedFastPath:
    """``GET /v1/users/{id}/feed`` without the router, for the plain case only: at most
    ``n`` (digits, 1..100) and ``cursor``, each once. Anything else (``debug``, an
    invalid or repeated parameter, another method) goes on to the route in
    ``fyp.serving.routers.feed``, which validates and answers it."""

    def __init__(self, app: ASGIApp, feed: FeedService) -> None:
        self.app = app
        self.feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plain = scope["type"] == "http" and scope["method"] == "GET"
        match = _FEED_PATH.fullmatch(scope["path"]) if plain else None
        params = _plain_feed_params(scope.get("query_string", b"")) if match else None
        if match is None or params is None:
            await self.app(scope, receive, send)
            return
        n, cursor = params
        try:
            page = self.feed.feed(match.group(1), n=n, cursor=cursor).to_dict()
            await _respond(send, 200, page)
        except FypError as exc:
            if http_status(exc) >= 500:
                log.error("server error: %s", exc.message, extra={"details": exc.details})
            await _respond(send, http_status(exc), error_body(exc))


_FEED_PATH = re.compile(r"/v1/users/([^/]+)/feed")


def _plain_feed_params(query: bytes) -> tuple[int, str | None] | None:
    """``(n, cursor)`` when the query is plain enough for the fast path, else None."""
    n, cursor = DEFAULT_PAGE, None
    seen: set[str] = set()
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return None
        seen.add(name)
        if name == "n" and value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_PAGE:
            n = int(value)
        elif name == "cursor":
            cursor = value
        else:
            return None
    return n, cursor


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
    body = to_json(content)  # pydantic-core's encoder: compact UTF-8, a few times json's speed
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
