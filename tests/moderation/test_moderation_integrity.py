"""What a human or a policy decided is not undone behind their back: not by an edit, a
region toggle, a deletion and re-import, a restore, or a policy change (acceptance
review of session 12: each of these let removed or now-forbidden content back in)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from moderation_helpers import POLICIES, video, with_policies

from fyp.audit.log import AuditLog
from fyp.catalog.models import UserIn, UserPatch, Video, VideoIn, VideoPatch
from fyp.catalog.service import Catalog
from fyp.config import load_config, write_config
from fyp.errors import ValidationFailed
from fyp.moderation import Moderator, Reviews
from fyp.moderation.service import cell
from fyp.regions.deployment import Deployment
from fyp.sovereignty.backup_writer import BackupWriter
from fyp.sovereignty.restore import Restorer


def state(d: Deployment, region: str, video_id: str) -> str | None:
    record = cell(d.store(region)).mod.get(video_id)
    return record.state if record else None


def test_an_edit_does_not_undo_a_takedown(policed: Deployment, moderator: Moderator) -> None:
    catalog, reviews = Catalog(policed), Reviews(moderator)
    catalog.create_video(video("dog"))
    moderator.run("us")
    reviews.takedown("dog", "tslead", "graphic violence in the video itself", ["us"], "rejected")
    catalog.update_video("dog", VideoPatch(caption="今天天气很好我们去公园散步!"))  # one "!"
    summary = moderator.run("us")
    assert state(policed, "us", "dog") == "pending" and summary.jobs == 1
    record = cell(policed.store("us")).mod.get("dog")
    assert record is not None and "human_hold" in record.reason and "tslead" in record.reason
    job = reviews.claim("second")
    assert job is not None and job.video_id == "dog"
    reviews.decide(job.job_id, "second", "approved", "the edit removed the problem")
    catalog.update_video("dog", VideoPatch(caption="再改一次标题看看效果如何呢"))
    moderator.run("us")
    assert state(policed, "us", "dog") == "approved"  # the latest human verdict approved


def test_a_region_toggle_does_not_undo_a_takedown(
    policed: Deployment, moderator: Moderator
) -> None:
    catalog = Catalog(policed)
    catalog.create_video(video("toggle"))
    moderator.run("eu")
    Reviews(moderator).takedown("toggle", "tslead", "legal request", ["eu"], "blocked")
    catalog.update_video("toggle", VideoPatch(regions=["us"]))
    catalog.update_video("toggle", VideoPatch(regions=["us", "eu"]))
    moderator.run("eu")
    assert state(policed, "eu", "toggle") == "pending"  # a human decides again


def test_a_deleted_video_comes_back_pending(policed: Deployment, moderator: Moderator) -> None:
    """Deleted, then re-imported with other content under the same id: the old verdict
    judged other content, so it must not carry over."""
    catalog = Catalog(policed)
    catalog.create_video(video("545", regions=["us"]))
    moderator.run("us")
    assert state(policed, "us", "545") == "approved"
    catalog.delete_video("545")
    assert state(policed, "us", "545") == "pending"
    row = Video(
        **video("545", "一起来赌博吧朋友们快来", regions=["us"], creator_id=None).model_dump()
        | {"attributes": {"source": "kuairec"}},
        created_at_ms=1,
        updated_at_ms=1,
    )
    policed.store("us").bulk_insert_videos([row])  # the importer's path: no catalogue hook
    moderator.run("us")
    assert state(policed, "us", "545") == "rejected"


def test_a_policy_change_rejudges_what_was_approved(tmp_path: Path) -> None:
    root = tmp_path / "d"
    with with_policies(root, POLICIES) as d:
        Catalog(d).create_user(UserIn(user_id="a1", home_region="us", birth_year=1990))
        for vid, category, caption in (
            ("news", "民生资讯", "今天本地新闻报道了一件大事"),
            ("cats", "宠物", "我家的小猫今天学会了开门"),
            ("kept", "民生资讯", "社会新闻：道路施工提醒大家"),
        ):
            Catalog(d).create_video(video(vid, caption, regions=["us"], categories=[category]))
        moderator = Moderator(d)
        first = moderator.run("us")
        assert first.policy_rechecked == 0 and state(d, "us", "news") == "approved"
        reviews = Reviews(moderator)
        reviews.takedown("cats", "tslead", "reported", ["us"], "rejected")
        assert moderator.run("us").examined == 0  # same policy: nothing to do
    config = load_config(root)
    us = config.regions["us"]
    tighter = {**POLICIES["us"], "blocked_categories": ["博彩", "民生资讯"]}
    write_config(replace(config, regions={**config.regions, "us": replace(us, policy=tighter)}))
    with Deployment.open(root) as d:
        summary = Moderator(d).run("us")
        assert summary.policy_rechecked == 3
        assert state(d, "us", "news") == state(d, "us", "kept") == "blocked"
        assert state(d, "us", "cats") == "rejected"  # the human removal stands
        assert Moderator(d).run("us").policy_rechecked == 0  # done once per policy
        assert [
            e.details["digest"] for e in AuditLog(d.store("us")).entries(action="policy.recheck")
        ]


def test_a_restore_keeps_takedowns_made_after_the_backup(tmp_path: Path) -> None:
    root = tmp_path / "d"
    with with_policies(root, POLICIES) as d:
        Catalog(d).create_user(UserIn(user_id="a1", home_region="us", birth_year=1990))
        for vid, caption in (
            ("v100", "我家的小猫今天学会了开门"),
            ("v101", "周末去海边玩了一整天真开心"),
            ("v102", "教大家做一道简单的家常菜"),
        ):
            Catalog(d).create_video(video(vid, caption, regions=["us"]))
        moderator = Moderator(d)
        moderator.run("us")
    BackupWriter(load_config(root), "us").run()
    with Deployment.open(root) as d:
        reviews = Reviews(Moderator(d))
        reviews.takedown("v100", "tslead", "CSAM report", ["us"], "rejected")
        Catalog(d).update_video("v101", VideoPatch(caption="备份之后改过的说明文字"))
        Moderator(d).run("us")
    report = Restorer(load_config(root), "us").run()
    assert report.carried_audit_entries
    with Deployment.open(root) as d:
        assert state(d, "us", "v100") == "rejected"  # not approved, as in the backup
        assert state(d, "us", "v101") == "pending"  # judged again
        assert state(d, "us", "v102") == "approved"  # untouched since the backup
        Moderator(d).run("us")
        assert state(d, "us", "v100") == "rejected" and state(d, "us", "v101") == "approved"


def test_a_creator_corrected_to_a_minor_leaves_for_you_at_once(
    policed: Deployment, moderator: Moderator
) -> None:
    catalog = Catalog(policed)
    catalog.create_video(video("kid-1"))
    moderator.run("us")
    record = cell(policed.store("us")).mod.get("kid-1")
    assert record is not None and record.creator_ok
    catalog.update_user("a1", UserPatch(birth_year=2015))
    for region in ("us", "eu"):
        record = cell(policed.store(region)).mod.get("kid-1")
        assert record is not None and not record.creator_ok


def test_an_upload_cannot_claim_to_be_an_import(policed: Deployment) -> None:
    catalog = Catalog(policed)
    with pytest.raises(ValidationFailed, match="operator imports"):
        catalog.create_video(
            VideoIn(video_id="t", duration_ms=9_000, regions=["us"], attributes={"source": "x"})
        )
    imported = Video(
        video_id="imp",
        duration_ms=9_000,
        regions=["us"],
        attributes={"source": "kuairec"},
        created_at_ms=1,
        updated_at_ms=1,
    )
    policed.store("us").bulk_insert_videos([imported])
    with pytest.raises(ValidationFailed):
        catalog.update_video("imp", VideoPatch(attributes={"source": "other"}))
    kept = catalog.update_video("imp", VideoPatch(attributes={"maturity": "general"}))
    assert kept.attributes == {"maturity": "general", "source": "kuairec"}


def test_a_policy_is_stale_only_while_verdicts_judged_under_another_exist(
    policed: Deployment, moderator: Moderator
) -> None:
    assert not moderator.policy_stale("us")  # nothing judged yet: nothing to re-judge
    Catalog(policed).create_video(video("p1", regions=["us"]))
    moderator.run("us", limit=1)  # a limited run judges but does not re-judge
    assert moderator.policy_stale("us")
    moderator.run("us")
    assert not moderator.policy_stale("us")
