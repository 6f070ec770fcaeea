"""The one place where errors become HTTP responses.

Every error response, including FastAPI's own (bad JSON, wrong types, unknown route),
has the body ``{"error": {"code", "message", "status", "details"}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fyp.errors import (
    FypError,
    InvalidRequest,
    Unauthenticated,
    ValidationFailed,
    error_body,
    http_status,
)

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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FypError)
    async def _fyp(_: Request, exc: FypError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(InvalidRequest("request body is not valid JSON"))
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in errors
        ]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:3])
        return error_response(ValidationFailed(f"invalid request: {summary}", problems=problems))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, FypError):  # raised while FastAPI read the body
            return error_response(exc.__cause__)
        if exc.status_code == 400:  # FastAPI could not read or decode the body
            return error_response(InvalidRequest(f"request body could not be read: {exc.detail}"))
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
