"""Moderation routes: automated runs, status, human review, appeals, takedowns, audit.

Reviewer, appellant and actor ids travel in the request body; who may call each route,
and for which regions, is decided before it runs (``fyp.access.policy``). Every error
uses the one JSON error shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fyp.access.guard import principal
from fyp.audit.log import AuditLog
from fyp.catalog.models import Region
from fyp.serving.dependencies import AppState, state
from fyp.serving.inputs import JsonBodyRoute, check_regions
from fyp.serving.openapi import BODY, answers
from fyp.sovereignty.ledger import ledger_problems

router = APIRouter(prefix="/v1/moderation", tags=["moderation"], route_class=JsonBodyRoute)

# not blank: the document says so with a pattern (blanks are stripped before the length)
PersonId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"\S")
]
Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000, pattern=r"\S")
]
Verdict = Literal["approved", "rejected", "restricted", "age_restricted", "blocked"]


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: Region | None = None
    limit: int | None = Field(default=None, ge=1, le=10_000_000)


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviewer_id: PersonId
    region: Region | None = None


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviewer_id: PersonId
    verdict: Verdict
    reason: Reason


class AppealIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region: Region
    appellant_id: PersonId
    reason: Reason


class TakedownIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor_id: PersonId
    reason: Reason
    verdict: Literal["blocked", "rejected"] = "blocked"
    regions: list[Region] | None = Field(default=None, min_length=1)


NO_AUTOMATED_VERDICT = (
    "`moderation_conflict`: the video has no automated verdict in the region to replay "
    "(not checked yet, or decided by people only)."
)


@router.post("/runs", responses=answers(*BODY))
async def run(body: RunIn, s: AppState = Depends(state)) -> dict[str, Any]:
    """Run the automated checks over pending videos of a region (default: every region).

    Large backlogs are better moderated with ``fyp moderate`` outside the server."""
    check_regions(s.deployment, "body.region", body.region)  # before any work
    regions = [body.region] if body.region else s.deployment.regions
    return {"runs": [s.moderator.run(r, body.limit).to_dict() for r in regions]}


@router.get("/videos/{video_id}", responses=answers(404))
async def video_status(video_id: str, s: AppState = Depends(state)) -> dict[str, Any]:
    """The video's moderation state in every region whose catalogue holds it."""
    return s.moderator.status(video_id)


@router.get(
    "/videos/{video_id}/replay",
    responses=answers(404, 409, also={409: NO_AUTOMATED_VERDICT}),
)
async def replay(
    video_id: str, region: Annotated[Region, Query()], s: AppState = Depends(state)
) -> dict[str, Any]:
    """Evaluate the latest automated verdict again from its audited input."""
    check_regions(s.deployment, "query.region", region)
    result = s.moderator.replay(region, video_id)
    return {
        "video_id": video_id,
        "region": region,
        "same_versions": result.same_versions,
        "same_verdict": result.same_verdict,
        "stored": result.stored,
        "replayed": result.replayed,
    }


@router.post("/videos/{video_id}/takedown", responses=answers(404, *BODY))
async def takedown(
    request: Request, video_id: str, body: TakedownIn, s: AppState = Depends(state)
) -> dict[str, Any]:
    """Block (or reject) a video in the given regions at once; the next feed shows it."""
    check_regions(s.deployment, "body.regions", body.regions)
    records = s.reviews.takedown(
        video_id, body.actor_id, body.reason, body.regions, body.verdict, via=_via(request)
    )
    return {"video_id": video_id, "regions": {r: rec.to_dict() for r, rec in records.items()}}


@router.post(
    "/videos/{video_id}/appeals",
    status_code=status.HTTP_201_CREATED,
    responses=answers(404, 409, *BODY),
)
async def appeal(
    request: Request, video_id: str, body: AppealIn, s: AppState = Depends(state)
) -> dict[str, Any]:
    """Appeal a verdict; the appeal goes to a reviewer who has not decided this video."""
    check_regions(s.deployment, "body.region", body.region)
    job = s.reviews.appeal(video_id, body.region, body.appellant_id, body.reason, via=_via(request))
    return job.to_dict()


@router.post("/jobs/claim", responses=answers(*BODY))
async def claim(request: Request, body: ClaimIn, s: AppState = Depends(state)) -> dict[str, Any]:
    """Claim the oldest open review job; ``{"job": null}`` when there is none."""
    check_regions(s.deployment, "body.region", body.region)
    job = s.reviews.claim(body.reviewer_id, body.region, via=_via(request))
    return {"job": job.to_dict() if job else None}


@router.get("/jobs", responses=answers())
async def jobs(
    region: Annotated[Region, Query()],
    status: Literal["open", "claimed", "decided", "superseded"] | None = Query(None),
    kind: Literal["review", "appeal", "report"] | None = Query(
        None, description="Only jobs of this kind (`report`: opened by users' reports)."
    ),
    limit: int = Query(100, ge=1, le=1000),
    s: AppState = Depends(state),
) -> dict[str, Any]:
    check_regions(s.deployment, "query.region", region)
    return {"jobs": [j.to_dict() for j in s.reviews.jobs(region, status, limit, kind)]}


@router.get("/jobs/{job_id}", responses=answers(404))
async def job(job_id: str, s: AppState = Depends(state)) -> dict[str, Any]:
    return s.reviews.job(job_id).to_dict()


@router.post("/jobs/{job_id}/decision", responses=answers(404, 409, *BODY))
async def decide(
    request: Request, job_id: str, body: DecisionIn, s: AppState = Depends(state)
) -> dict[str, Any]:
    """Decide a job you have claimed; the verdict takes effect in the next feed."""
    return s.reviews.decide(
        job_id, body.reviewer_id, body.verdict, body.reason, via=_via(request)
    ).to_dict()


def _via(request: Request) -> str | None:
    """The API key a person's decision came through, for the audit log (ids in the body
    are the person's word; the key is the credential)."""
    key = principal(request)
    return None if key is None else f"key:{key.key_id}"


@router.get("/audit/{region}/verify", responses=answers(404))
async def verify_audit(
    region: str,
    expect_head: str | None = Query(
        None, pattern=r"^[0-9]+:[0-9a-f]{64}$", description="SEQ:HASH of an earlier head."
    ),
    s: AppState = Depends(state),
) -> dict[str, Any]:
    """Walk the region's audit hash chain and check its erasure ledger against it; ``ok``
    is false on any tampering (``fyp audit verify``)."""
    store = s.deployment.store(region)
    report = AuditLog(store).verify(expect_head)
    report.problems += ledger_problems(s.deployment.config, store, region)
    return report.to_dict()
