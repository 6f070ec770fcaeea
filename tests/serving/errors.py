"""Shared assertion for the API's one error shape."""

from __future__ import annotations

from typing import Any

import httpx


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is ``status`` with body {"error": {code, message, status, details}}."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "status", "details"}
    assert error["code"] == code
    assert error["status"] == status
    return error
