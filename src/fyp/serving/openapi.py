"""The OpenAPI document says what the server does: its error body, the errors each
route can answer, the bodies of routes that encode their own answers, and (from
``fyp.access``) who may call what.

FastAPI would document every route's 422 as its own ``{"detail": [...]}``; each route
here lists its errors with :func:`answers` instead, all with :class:`ErrorBody`, so that
default never appears. Routes that read their body themselves name it with
:func:`json_body`, whose model joins ``components`` (pydantic's ``$defs`` would not
resolve from inside an operation).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from fyp.access.guard import document_access
from fyp.access.routes import taken_literals
from fyp.catalog.models import REGION_MARK
from fyp.serving.inputs import JSON_TYPES
from fyp.serving.responses import ErrorBody

REF = "#/components/schemas/{model}"
AUTHED = (400, 401, 403, 422)
"""What any route that needs a key can answer."""
BODY = (413, 415)
"""What a route that reads a JSON body can answer besides."""

_MEANING = {
    400: "`invalid_request`: the body is not JSON or is empty, a parameter is malformed, "
    "or an operator's read of a user's data lacks `X-Fyp-Reason`.",
    401: "`unauthenticated`: the API key is missing, malformed, unknown or revoked.",
    403: "`forbidden`: the key lacks the route's role, or a region the request touches "
    "(`residency_violation`: the data would leave its home region; `age_restricted`: an "
    "18+ video asked for by link without a viewer certainly 18).",
    404: "The resource the URL names does not exist (`unknown_user`, `unknown_video`, "
    "`unknown_region`, `unknown_job`, `unknown_creator`).",
    409: "`already_exists`: the id is taken, or the state changed under the request.",
    413: "`payload_too_large`: the body or the batch is over the configured limit.",
    415: "`unsupported_media_type`: the body is not declared as JSON "
    f"({', '.join(JSON_TYPES)}, UTF-8); a body without a Content-Type is read as JSON.",
    422: "`validation_failed`: well-formed but invalid values (an undeclared region "
    "too, or text holding a NUL character, U+0000); `details.problems` names each field "
    "by its path from the request's root.",
    503: "`storage_error` or `model_unavailable`: the server cannot answer now.",
}
_CHALLENGE = {
    "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}},
}
_BODIES: dict[str, type[BaseModel]] = {}


BAD_CURSOR = (
    "`invalid_request`: a `cursor` that is not a `next_cursor` this route gave "
    '(`details` is `{"field": "cursor"}` on every paged route).'
)
BAD_LANG = (
    "`validation_failed`: a `lang` that falls back to no supported language "
    "(`details.supported` lists them)."
)
"""What a route that pages with a cursor, or renders in a language, refuses besides."""


def answers(
    *statuses: int,
    ok: type[BaseModel] | None = None,
    also: dict[int, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the errors of :data:`AUTHED` and ``statuses``, each an
    :class:`ErrorBody`, and ``ok``, the 200 body of a route that builds its own.
    ``also``: what this route refuses with a status beyond its general meaning (an
    unreadable cursor, an unsupported language), so the document names it."""
    out: dict[int | str, dict[str, Any]] = {} if ok is None else {200: {"model": ok}}
    extra = also or {}
    for status in sorted({*AUTHED, *statuses, *extra}):
        meaning = _MEANING[status]
        if status in extra:
            meaning = f"{meaning} On this route also: {extra[status]}"
        out[status] = {"model": ErrorBody, "description": meaning}
    out[401]["headers"] = _CHALLENGE
    return out


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``requestBody`` of a route that validates its body itself."""
    _BODIES[model.__name__] = model
    schema = {"$ref": REF.format(model=model.__name__)}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def install_openapi(app: FastAPI) -> None:
    """Build the app's document once, on first request, with everything above."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            if _BODIES:
                pairs = [(m, "validation") for m in _BODIES.values()]
                _, defs = models_json_schema(pairs, ref_template=REF)  # type: ignore[arg-type]
                for name, definition in defs.get("$defs", {}).items():
                    components.setdefault(name, definition)
                schema["components"]["schemas"] = dict(sorted(components.items()))
            document_access(schema)
            _list_regions(schema, list(app.state.fyp.deployment.config.regions))
            _declare_taken_literals(schema, app)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare_taken_literals(schema: dict[str, Any], app: FastAPI) -> None:
    """Declare under a concrete path the methods a route taking any id serves on it
    (``fyp.access.routes.taken_literals``): OpenAPI matches ``.../following/feed`` before
    ``.../following/{creator_id}``, so a client generated from the document, or a strict
    validator, knew only the Following tab's GET there, while the server follows and
    unfollows the creator ``feed`` with its PUT and DELETE. Each is a copy of the general
    operation (access, errors and all), its fixed path parameters dropped."""
    paths = schema.get("paths", {})
    for taken in taken_literals(app):
        general = paths.get(taken.general, {}).get(taken.method.lower())
        if general is None:  # a route left out of the document
            continue
        op = copy.deepcopy(general)
        fixed = [
            p for p in op.get("parameters", []) if p["in"] == "path" and p["name"] in taken.values
        ]
        op["parameters"] = [p for p in op.get("parameters", []) if p not in fixed]
        said = ", ".join(f"`{name}` = `{value}`" for name, value in taken.values.items())
        op["operationId"] = "_".join((op["operationId"], *taken.values.values()))
        op["summary"] = f"{op.get('summary', taken.method)} ({said})"
        op["description"] = (
            f"`{taken.method} {taken.general}` with {said} (the path of another route, "
            f"which serves its other methods). {op.get('description', '')}"
        ).strip()
        paths.setdefault(taken.path, {})[taken.method.lower()] = op


def _list_regions(node: Any, regions: list[str]) -> None:
    """Each value marked as a region (``REGION_MARK``) takes one of the deployment's
    regions, as the API checks (``fyp.serving.inputs.check_regions``): the document
    says so with an ``enum``."""
    if isinstance(node, dict):
        if node.get(REGION_MARK) is True:
            node["enum"] = regions
        for value in node.values():
            _list_regions(value, regions)
    elif isinstance(node, list):
        for value in node:
            _list_regions(value, regions)
