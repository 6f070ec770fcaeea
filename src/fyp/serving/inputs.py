"""Checks every JSON route makes on what a request sends, the same on the fast path.

- ``Content-Type`` must be ``application/json`` or ``application/*+json``, with no
  ``charset`` but UTF-8; anything else is 415 ``unsupported_media_type`` (``curl -d``
  without ``-H 'content-type: application/json'`` sends a form). A body without a
  Content-Type is read as JSON: the key in a header, not a cookie, already keeps
  browsers' cross-site forms out.
- An empty body is 400 ``invalid_request``, as a body that is not JSON is.
- Text holding a NUL character (U+0000), in a body (keys too) or a path parameter
  (``fyp.access.guard``), is 422 ``validation_failed`` naming it: PostgreSQL cannot
  store or even look one up (it was a 500 there), so no backend takes one. (An event's
  fields take none by their patterns: a batch rejects that event alone.)
- A region named in a body, a query or a header (``home_region``, ``regions``,
  ``region``, ``X-Fyp-Region``: the event routes' claim, which no other route reads or
  checks) must be one the deployment declares, else 422
  ``validation_failed`` naming the field: a 404 ``unknown_region`` is only for a region
  in the URL's path, whose resource then does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError

from fyp.errors import InvalidRequest, UnsupportedMediaType
from fyp.regions.deployment import Deployment
from fyp.serving.errors import failed, invalid

T = TypeVar("T")
JSON_TYPES = ("application/json", "application/*+json")


def check_json(content_type: str | None, body: bytes) -> None:
    """Refuse a body not declared as JSON (415) or empty (400)."""
    if content_type and content_type != "application/json" and not _is_json(content_type):
        raise UnsupportedMediaType(
            f"Content-Type {content_type[:100]!r} is not supported: send the body as JSON "
            "with 'Content-Type: application/json'",
            content_type=content_type[:100],
            accepted=list(JSON_TYPES),
        )
    if not body:
        raise InvalidRequest("request body is empty: send a JSON object")


_NUL_ESCAPE = b"\\u0000"
NUL_PROBLEM = "may not contain a NUL character (U+0000)"


def _refuse_nul_in_json(body: bytes) -> None:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return  # not JSON: FastAPI's reading answers 400
    refuse_nul(parsed, "body")


def refuse_nul(value: Any, root: str) -> None:
    """422 naming each text in ``value`` (a dict's keys too, by their path under
    ``root``) that holds a NUL character."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(value, root)]
    while stack and len(found) < 20:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                found.append(path)
        elif isinstance(node, dict):
            for key, item in node.items():
                named = f"{path}.{key}".replace("\x00", "\\u0000")  # printable
                if "\x00" in key:
                    found.append(named)
                stack.append((item, named))
        elif isinstance(node, list):
            stack.extend((item, f"{path}.{i}") for i, item in enumerate(node))
    if found:
        raise failed([{"field": f, "problem": NUL_PROBLEM} for f in sorted(found)])


def _is_json(content_type: str) -> bool:
    media, *params = content_type.split(";")
    kind, _, subtype = media.strip().lower().partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return False
    for param in params:
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            return False
    return True


def parse_json(body: bytes, content_type: str | None, adapter: TypeAdapter[T]) -> T:
    """The body, checked (:func:`check_json`) and validated; problems under ``body``."""
    check_json(content_type, body)
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        raise invalid(exc.errors(), "body") from None


def check_regions(deployment: Deployment, field: str, named: str | Sequence[str] | None) -> None:
    """422 naming ``field`` (``field.i`` for a list's item) for an undeclared region."""
    if named is None:
        return
    declared = deployment.config.regions
    pairs = [(field, named)] if isinstance(named, str) else enumerated(field, named)
    problems = [
        {"field": f, "problem": f"region {r!r} is not declared in this deployment"}
        for f, r in pairs
        if r not in declared
    ]
    if problems:
        raise failed(problems, regions=sorted(declared))


def enumerated(field: str, values: Sequence[T]) -> list[tuple[str, T]]:
    """Each item of a list with its path (``field.0``, ``field.1``, ...)."""
    return [(f"{field}.{i}", v) for i, v in enumerate(values)]


class JsonBodyRoute(APIRoute):
    """A route whose JSON body gets :func:`check_json` before FastAPI reads it, so a
    form or text body is 415 and an empty one 400 here too, not 422 "Input should be a
    valid dictionary". Routes without a body are left as they are."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            body = await request.body()
            check_json(request.headers.get("content-type"), body)
            if _NUL_ESCAPE in body:  # JSON escapes a NUL; a raw one is not JSON (400)
                _refuse_nul_in_json(body)
            return await handler(request)

        return checked
