"""Moderation of a deployment: the catalogue hook, automated runs, per-region verdicts."""

from __future__ import annotations

import json
from pathlib import Path

from moderation_helpers import video
from typer.testing import CliRunner

from fyp.audit.log import AuditLog
from fyp.catalog.models import VideoIn, VideoPatch
from fyp.catalog.service import Catalog
from fyp.cli.app import app
from fyp.moderation import Moderator
from fyp.moderation.service import cell
from fyp.regions.deployment import Deployment

runner = CliRunner()


def state(d: Deployment, region: str, video_id: str) -> str | None:
    record = cell(d.store(region)).mod.get(video_id)
    return record.state if record else None


def test_new_and_edited_videos_are_pending(policed: Deployment, moderator: Moderator) -> None:
    catalog = Catalog(policed)
    catalog.create_video(video("v1"))
    assert state(policed, "us", "v1") == state(policed, "eu", "v1") == "pending"
    moderator.run("us")
    moderator.run("eu")
    assert state(policed, "us", "v1") == state(policed, "eu", "v1") == "approved"

    catalog.update_video("v1", VideoPatch(duration_ms=20_000))  # not content: verdict stays
    assert state(policed, "us", "v1") == "approved"
    catalog.update_video("v1", VideoPatch(caption="新的说明"))
    assert state(policed, "us", "v1") == state(policed, "eu", "v1") == "pending"
    moderator.run("us")
    moderator.run("eu")
    catalog.update_video("v1", VideoPatch(hashtags=["新"]))
    assert state(policed, "eu", "v1") == "pending"
    moderator.run("eu")

    catalog.create_video(video("v2", regions=["us"]))
    moderator.run("us")
    catalog.update_video("v2", VideoPatch(regions=["us", "eu"]))  # only the new region
    assert (state(policed, "us", "v2"), state(policed, "eu", "v2")) == ("approved", "pending")
    actions = [e.action for e in AuditLog(policed.store("eu")).entries(subject="v1")]
    assert actions == ["pending", "verdict", "pending", "verdict", "pending", "verdict"]


def test_each_region_judges_under_its_own_policy(policed: Deployment, moderator: Moderator) -> None:
    catalog = Catalog(policed)
    catalog.create_video(video("gamble", "一起来赌博吧朋友们快来"))
    catalog.create_video(video("casino", "casino night in town tonight"))
    catalog.create_video(video("sale", "新款上市欢迎选购好看的衣服", categories=["营销售卖"]))
    catalog.create_video(video("bet", "今天的比赛结果真是出人意料", categories=["博彩"]))
    catalog.create_video(video("sexy", "性感的舞蹈表演大家来看看"))
    catalog.create_video(video("surgery", "整容之后的样子你们觉得怎么样"))
    catalog.create_video(video("tag", "周末一起出去玩好不好呀", hashtags=["约炮"]))
    us = moderator.run("us")
    eu = moderator.run("eu")
    expected = {
        "gamble": ("rejected", "rejected"),
        "casino": ("rejected", "approved"),
        "sale": ("approved", "restricted"),
        "bet": ("blocked", "approved"),
        "sexy": ("approved", "restricted"),  # eu: mature -> restrict
        "surgery": ("pending", "approved"),  # us: a human decides
        "tag": ("rejected", "pending"),  # eu: the classifier reads hashtags too (adult)
    }
    for vid, (in_us, in_eu) in expected.items():
        assert (state(policed, "us", vid), state(policed, "eu", vid)) == (in_us, in_eu), vid
    assert us.by_state == {"rejected": 3, "approved": 2, "blocked": 1, "pending": 1}
    assert us.by_rule["banned_terms:reject"] == 2 and us.jobs == 1
    assert eu.by_rule["maturity:restrict"] == 1 and eu.jobs == 1
    assert moderator.run("us").written == 0  # nothing left; the pending one awaits a human


def test_verdicts_keep_versions_reason_and_are_audited(
    policed: Deployment, moderator: Moderator
) -> None:
    Catalog(policed).create_video(video("gamble", "一起来赌博吧朋友们快来"))
    moderator.run("us")
    record = cell(policed.store("us")).mod.get("gamble")
    assert record is not None and record.source == "automated"
    assert (
        "banned_terms" in record.reason
        and record.verdict["versions"] == moderator.engines["us"].versions
    )
    entry = list(AuditLog(policed.store("us")).entries(subject="gamble"))[-1]
    assert (
        entry.seq == record.audit_seq
        and entry.details["input"]["caption"] == "一起来赌博吧朋友们快来"
    )
    replay = moderator.replay("us", "gamble")
    assert replay.same_versions and replay.same_verdict
    assert AuditLog(policed.store("us")).verify().ok


