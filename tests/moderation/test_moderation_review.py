"""Human review: claims never collide, decisions need the claim, appeals change hands."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from moderation_helpers import video

from fyp.audit.log import AuditLog
from fyp.catalog.models import VideoPatch
from fyp.catalog.service import Catalog
from fyp.errors import (
    Forbidden,
    InvalidRequest,
    JobConflict,
    UnknownJob,
    UnknownUser,
    UnknownVideo,
    ValidationFailed,
)
from fyp.moderation import Moderator, Reviews
from fyp.moderation.service import cell
from fyp.regions.deployment import Deployment


def queue(d: Deployment, moderator: Moderator, n: int, region: str = "us") -> list[str]:
    """n videos that the us policy sends to a human (review term 整容)."""
    catalog = Catalog(d)
    ids = [f"r{k}" for k in range(n)]
    for vid in ids:
        catalog.create_video(video(vid, f"整容之后第{vid}天的样子", regions=[region]))
    moderator.run(region)
    return ids


def test_claim_decide_and_the_verdict_takes_effect(
    policed: Deployment, moderator: Moderator, reviews: Reviews
) -> None:
    queue(policed, moderator, 1)
    job = reviews.claim("alice")
    assert job is not None and job.status == "claimed" and job.claimed_by == "alice"
    assert job.job_id == "us-1" and job.kind == "review" and "整容" in job.reason
    assert reviews.claim("bob") is None  # nothing else is open
    record = reviews.decide(job.job_id, "alice", "age_restricted", "surgery footage")
    assert record.state == "age_restricted" and record.decided_by == "alice"
    assert record.source == "review" and record.creator_ok
    assert record.verdict["versions"] == moderator.engines["us"].versions
    done = reviews.job(job.job_id)
    assert (done.status, done.decided_by, done.verdict) == ("decided", "alice", "age_restricted")
    assert done.claimed_at_ms is not None and done.decided_at_ms is not None
    actions = [e.action for e in AuditLog(policed.store("us")).entries(subject="r0")]
    assert actions == ["pending", "verdict", "job.open", "job.claim", "verdict"]
    replay = moderator.replay("us", "r0")  # the automated verdict, not the human one
    assert replay.same_verdict and replay.stored["state"] == "pending"
    with pytest.raises(JobConflict, match="decided"):
        reviews.decide(job.job_id, "alice", "approved", "again")


def test_decisions_need_the_claim(
    policed: Deployment, moderator: Moderator, reviews: Reviews
) -> None:
    queue(policed, moderator, 2)
    with pytest.raises(JobConflict, match="open"):
        reviews.decide("us-1", "alice", "approved", "fine")
    job = reviews.claim("alice")
    assert job is not None
    with pytest.raises(Forbidden, match="another reviewer"):
        reviews.decide(job.job_id, "bob", "approved", "fine")
    with pytest.raises(ValidationFailed, match="verdict must be one of"):
        reviews.decide(job.job_id, "alice", "pending", "fine")
    with pytest.raises(ValidationFailed, match="reason"):
        reviews.decide(job.job_id, "alice", "approved", " ")
    for bad in ("nope", "mars-1", "us-999"):
        with pytest.raises(UnknownJob):
            reviews.job(bad)


def test_two_reviewers_never_get_the_same_job_threads(
    policed: Deployment, moderator: Moderator, reviews: Reviews
) -> None:
    queue(policed, moderator, 30)
    got: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def reviewer(name: str) -> None:
        start.wait()
        while (job := reviews.claim(name)) is not None:
            with lock:
                got.append(job.job_id)

    threads = [threading.Thread(target=reviewer, args=(f"rev{k}",)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"us-{k}" for k in range(1, 31))


def test_two_reviewers_never_get_the_same_job_separate_connections(
    policed: Deployment, moderator: Moderator
) -> None:
    """Each reviewer has its own deployment (own SQLite connection), as separate server
    processes would: the database, not a Python lock, keeps claims apart."""
    queue(policed, moderator, 24)
    root = policed.config.root
    got: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def reviewer(name: str) -> None:
        try:
            with Deployment.open(root) as own:
                desk = Reviews(Moderator(own))
                start.wait()
                while (job := desk.claim(name)) is not None:
                    with lock:
                        got[job.job_id] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(f"p{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert set(got.values()) == {1} and len(got) == 24


def test_an_appeal_goes_to_a_different_reviewer(
    policed: Deployment, moderator: Moderator, reviews: Reviews
) -> None:
    queue(policed, moderator, 1)
    job = reviews.claim("alice")
    assert job is not None
    reviews.decide(job.job_id, "alice", "rejected", "not allowed")
    with pytest.raises(ValidationFailed, match="reason"):
        reviews.appeal("r0", "us", "a1", "")
    appeal = reviews.appeal("r0", "us", "a1", "it is a medical video")
    assert appeal.kind == "appeal" and appeal.excluded == ("alice",) and appeal.appellant == "a1"
    with pytest.raises(JobConflict, match="open review job"):
        reviews.appeal("r0", "us", "a1", "again")
    assert reviews.claim("alice") is None  # the first reviewer never gets it
    second = reviews.claim("bob")
    assert second is not None and second.job_id == appeal.job_id
    record = reviews.decide(second.job_id, "bob", "approved", "medical context")
    assert record.state == "approved" and record.source == "appeal" and record.decided_by == "bob"
    # another appeal cannot go to alice or bob; approved verdicts are not appealable
    with pytest.raises(JobConflict, match="only a verdict"):
        reviews.appeal("r0", "us", "a1", "more")
    reviews.takedown("r0", "legal", "court order", ["us"], via="key:k1")
    third = reviews.appeal("r0", "us", "a1", "overturn")
    assert set(third.excluded) == {"alice", "bob", "legal"}
    # retyping a name is not a different reviewer (acceptance review): no claim, no decision
    assert reviews.claim("Alice") is None and reviews.claim("ＢＯＢ ") is None
    assert reviews.claim("LEGAL") is None
    disguised = ("al\u200bice", "alice\u00ad", "alic\u0435", "a\u0301lice", "alice\u3164")
    disguised += ("\u202eecila\u202c", "Alice\u2060", "alice\ufe0f", "ALİCE", "b o b")
    assert all(
        reviews.claim(name) is None for name in disguised
    )  # the second review goes to someone else
    carol = reviews.claim("carol", via="key:k2")
    assert carol is not None and carol.job_id == third.job_id
    reviews.decide(carol.job_id, "carol", "approved", "overturned", via="key:k2")
    log = AuditLog(policed.store("us"))
    verdicts = [e for e in log.entries(subject="r0", action="verdict")]
    assert verdicts[-1].details["via"] == "key:k2" and verdicts[-2].details["via"] == "key:k1"


def test_appeals_of_automated_verdicts(
    policed: Deployment, moderator: Moderator, reviews: Reviews
) -> None:
    Catalog(policed).create_video(video("g", "一起来赌博吧朋友们快来", regions=["us"]))
    Catalog(policed).create_video(video("ok", regions=["us"]))
    moderator.run("us")
    appeal = reviews.appeal("g", "us", "a1", "it is a film quote")
    assert appeal.excluded == ()
    with pytest.raises(JobConflict, match="approved"):
        reviews.appeal("ok", "us", "a1", "why")
    with pytest.raises(UnknownVideo):
        reviews.appeal("nope", "us", "a1", "why")


def test_an_appeal_by_an_id_nobody_holds_is_refused(
    policed: Deployment, moderator: Moderator, reviews: Reviews
) -> None:
    Catalog(policed).create_video(video("g", "一起来赌博吧朋友们快来", regions=["us"]))
    moderator.run("us")
    with pytest.raises(UnknownUser):  # it would block the creator's own appeal
        reviews.appeal("g", "us", "ghost", "spite")
    assert reviews.appeal("g", "us", "a1", "it is a film quote").appellant == "a1"


def test_a_lapsed_claim_can_be_taken_over(
    policed: Deployment, moderator: Moderator, reviews: Reviews
) -> None:
    queue(policed, moderator, 1)
    first = reviews.claim("alice")
    assert first is not None
    moderator.claim_lease_ms = -1  # every claim has lapsed
    second = reviews.claim("bob")
    assert second is not None and second.job_id == first.job_id
    with pytest.raises(Forbidden):
        reviews.decide(first.job_id, "alice", "approved", "late")
    assert reviews.decide(first.job_id, "bob", "approved", "ok").state == "approved"


def test_an_edit_supersedes_the_open_review(
    policed: Deployment, moderator: Moderator, reviews: Reviews
) -> None:
    queue(policed, moderator, 1)
    job = reviews.claim("alice")
    assert job is not None
    Catalog(policed).update_video("r0", VideoPatch(caption="全新的说明"))
    with pytest.raises(JobConflict, match="superseded"):
        reviews.decide(job.job_id, "alice", "approved", "ok")
    assert moderator.run("us").by_state == {"approved": 1}


def test_takedown_in_given_regions(
    policed: Deployment, moderator: Moderator, reviews: Reviews
) -> None:
    Catalog(policed).create_video(video("v"))
    moderator.run("us")
    moderator.run("eu")
    records = reviews.takedown("v", "legal", "court order", ["eu"])
    assert list(records) == ["eu"] and records["eu"].state == "blocked"
    assert cell(policed.store("us")).mod.get("v").state == "approved"  # type: ignore[union-attr]
    everywhere = reviews.takedown("v", "legal", "worldwide", verdict="rejected")
    assert {r: rec.state for r, rec in everywhere.items()} == {"us": "rejected", "eu": "rejected"}
    with pytest.raises(ValidationFailed):
        reviews.takedown("v", "legal", "x", verdict="approved")
    with pytest.raises(UnknownVideo):
        reviews.takedown("missing", "legal", "x")
    Catalog(policed).create_video(video("only_us", regions=["us"]))
    with pytest.raises(InvalidRequest, match="not published"):
        reviews.takedown("only_us", "legal", "x", ["eu"])
