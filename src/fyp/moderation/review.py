"""Human review: claim a job, decide it, appeal a verdict, take a video down.

- **Claim** hands out the oldest open job in one UPDATE inside a write transaction
  (``BEGIN IMMEDIATE``), so two reviewers — threads or processes — never get the same
  job. A claim lapses after ``claim_lease_ms`` (30 min): the job can then be claimed
  again, and the first reviewer's decision is refused.
- **Decide** needs the job to be claimed by the deciding reviewer. The verdict, the
  job and the audit entries are written in one transaction.
- **Appeal** opens a second review of a verdict other than approved; it excludes
  everyone who has already decided on that video in that region, so the second review
  goes to a different reviewer.
- **Takedown** sets rejected or blocked in the given regions at once (legal requests).

Reviewer ids and timestamps are kept on the job and in the audit log. A human verdict
replaces the content state; the creator's For You eligibility is recomputed by the
creator rules, never granted by a reviewer.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fyp.audit.log import now_ms
from fyp.errors import (
    Forbidden,
    InvalidRequest,
    JobConflict,
    UnknownJob,
    UnknownUser,
    UnknownVideo,
    ValidationFailed,
)
from fyp.moderation.models import APPEALABLE, HUMAN_SOURCES, VERDICTS, Finding, State
from fyp.moderation.service import Cell
from fyp.moderation.store import JOB_KINDS, Job, Record, split_job_id
from fyp.moderation.textfold import fold, visual
from fyp.sovereignty.ledger import user_pseudonym

if TYPE_CHECKING:
    from fyp.moderation.service import Moderator

TAKEDOWN_STATES = (State.rejected, State.blocked)


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise ValidationFailed(f"{what} must be a non-empty string of at most 128 characters")
    return value


def _verdict(value: str, allowed: Sequence[State] = VERDICTS) -> State:
    try:
        state = State(value)
    except ValueError:
        state = None
    if state not in allowed:
        raise ValidationFailed(
            f"verdict must be one of {[s.value for s in allowed]}, got {value!r}",
            field="verdict",
        )
    assert state is not None
    return state


class Reviews:
    """The human side of moderation for one :class:`Moderator`."""

    def __init__(self, moderator: Moderator) -> None:
        self.moderator = moderator

    def _apply(
        self,
        c: Cell,
        region: str,
        video_id: str,
        state: State,
        actor: str,
        reason: str,
        source: str,
        extra: dict[str, Any],
        t: int,
    ) -> Record:
        """Write a human verdict (caller holds the transaction) and audit it."""
        m = self.moderator
        engine = m.engines[region]
        video = m.deployment.store(region).get_video(video_id)
        creator_ok, findings = False, list[Finding]()
        if video is not None:
            facts = m.creator_facts([video.creator_id] if video.creator_id else [])
            creator_ok, findings = engine.creator_ok(m.build_input(video, region, facts))
        verdict = {
            "state": state.value,
            "creator_ok": creator_ok,
            "reason": reason,
            "findings": [f.to_dict() for f in findings],
            "versions": dict(sorted(engine.versions.items())),
            "decided_by": actor,
            **extra,
        }
        c.mod.write(video_id, state.value, creator_ok, reason, source, actor, t, verdict)
        entry = c.audit.append(actor, "verdict", video_id, {"source": source, **verdict}, t)
        c.mod.set_audit_seq(video_id, entry.seq)
        record = c.mod.get(video_id)
        assert record is not None
        return record

    # -- jobs -----------------------------------------------------------------
    def claim(
        self, reviewer_id: str, region: str | None = None, via: str | None = None
    ) -> Job | None:
        """The oldest claimable job (in ``region``, or any region in config order);
        ``via``: the credential the request came through (``key:<id>``), audited."""
        _check_id(reviewer_id, "reviewer_id")
        m = self.moderator
        regions = [region] if region else m.deployment.regions
        for r in regions:
            store = m.deployment.store(r)
            c = m.cell(r)
            t = now_ms()
            with store.transaction():
                job = c.mod.claim(reviewer_id, t, m.claim_lease_ms, _person(reviewer_id))
                if job is not None:
                    c.audit.append(
                        reviewer_id,
                        "job.claim",
                        job.video_id,
                        {"job_id": job.job_id, **_via(via)},
                        t,
                    )
                    return job
        return None

    def job(self, job_id: str) -> Job:
        region, number = split_job_id(job_id)
        if region not in self.moderator.deployment.regions:
            raise UnknownJob(f"no review job {job_id!r}", job_id=job_id)
        job = self.moderator.cell(region).mod.job(number)
        if job is None:
            raise UnknownJob(f"no review job {job_id!r}", job_id=job_id)
        return job

    def jobs(
        self, region: str, status: str | None = None, limit: int = 100, kind: str | None = None
    ) -> list[Job]:
        if status not in (None, "open", "claimed", "decided", "superseded"):
            raise ValidationFailed(f"unknown job status {status!r}", field="status")
        if kind not in (None, *JOB_KINDS):
            raise ValidationFailed(f"unknown job kind {kind!r}", field="kind")
        return self.moderator.cell(region).mod.jobs(status, limit, kind)

    def decide(
        self, job_id: str, reviewer_id: str, verdict: str, reason: str, via: str | None = None
    ) -> Record:
        """Decide a job the reviewer holds; the verdict takes effect at once. An appeal
        refuses anyone who decided the video before, by name compared without case or
        width. (Not by API key: a review tool may serve all its reviewers through one;
        the key is recorded with each decision, ``details.via``.)"""
        _check_id(reviewer_id, "reviewer_id")
        if not reason or not reason.strip():
            raise ValidationFailed("a decision needs a reason", field="reason")
        state = _verdict(verdict)
        job = self.job(job_id)
        region, number = split_job_id(job_id)
        m = self.moderator
        store = m.deployment.store(region)
        c = m.cell(region)
        t = now_ms()
        with store.transaction():
            current = c.mod.job(number)
            assert current is not None
            if current.status != "claimed":
                raise JobConflict(
                    f"job {job_id} is {current.status}: only a claimed job can be decided"
                    + (
                        " (the video changed after the job was opened)"
                        if current.status == "superseded"
                        else ""
                    ),
                    job_id=job_id,
                    status=current.status,
                )
            if current.claimed_by != reviewer_id:
                raise Forbidden(f"job {job_id} is claimed by another reviewer", job_id=job_id)
            if _person(reviewer_id) in {_person(x) for x in current.excluded}:
                raise Forbidden(
                    f"reviewer {reviewer_id!r} already decided this video: an appeal goes to "
                    "a different reviewer",
                    job_id=job_id,
                )
            if not c.mod.finish_job(number, reviewer_id, state.value, reason, t):
                raise JobConflict(f"job {job_id} changed while deciding", job_id=job_id)
            source = "appeal" if job.kind == "appeal" else "review"
            return self._apply(
                c,
                region,
                job.video_id,
                state,
                reviewer_id,
                reason,
                source,
                {"job_id": job_id, "claimed_at_ms": current.claimed_at_ms, **_via(via)},
                t,
            )

    def appeal(
        self, video_id: str, region: str, appellant_id: str, reason: str, via: str | None = None
    ) -> Job:
        """Open an appeal of the video's verdict in ``region`` for a different reviewer."""
        _check_id(appellant_id, "appellant_id")
        if not reason or not reason.strip():
            raise ValidationFailed("an appeal needs a reason", field="reason")
        m = self.moderator
        store = m.deployment.store(region)
        c = m.cell(region)
        record = c.mod.get(video_id)
        if store.get_video(video_id) is None:
            raise UnknownVideo(f"no video {video_id!r} in region {region!r}", video_id=video_id)
        if not m.deployment.locate_users([appellant_id], fresh=True):
            # an appeal by an id nobody holds would block the creator's own appeal (one
            # open appeal per video) and leave a "remnant" of a user who never existed
            raise UnknownUser(f"no user {appellant_id!r} in any region", user_id=appellant_id)
        if record is None or record.state not in {s.value for s in APPEALABLE}:
            state = record.state if record else "pending"
            raise JobConflict(
                f"video {video_id!r} is {state} in region {region!r}: only a verdict of "
                f"{sorted(s.value for s in APPEALABLE)} can be appealed",
                video_id=video_id,
                state=state,
            )
        # everyone who ever decided on this video here: reviewers, appeal reviewers and
        # takedown actors, from the audit log (the one complete record)
        excluded = {
            _person(e.actor)
            for e in c.audit.entries(subject=video_id, action="verdict")
            if e.details.get("source") in HUMAN_SOURCES
        }
        t = now_ms()
        with store.transaction():
            job = c.mod.create_job(
                video_id, "appeal", reason, t, excluded=excluded, appellant=appellant_id
            )
            c.audit.append(  # append-only: the appellant (a user) by pseudonym, erasable
                "user:" + user_pseudonym(m.deployment.config, region, appellant_id),
                "appeal",
                video_id,
                {
                    "job_id": job.job_id,
                    "reason": reason,
                    "against": record.state,
                    "excluded": sorted(excluded),
                    **_via(via),
                },
                t,
            )
        return job

    def takedown(
        self,
        video_id: str,
        actor_id: str,
        reason: str,
        regions: Sequence[str] | None = None,
        verdict: str = State.blocked.value,
        via: str | None = None,
    ) -> dict[str, Record]:
        """Reject or block a video in the given regions (default: all it is in) now."""
        _check_id(actor_id, "actor_id")
        if not reason or not reason.strip():
            raise ValidationFailed("a takedown needs a reason", field="reason")
        state = _verdict(verdict, TAKEDOWN_STATES)
        m = self.moderator
        present = m.deployment.locate_video(video_id)
        if not present:
            raise UnknownVideo(f"no video {video_id!r}", video_id=video_id)
        targets = list(dict.fromkeys(regions)) if regions else present
        missing = [r for r in targets if r not in present]
        if missing:
            for r in missing:
                m.deployment.store(r)  # UnknownRegion for an undeclared one
            raise InvalidRequest(
                f"video {video_id!r} is not published to {missing}", video_id=video_id
            )
        out: dict[str, Record] = {}
        t = now_ms()
        for region in targets:
            c = m.cell(region)
            with m.deployment.store(region).transaction():
                c.mod.supersede_jobs(video_id)
                out[region] = self._apply(
                    c,
                    region,
                    video_id,
                    state,
                    actor_id,
                    reason,
                    "takedown",
                    {"regions": targets, **_via(via)},
                    t,
                )
        return out


def _via(via: str | None) -> dict[str, str]:
    return {} if via is None else {"via": via}


def _person(name: str) -> str:
    """A reviewer id as compared for "a different reviewer", in the spelling the text
    rules match terms in (``fyp.moderation.textfold``): "Alice", "ａｌｉｃｅ",
    "al\u200bice", "alic\u0435" (Cyrillic) and "a\u0301lice" are all alice."""
    try:
        folded = fold(visual(name))
    except Exception:  # OpenCC missing for a CJK name: compare it without t2s
        folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if not c.isspace())
