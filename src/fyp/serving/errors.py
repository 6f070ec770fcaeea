"""The one place where errors become HTTP responses.

Every error response, including FastAPI's own (bad JSON, wrong types, unknown route),
has the body ``{"error": {"code", "message", "status", "details"}}``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fyp.errors import (
    FypError,
    InvalidRequest,
    StorageError,
    Unauthenticated,
    ValidationFailed,
    error_body,
    http_status,
)
from fyp.storage.base import unavailable

log = logging.getLogger("fyp.serving")

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


_CHALLENGE = {"WWW-Authenticate": "Bearer"}
"""A 401 names the scheme to authenticate with (RFC 7235); ``X-Api-Key`` works as well."""


def failure(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, body and headers an error is answered with, logged if it is the
    server's: for the app's handlers below, the access check, and the routes answered
    outside the app's stack (``fyp.serving.fastpath``)."""
    if isinstance(exc, sqlite3.OperationalError) and unavailable(exc):
        # SQLite's errors of the storage itself (a full disk, a lock held past the busy
        # timeout, ...): 503 storage_error (retry later), not 500 internal_error
        log.error("storage unavailable: %s", exc)  # one line, not a traceback per request
        exc = StorageError(
            "the region's storage cannot take this request now (the server's log says why); "
            "retry later"
        )
    if isinstance(exc, FypError):
        if http_status(exc) >= 500:
            log.error("server error: %s", exc.message, extra={"details": exc.details})
    else:
        log.error("unexpected error", exc_info=exc)
    headers = _CHALLENGE if isinstance(exc, Unauthenticated) else {}
    return http_status(exc), error_body(exc), headers


def error_response(exc: BaseException) -> JSONResponse:
    """The JSON response for any exception."""
    status, body, headers = failure(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def method_not_allowed(method: str, allowed: Sequence[str]) -> JSONResponse:
    """405 ``method_not_allowed`` for a path served with other methods: ``Allow`` and
    ``details.allowed`` name every one of them (RFC 9110 asks for the header)."""
    body = {
        "error": {
            "code": _HTTP_CODES[405],
            "message": f"{method} is not allowed here; this path is served with "
            f"{', '.join(allowed)}",
            "status": 405,
            "details": {"allowed": list(allowed)},
        }
    }
    return JSONResponse(body, status_code=405, headers={"Allow": ", ".join(allowed)})


def invalid(errors: Sequence[Mapping[str, Any]], *root: str | int) -> FypError:
    """The error for pydantic's (or FastAPI's) validation errors, their ``loc`` under
    ``root``: 400 ``invalid_request`` when the body is not JSON at all, else 422."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidRequest("request body is not valid JSON")
    return failed([{"field": _path(*root, *e["loc"]), "problem": e["msg"]} for e in errors])


def failed(problems: list[dict[str, str]], **details: Any) -> ValidationFailed:
    """422 ``validation_failed`` listing each problem as ``{"field", "problem"}``, where
    ``field`` is the value's path from the request's root: ``body.<field>`` (list items
    by index: ``body.events.3.ts``), ``query.<name>``, ``path.<name>`` or
    ``header.<name>`` (lower case), as FastAPI names them."""
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:3])
    return ValidationFailed(f"invalid request: {summary}", problems=problems, **details)


def located(error: FypError, root: str) -> FypError:
    """``error``, judged on the part of the request at ``root`` (e.g. ``body.events.3``,
    by the ingestor), with its field paths from the request's root; a single ``field``
    in its details becomes the one problem. Rewrites the error in place."""
    details = error.details
    if isinstance(details.get("problems"), list):
        moved = [{**p, "field": _path(root, p.get("field"))} for p in details["problems"]]
        error.details = {**details, "problems": moved}
    elif isinstance(error, ValidationFailed) and "field" in details:
        rest = {k: v for k, v in details.items() if k != "field"}
        problem = {"field": _path(root, details["field"]), "problem": error.message}
        error.details = {"problems": [problem], **rest}
    return error


def _path(*parts: object) -> str:
    return ".".join(str(p) for p in parts if p not in (None, ""))


def install_error_handlers(app: FastAPI) -> None:
    from fyp.access.guard import route_path  # the guard answers its errors with ours
    from fyp.access.routes import RouteIndex

    routes = RouteIndex(app)  # built at the first 405, with every route there

    @app.exception_handler(FypError)
    async def _fyp(_: Request, exc: FypError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(invalid(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, FypError):  # raised while FastAPI read the body
            return error_response(exc.__cause__)
        if exc.status_code == 400:  # FastAPI could not read or decode the body
            return error_response(InvalidRequest(f"request body could not be read: {exc.detail}"))
        if exc.status_code == 405:  # the router's, had fyp.serving.methods let one through
            return method_not_allowed(request.method, routes.allowed(route_path(request.scope)))
        body = {
            "error": {
                "code": _HTTP_CODES.get(exc.status_code, "http_error"),
                "message": str(exc.detail),
                "status": exc.status_code,
                "details": {},
            }
        }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)
