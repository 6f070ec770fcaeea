"""The moderation routes: runs, status, review jobs, appeals, takedowns, audit, errors."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from fyp.moderation.store import JOB_KINDS
from fyp.regions.consent import ConsentPolicy
from fyp.regions.deployment import Deployment


def make(client: TestClient, video_id: str, caption: str, **kw: Any) -> None:
    body = {
        "video_id": video_id,
        "creator_id": "ana",
        "caption": caption,
        "duration_ms": 15_000,
        "regions": ["us", "eu"],
        **kw,
    }
    assert client.post("/v1/videos", json=body).status_code == 201


def setup(client: TestClient) -> None:
    client.post("/v1/users", json={"user_id": "ana", "home_region": "us", "birth_year": 1990})
    make(client, "clean", "今天天气很好我们去公园散步")
    make(client, "risky", "一起来网赌吧朋友们快来")  # classifier: gambling -> a human decides
    make(client, "spam", "加我微信 vx123456 领红包")


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "status", "details"}
    assert body["error"]["code"] == code and body["error"]["status"] == status
    return dict(body["error"])


def test_run_and_status(client: TestClient) -> None:
    setup(client)
    status = client.get("/v1/moderation/videos/clean").json()
    assert {r: s["state"] for r, s in status["regions"].items()} == {
        "us": "pending",
        "eu": "pending",
    }
    runs = client.post("/v1/moderation/runs", json={"region": "us"}).json()["runs"]
    assert len(runs) == 1 and runs[0]["by_state"] == {"approved": 1, "pending": 1, "restricted": 1}
    assert runs[0]["by_rule"]["classifier:review"] == 1 and runs[0]["review_jobs"] == 1
    status = client.get("/v1/moderation/videos/clean").json()["regions"]
    assert status["us"]["state"] == "approved" and status["eu"]["state"] == "pending"
    assert status["us"]["verdict"]["versions"]["engine"] == "1"
    all_runs = client.post("/v1/moderation/runs", json={}).json()["runs"]
    assert [r["region"] for r in all_runs] == ["us", "eu"] and all_runs[1]["written"] == 3
    replay = client.get("/v1/moderation/videos/spam/replay", params={"region": "us"}).json()
    assert replay["same_versions"] and replay["same_verdict"]
    error(client.get("/v1/moderation/videos/nope"), 404, "unknown_video")
    error(client.post("/v1/moderation/runs", json={"region": "mars"}), 422, "validation_failed")
    error(client.post("/v1/moderation/runs", json={"limit": 0}), 422, "validation_failed")
    unknown = error(
        client.get("/v1/moderation/videos/nope/replay", params={"region": "us"}),
        404,
        "unknown_video",
    )
    assert unknown["details"] == {"video_id": "nope", "region": "us"}


def test_a_replay_without_an_automated_verdict_is_a_conflict(client: TestClient) -> None:
    """The video's state forbids it, not the request: 409 (it was a 422), for a video not
    checked yet and for one people alone decided (a takedown records no input)."""
    setup(client)
    make(client, "taken", "今天天气很好")
    down = {"actor_id": "m", "reason": "t", "regions": ["us"]}
    assert client.post("/v1/moderation/videos/taken/takedown", json=down).status_code == 200
    for video in ("clean", "taken"):
        replay = client.get(f"/v1/moderation/videos/{video}/replay", params={"region": "us"})
        e = error(replay, 409, "moderation_conflict")
        assert e["details"] == {"video_id": video, "region": "us"}, e
        assert "no automated verdict" in e["message"]
    client.post("/v1/moderation/runs", json={"region": "us"})
    replay = client.get("/v1/moderation/videos/clean/replay", params={"region": "us"})
    assert replay.status_code == 200 and replay.json()["same_verdict"]
    assert error(
        client.get("/v1/moderation/videos/clean/replay", params={"region": "eu"}),
        409,
        "moderation_conflict",
    )


def test_review_flow(client: TestClient) -> None:
    setup(client)
    client.post("/v1/moderation/runs", json={})
    claimed = client.post(
        "/v1/moderation/jobs/claim", json={"reviewer_id": "alice", "region": "us"}
    ).json()
    job = claimed["job"]
    assert job["video_id"] == "risky" and job["claimed_by"] == "alice" and job["job_id"] == "us-1"
    assert client.get(f"/v1/moderation/jobs/{job['job_id']}").json()["status"] == "claimed"
    listed = client.get("/v1/moderation/jobs", params={"region": "us", "status": "claimed"}).json()
    assert [j["job_id"] for j in listed["jobs"]] == ["us-1"]

    e = error(
        client.post(
            f"/v1/moderation/jobs/{job['job_id']}/decision",
            json={"reviewer_id": "bob", "verdict": "approved", "reason": "ok"},
        ),
        403,
        "forbidden",
    )
    assert "another reviewer" in e["message"]
    error(
        client.post(
            f"/v1/moderation/jobs/{job['job_id']}/decision",
            json={"reviewer_id": "alice", "verdict": "maybe", "reason": "ok"},
        ),
        422,
        "validation_failed",
    )
    decided = client.post(
        f"/v1/moderation/jobs/{job['job_id']}/decision",
        json={"reviewer_id": "alice", "verdict": "rejected", "reason": "gambling ad"},
    )
    assert decided.status_code == 200 and decided.json()["state"] == "rejected"
    error(
        client.post(
            f"/v1/moderation/jobs/{job['job_id']}/decision",
            json={"reviewer_id": "alice", "verdict": "approved", "reason": "x"},
        ),
        409,
        "moderation_conflict",
    )

    appeal = client.post(
        "/v1/moderation/videos/risky/appeals",
        json={"region": "us", "appellant_id": "ana", "reason": "it is a news report"},
    )
    assert appeal.status_code == 201 and appeal.json()["excluded"] == ["alice"]
    by_kind = {
        kind: [
            j["job_id"]
            for j in client.get(
                "/v1/moderation/jobs", params={"region": "us", "kind": kind}
            ).json()["jobs"]
        ]
        for kind in JOB_KINDS
    }
    assert by_kind == {"review": ["us-1"], "appeal": [appeal.json()["job_id"]], "report": []}
    open_appeals = client.get(
        "/v1/moderation/jobs", params={"region": "us", "kind": "appeal", "status": "open"}
    )
    assert [j["kind"] for j in open_appeals.json()["jobs"]] == ["appeal"]
    error(
        client.get("/v1/moderation/jobs", params={"region": "us", "kind": "x"}),
        422,
        "validation_failed",
    )
    again = client.post(  # one open appeal per video (on PostgreSQL this was a 500)
        "/v1/moderation/videos/risky/appeals",
        json={"region": "us", "appellant_id": "ana", "reason": "again"},
    )
    error(again, 409, "moderation_conflict")
    assert client.post(
        "/v1/moderation/jobs/claim", json={"reviewer_id": "alice", "region": "us"}
    ).json() == {"job": None}
    second = client.post("/v1/moderation/jobs/claim", json={"reviewer_id": "bob"}).json()["job"]
    assert second["kind"] == "appeal" and second["appellant"] == "ana"
    final = client.post(
        f"/v1/moderation/jobs/{second['job_id']}/decision",
        json={"reviewer_id": "bob", "verdict": "approved", "reason": "news"},
    ).json()
    assert final["state"] == "approved" and final["source"] == "appeal"

    error(client.get("/v1/moderation/jobs/us-99"), 404, "unknown_job")
    error(client.get("/v1/moderation/jobs/bogus"), 404, "unknown_job")
    error(
        client.post("/v1/moderation/jobs/claim", json={"reviewer_id": ""}), 422, "validation_failed"
    )
    error(
        client.post("/v1/moderation/jobs/claim", json={"reviewer_id": "a", "extra": 1}),
        422,
        "validation_failed",
    )
    error(
        client.post(
            "/v1/moderation/videos/clean/appeals",
            json={"region": "us", "appellant_id": "ana", "reason": "why"},
        ),
        409,
        "moderation_conflict",
    )
    verify = client.get("/v1/moderation/audit/us/verify").json()
    assert verify["ok"] and verify["entries"] > 5 and verify["triggers"]
    error(client.get("/v1/moderation/audit/mars/verify"), 404, "unknown_region")


def test_takedown_reaches_the_next_feed(client: TestClient, deployment: Deployment) -> None:
    import random

    from fyp.models.training import TrainParams, train_and_publish

    rng = random.Random(5)
    for k in range(8):
        client.post("/v1/users", json={"user_id": f"u{k}", "home_region": "us", "birth_year": 1990})
    client.post("/v1/users", json={"user_id": "ana", "home_region": "us", "birth_year": 1990})
    for k in range(40):
        make(client, f"v{k}", f"第{k}个视频，今天天气很好我们去公园散步", regions=["us"])
    events = [
        {
            "event_id": f"e{k}",
            "user_id": f"u{k % 8}",
            "video_id": f"v{rng.randrange(40)}",
            "type": "play",
            "watch_ms": rng.choice([1_000, 20_000]),
        }
        for k in range(160)
    ]
    assert client.post("/v1/events/batch", json={"events": events}).status_code == 200
    params = TrainParams(ranker=False)
    train_and_publish(
        deployment.store("us"), deployment.config.region_dir("us"), params, consent=ConsentPolicy()
    )
    assert client.get("/v1/users/u1/feed", params={"n": 5}).json()["items"] == []  # all pending
    client.post("/v1/moderation/runs", json={"region": "us"})
    page = client.get("/v1/users/ana/feed", params={"n": 5}).json()["items"]
    assert page
    target = page[0]["video_id"]
    done = client.post(
        f"/v1/moderation/videos/{target}/takedown",
        json={"actor_id": "legal", "reason": "court order", "regions": ["us"]},
    )
    assert done.status_code == 200 and done.json()["regions"]["us"]["state"] == "blocked"
    from fyp.audit.log import AuditLog

    entry = list(AuditLog(deployment.store("us")).entries(subject=target, action="verdict"))[-1]
    assert entry.actor == "legal" and entry.details["via"].startswith("key:")  # the credential
    client.post("/v1/users", json={"user_id": "bea", "home_region": "us", "birth_year": 1990})
    nxt = client.get("/v1/users/bea/feed", params={"n": 5, "debug": True}).json()  # cold like ana
    assert target not in [i["video_id"] for i in nxt["items"]]
    assert {"video_id": target, "stage": "eligibility", "reason": "blocked in your region"} in nxt[
        "removed"
    ]
    error(
        client.post(
            "/v1/moderation/videos/v1/takedown",
            json={"actor_id": "legal", "reason": "x", "verdict": "approved"},
        ),
        422,
        "validation_failed",
    )
    error(
        client.post(
            "/v1/moderation/videos/v1/takedown",
            json={"actor_id": "legal", "reason": "x", "regions": ["eu"]},
        ),
        400,
        "invalid_request",
    )


def test_users_reports_reach_a_reviewer(client: TestClient) -> None:
    """Reports posted as events, a moderation run, the report job listed, one decided;
    the deployment's default policy: a review at 3 distinct reporters."""
    setup(client)
    client.post("/v1/moderation/runs", json={})
    for uid in ("rep-a", "rep-b", "rep-c"):
        client.post("/v1/users", json={"user_id": uid, "home_region": "us", "birth_year": 1990})
    reports = [
        {"event_id": f"r-{k}", "user_id": uid, "video_id": "clean", "type": "report"}
        for k, uid in enumerate(["rep-a", "rep-a", "rep-b"])
    ]
    stored = client.post("/v1/events/batch", json={"events": reports}).json()
    assert stored["stored"] == 3, stored
    runs = client.post("/v1/moderation/runs", json={"region": "us"}).json()["runs"]
    assert runs[0]["reports"]["report_jobs"] == 0  # two distinct reporters
    third = {"event_id": "r-9", "user_id": "rep-c", "video_id": "clean", "type": "report"}
    assert client.post("/v1/events", json=third).status_code == 201
    runs = client.post("/v1/moderation/runs", json={}).json()["runs"]
    assert [r["reports"]["report_jobs"] for r in runs] == [1, 0]  # eu: none of its users
    listed = client.get("/v1/moderation/jobs", params={"region": "us", "status": "open"})
    [job] = [j for j in listed.json()["jobs"] if j["kind"] == "report"]
    assert job["video_id"] == "clean" and job["details"]["reporters"] == 3
    assert job["details"]["window_days"] == 7 and job["details"]["held"] is False
    assert not any(uid in listed.text for uid in ("rep-a", "rep-b", "rep-c"))
    assert client.get(f"/v1/moderation/jobs/{job['job_id']}").json()["kind"] == "report"
    assert client.get("/v1/moderation/videos/clean").json()["regions"]["us"]["state"] == (
        "approved"  # under the default hold threshold (10): still served
    )
    claimed = client.post(
        "/v1/moderation/jobs/claim", json={"reviewer_id": "alice", "region": "us"}
    ).json()["job"]
    while claimed["kind"] != "report":  # the classifier's review job is older
        client.post(
            f"/v1/moderation/jobs/{claimed['job_id']}/decision",
            json={"reviewer_id": "alice", "verdict": "rejected", "reason": "gambling"},
        )
        claimed = client.post(
            "/v1/moderation/jobs/claim", json={"reviewer_id": "alice", "region": "us"}
        ).json()["job"]
    decided = client.post(
        f"/v1/moderation/jobs/{claimed['job_id']}/decision",
        json={"reviewer_id": "alice", "verdict": "restricted", "reason": "borderline"},
    )
    assert decided.status_code == 200 and decided.json()["state"] == "restricted"
    assert decided.json()["source"] == "review"
    assert client.get("/v1/moderation/audit/us/verify").json()["ok"]
