"""Readiness: ``GET /readyz``. ``/healthz`` says the process is alive; this says whether
every region can serve, so a load balancer or an orchestrator does not send feeds to a
server whose region lost its store or its model (each such feed would be a 503)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from fyp.access.guard import key_regions
from fyp.config import DeploymentConfig
from fyp.errors import ModelError
from fyp.feed.live_models import unavailable
from fyp.serving.dependencies import AppState
from fyp.serving.metrics import CONTENT_TYPE
from fyp.serving.openapi import answers
from fyp.storage.served_logs import ExternalServedLog

router = APIRouter(tags=["ops"])
log = logging.getLogger("fyp.serving")


class RegionReadiness(BaseModel):
    ready: bool
    store: Literal["ok", "unavailable"]
    model: str | None = Field(description="The live model version served, if one is loaded.")
    problems: list[str] = Field(
        default_factory=list,
        description="What keeps the region from serving; no file names (the server log has them).",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="What is under way but does not keep the region from serving (a "
        "re-judge after a policy change, within its grace).",
    )


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    regions: dict[str, RegionReadiness]


READINESS: dict[str, Any] = {
    "response_model": Readiness,
    "responses": {503: {"model": Readiness, "description": "Some region cannot serve."}},
}


@router.get("/readyz", **READINESS)
@router.head("/readyz", **READINESS)  # probes use HEAD too (see /healthz)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when every region's store (and served log, when it is on a server
    of its own) answers and its live model is loaded, else 503 with what is wrong per
    region. No API key needed (like ``/healthz``)."""
    s: AppState = request.app.state.fyp
    regions = {r: _region(s, r) for r in s.deployment.regions}
    ready = all(r.ready for r in regions.values())
    body = Readiness(status="ready" if ready else "not_ready", regions=regions)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


def _region(s: AppState, region: str) -> RegionReadiness:
    problems: list[str] = []
    store: Literal["ok", "unavailable"] = "ok"
    try:
        s.deployment.store(region).check()
    except Exception as exc:  # whatever it is, the region cannot serve
        log.error("readiness: the store of region %s: %s", region, exc)
        store = "unavailable"
        problems.append(f"the store of region {region!r} is unavailable")
    served_log = s.deployment.served_log(region)
    if isinstance(served_log, ExternalServedLog):
        try:
            served_log.check()
        except Exception as exc:  # feeds of the region fail (503) until it answers
            log.error("readiness: the served log of region %s: %s", region, exc)
            problems.append(f"the served log of region {region!r} is unavailable")
    version = None
    try:
        version = s.feed.model(region).manifest.version
    except ModelError as exc:  # FeedService's: names the region, never a file
        problems.append(exc.message)
    except Exception as exc:
        log.error("readiness: the model of region %s: %s", region, exc)
        problems.append(unavailable(region).message)
    notes: list[str] = []
    if store == "ok":
        try:
            overdue = s.moderator.rejudge_overdue(region, rejudge_grace_s(s.deployment.config))
            stale = (
                f"the moderation policy of region {region!r} changed since its verdicts were "
                "last re-judged: the server re-judges them within [moderation] "
                "every_seconds, or run `fyp moderate` (videos approved under the old "
                "policy are served until then)"
            )
            if overdue:
                problems.append(stale)
            elif overdue is not None:  # under way: every host would be out at once
                notes.append(stale)
        except Exception as exc:  # an unreadable audit log: cannot tell, so not ready
            log.error("readiness: the moderation state of region %s: %s", region, exc)
            problems.append(f"the moderation state of region {region!r} cannot be read")
    return RegionReadiness(
        ready=not problems, store=store, model=version, problems=problems, notes=notes
    )


REJUDGE_GRACE_MIN_S = 60.0


def rejudge_grace_s(config: DeploymentConfig) -> float:
    """How long a region stays ready while its verdicts are re-judged after its policy
    changed: every host applies an edit within seconds of the others, so a 503 from the
    first moment would take the whole pool out of rotation at once. Past it, the
    re-judge is overdue (no schedule ran it, or it keeps failing): not ready."""
    return max(REJUDGE_GRACE_MIN_S, 4 * config.moderation.every_seconds)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        **answers(),
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."},
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process and of the regions the key may see
    (``fyp.serving.metrics``): no user or video is named. Needs a key with the
    ``metrics`` (a scraper's) or ``admin`` role."""
    s: AppState = request.app.state.fyp
    return Response(s.metrics.exposition(key_regions(request)), media_type=CONTENT_TYPE)