def test_reuploads_of_removed_videos_are_rejected(
    policed: Deployment, moderator: Moderator
) -> None:
    catalog = Catalog(policed)
    original = "这是一段很长的原创视频说明，记录了我们在山里露营的三天两夜 #露营 #户外"
    catalog.create_video(video("orig", original + " 赌博"))
    moderator.run("us")
    assert state(policed, "us", "orig") == "rejected"
    edited = "#户外 #露营 完整版来了！这是一段很长的原创视频说明🔥记录了我们在山里露营的三天"
    catalog.create_video(video("again", edited, creator_id="x1"))
    catalog.create_video(
        video("media", "完全不同的说明文字在这里写着", attributes={"media_sha256": "AB" * 32})
    )
    moderator.run("us")
    copy = video(
        "copy",
        "又一个不同的说明文字内容呢",
        creator_id="x1",
        attributes={"media_sha256": "ab" * 32},
    )
    catalog.create_video(copy)
    moderator.run("us")
    assert state(policed, "us", "again") == "rejected"
    record = cell(policed.store("us")).mod.get("again")
    assert record is not None and "re-upload of rejected video 'orig'" in record.reason
    assert state(policed, "us", "copy") == "pending"  # same media as another creator's video
    assert "same media" in cell(policed.store("us")).mod.get("copy").reason  # type: ignore[union-attr]


def test_an_edit_during_a_run_wins(policed: Deployment, moderator: Moderator) -> None:
    catalog = Catalog(policed)
    catalog.create_video(video("v1"))
    c = cell(policed.store("us"))
    real = c.mod.revisions

    def edit_first(ids):  # type: ignore[no-untyped-def]
        catalog.update_video("v1", VideoPatch(caption="改过的说明，又要重新审核了"))
        c.mod.revisions = real  # type: ignore[method-assign]
        return real(ids)

    c.mod.revisions = edit_first  # type: ignore[method-assign]
    summary = moderator.run("us")
    assert summary.skipped == 1 and summary.written == 0
    assert state(policed, "us", "v1") == "pending"
    assert moderator.run("us").written == 1


def test_imported_videos_are_pending_until_moderated(
    policed: Deployment, moderator: Moderator
) -> None:
    from fyp.catalog.models import Video

    imported = Video(
        **VideoIn(
            video_id="k1",
            caption="快手上的一段视频说明",
            duration_ms=15_000,
            regions=["us"],
            attributes={"source": "kuairec", "manual_cover_text": "UNKNOWN"},
        ).model_dump(),
        created_at_ms=1,
        updated_at_ms=1,
    )
    policed.store("us").bulk_insert_videos([imported])
    assert state(policed, "us", "k1") is None  # no row: pending for eligibility
    assert cell(policed.store("us")).mod.count_by_state() == {"pending": 1}
    moderator.run("us")
    record = cell(policed.store("us")).mod.get("k1")
    assert record is not None and record.state == "approved" and record.creator_ok


def test_creator_recheck(policed: Deployment, moderator: Moderator) -> None:
    Catalog(policed).create_video(video("young", creator_id="m1"))
    moderator.run("eu")
    assert cell(policed.store("eu")).mod.get("young").creator_ok is False  # type: ignore[union-attr]
    assert moderator.recheck_creators("eu") == 0
    from fyp.catalog.models import UserPatch

    Catalog(policed).update_user("m1", UserPatch(birth_year=2000))  # rechecked at once
    assert cell(policed.store("eu")).mod.get("young").creator_ok is True  # type: ignore[union-attr]
    assert moderator.recheck_creators("eu") == 0
    Catalog(policed).update_user("m1", UserPatch(birth_year=2015))  # corrected to a minor
    assert cell(policed.store("eu")).mod.get("young").creator_ok is False  # type: ignore[union-attr]


def test_status_of_a_video(policed: Deployment, moderator: Moderator) -> None:
    Catalog(policed).create_video(video("v1", regions=["eu"]))
    status = moderator.status("v1")
    assert list(status["regions"]) == ["eu"] and status["regions"]["eu"]["state"] == "pending"


def test_cli_moderate_prints_counts_per_verdict_and_rule(
    policed: Deployment, tmp_path: Path
) -> None:
    catalog = Catalog(policed)
    catalog.create_video(video("ok"))
    catalog.create_video(video("bad", "一起来赌博吧朋友们快来"))
    root = policed.config.root
    result = runner.invoke(app, ["moderate", str(root), "--region", "us"])
    assert result.exit_code == 0, result.output
    assert "region us: 2 verdicts" in result.output
    assert "approved" in result.output and "banned_terms:reject" in result.output
    again = runner.invoke(app, ["moderate", str(root), "--json"])
    runs = json.loads(again.output)["runs"]
    assert [r["region"] for r in runs] == ["us", "eu"]
    assert runs[0]["written"] == 0 and runs[1]["by_state"] == {"approved": 1, "rejected": 1}
    assert runs[1]["totals"] == {"approved": 1, "rejected": 1}
    bad_region = runner.invoke(app, ["moderate", str(root), "--region", "mars"])
    assert bad_region.exit_code != 0
