"""Moving a user's home region: policy, what moves, removal at the source, receipts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from move_helpers import CLASH, MOVER, allow_moves, plant_mover
from region_helpers import built, cli, copy_of

from fyp.audit.log import AuditLog
from fyp.catalog.blocks import Blocking, user_blocks
from fyp.catalog.follow_order import user_actions
from fyp.catalog.follows import Following, user_follows
from fyp.catalog.models import VideoIn
from fyp.catalog.service import Catalog
from fyp.config import load_config
from fyp.errors import MoveNotAllowed
from fyp.events.ingest import Ingestor
from fyp.events.schema import moved_event_id
from fyp.feed.following_tab import FollowingTab
from fyp.models.artifacts import current_version, read_arrays
from fyp.moderation import Moderator
from fyp.regions.deployment import Deployment
from fyp.sovereignty.ledger import MOVE, ErasureLedger, user_pseudonym
from fyp.sovereignty.move import Mover, receipt_signature_ok
from fyp.sovereignty.move_verify import verify_move
from fyp.sovereignty.residency import ResidencyScanner
from fyp.storage import open_store

__all__ = ["built"]


@pytest.fixture
def dep(built: Path, tmp_path: Path) -> Path:
    root = copy_of(built, tmp_path / "dep")
    allow_moves(root)
    plant_mover(root)
    return root


def test_without_a_policy_no_move_is_allowed(built: Path, tmp_path: Path) -> None:
    root = copy_of(built, tmp_path / "dep")
    plant_mover(root)
    with Deployment.open(root) as d, pytest.raises(MoveNotAllowed):
        Mover(d).move(MOVER, "eu", "moved to Lisbon")
    code, out = cli("user", "move", str(root), MOVER, "--to", "eu", "--reason", "moved")
    assert code == 2 and "does not allow" in out
    with Deployment.open(root) as d:
        assert d.home_region(MOVER) == "us"


def test_a_move_copies_everything_and_removes_the_source(dep: Path) -> None:
    with Deployment.open(dep) as d:
        before = {e.event_id for e in d.store("us").user_events(MOVER, 100)}
        Following(d).follow(MOVER, "u3")  # through the API: no event says so
        Blocking(d).block(MOVER, "u4")
        blocks = user_blocks(d.store("us"), MOVER)
        follows = user_follows(d.store("us"), MOVER)
        assert {f.creator_id for f in follows} == {"u1", "u3"}  # u1: the follow event's
        receipt = Mover(d).move(MOVER, "eu", "moved to Lisbon", actor="test")
        assert receipt_signature_ok(d, receipt.to_dict())
        assert receipt.source == "us" and receipt.dest == "eu"
        assert receipt.moved["events"] == len(before) == 9
        assert receipt.moved["labels"] == 2 and receipt.moved["served"] == 3
        assert receipt.removed["users"] == 1 and receipt.removed["events"] == 9
        assert receipt.retrain_required  # the us model learned from them
        d.forget_route(MOVER)
        assert d.home_region(MOVER) == "eu"
        user = d.store("eu").get_user(MOVER)
        assert user is not None and user.home_region == "eu" and user.country == "US"
        moved = {e.event_id for e in d.store("eu").user_events(MOVER, 100)}
        # the clashing id went under the moved id; every other id kept
        assert moved == (before - {CLASH}) | {moved_event_id(CLASH, MOVER)}
        assert {e.type for e in d.store("eu").user_events(MOVER, 100)} >= {
            "follow",
            "not_interested",
        }
        assert sorted(r.video_id for r in d.store("eu").iter_labels("kuairec", "test")) == [
            "v20",
            "v21",
        ]
        assert set(d.served_log("eu").served_since(MOVER, 0)) == {"v30", "v31", "v32"}
        assert user_follows(d.store("eu"), MOVER) == follows  # who, and since when
        assert user_blocks(d.store("eu"), MOVER) == blocks and len(blocks) == 1
        assert not d.store("us").existing_users([MOVER])
        assert user_follows(d.store("us"), MOVER) == []
        assert ErasureLedger(d.config, "us").find(MOVER, MOVE) is not None
        # both audit logs say so, by each region's pseudonym
        for region, action in (("us", "move_user_out"), ("eu", "move_user_in")):
            entries = list(
                AuditLog(d.store(region)).entries(
                    subject=user_pseudonym(d.config, region, MOVER), action=action
                )
            )
            assert len(entries) == 1 and entries[0].details["move_id"] == receipt.move_id
        # a retry of an event sent before the move is still a duplicate in eu
        retry = Ingestor(d).ingest(
            [
                {"event_id": f"{MOVER}-f", "user_id": MOVER, "video_id": "v7", "type": "follow"},
                {"event_id": CLASH, "user_id": MOVER, "video_id": "v9", "type": "like"},
            ]
        )
        assert [r.status for r in retry.results] == ["duplicate", "duplicate"]
        report = verify_move(d, MOVER)
        assert report.status == "pending_retrain", report.to_dict()
    scan = ResidencyScanner(dep).run()
    assert scan.ok, [f.to_dict() for f in scan.findings]


def test_the_cli_moves_and_verify_proves_it_after_the_retrain(dep: Path) -> None:
    code, out = cli("user", "move", str(dep), MOVER, "--to", "eu", "--reason", "moved", "--json")
    assert code == 0, out
    receipt = json.loads(out)
    assert receipt["from"] == "us" and receipt["to"] == "eu" and receipt["signature"]
    code, out = cli("user", "verify-move", str(dep), MOVER)
    assert code == 1 and "pending_retrain" in out
    code, out = cli("erasure", "process", str(dep), "--region", "us")
    assert code == 0, out
    code, out = cli("user", "verify-move", str(dep), MOVER, "--json")
    assert code == 0, out
    assert json.loads(out)["status"] == "moved"
    code, out = cli("residency", "check", str(dep))
    assert code == 0, out
    # the source's log records the move away, and its erasure ledger holds it
    code, out = cli("audit", "verify", str(dep))
    assert code == 0, out
    ledger = ErasureLedger(load_config(dep), "us")
    ledger.path.write_text("")  # cut by hand
    code, out = cli("audit", "verify", str(dep), "--region", "us")
    assert code == 1 and "a move away" in out, out


KILLED_MOVE = """
import os, signal, sys
from fyp.sovereignty import move, erasure, ledger
point = sys.argv.pop(1)
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if point == "after_copy":  # the destination holds the user; no ledger entry yet
    real = ledger.ErasureLedger.record
    def record(self, *a, **k):
        return die() if self.region == "us" else real(self, *a, **k)
    ledger.ErasureLedger.record = record
elif point == "before_removal":  # ledger written, the journal says remove
    move.Mover.remove_source = die
elif point == "mid_removal":  # the store part done, the artifacts not yet
    erasure.Eraser.scrub_artifacts = die
sys.argv = ["fyp", *sys.argv[1:]]
from fyp.cli import main
main()
"""


def kill_a_move(dep: Path, point: str) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_MOVE,
            point,
            "user",
            "move",
            str(dep),
            MOVER,
            "--to",
            "eu",
            "--reason",
            "moved to Lisbon",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
    )
    assert run.returncode == -9, run.stdout + run.stderr


def homes(dep: Path) -> list[str]:
    config = load_config(dep)
    out = []
    for region in config.region_names:
        store = open_store(config.resolve_url(config.region(region).store), region)
        try:
            if store.existing_users([MOVER]):
                out.append(region)
        finally:
            store.close()
    return out


def test_a_creator_who_moves_keeps_their_followers_and_uploads_where_they_left(
    dep: Path,
) -> None:
    """The catalogue names creators wherever they live: a creator's move takes their own
    rows, not others' follows and blocks of them, nor the name on their uploads (these
    all became ``[elsewhere]`` or were deleted before, so their followers in the region
    they left lost them, and the creator rules found no account)."""
    root = dep
    with Deployment.open(root) as d:
        us = d.store("us")
        Following(d).follow("u2", "u0")  # through the API
        stored = Ingestor(d).ingest(  # through an event on u0's video v6
            [{"event_id": "f-u6", "user_id": "u6", "video_id": "v6", "type": "follow"}]
        )
        assert stored.results[0].status == "stored"
        Blocking(d).block("u4", "u0")
        Mover(d).move("u0", "eu", "moved to Lisbon")
        d.forget_route("u0")
        assert d.home_region("u0") == "eu"
        assert us.followed_creators("u2") == ["u0"] and us.followed_creators("u6") == ["u0"]
        assert us.blocked_creators("u4") == ["u0"]
        assert {us.get_video(f"v{v}").creator_id for v in range(0, 40, 6)} == {"u0"}
        region_dir = d.config.region_dir("us")
        version = current_version(region_dir)
        assert version is not None and "u0" in read_arrays(region_dir, version)["creator_ids"]
        assert "v0" in [item.video_id for item in FollowingTab(d).page("u2", 40).items]
        # the moderation's creator rule finds their account in its new home
        assert Moderator(d).creator_facts(["u0"]) == {"u0": 18}
        report = verify_move(d, "u0")
        assert report.status == "pending_retrain", report.to_dict()  # nothing else left
    scan = ResidencyScanner(root).run()
    assert scan.ok, [f.to_dict() for f in scan.findings]


def test_a_move_takes_blocks_either_way_and_revives_no_blocked_follow(dep: Path) -> None:
    """The mover blocked u1, whose video v7 they had followed by an event: the copied
    event must add no follow in the new home (blocks are copied before events). u2 and
    u3 blocked the mover: those sides of the blocks move with them."""
    with Deployment.open(dep) as d:
        Catalog(d).create_video(
            VideoIn(video_id="mine", creator_id=MOVER, duration_ms=9_000, regions=["us", "eu"])
        )
        assert d.store("us").followed_creators(MOVER) == ["u1"]  # the follow event's
        blocking = Blocking(d)
        blocking.block(MOVER, "u1")
        blocking.block("u2", MOVER)  # u2 lives in us, u3 in eu
        blocking.block("u3", MOVER)
        assert sorted(d.store("us").blocked_creators(MOVER)) == ["u1", "u2", "u3"]
        Mover(d).move(MOVER, "eu", "moved to Lisbon")
        eu, us = d.store("eu"), d.store("us")
        assert eu.followed_creators(MOVER) == []
        assert [b.creator_id for b in user_blocks(eu, MOVER)] == ["u1"]
        assert sorted(eu.blocked_creators(MOVER)) == ["u1", "u2", "u3"]
        assert us.blocked_creators(MOVER) == [] and us.blocked_creators("u2") == [MOVER]
        assert verify_move(d, MOVER).status == "pending_retrain"
    scan = ResidencyScanner(dep).run()
    assert scan.ok, [f.to_dict() for f in scan.findings]


def test_a_move_takes_each_follows_latest_action_along(dep: Path) -> None:
    """The mover followed u1 by an event (v7), then unfollowed through the API, which
    leaves no event: the copied follow event must not make the follow again in the new
    home, and an older follow event sent there late changes nothing either."""
    with Deployment.open(dep) as d:
        assert Following(d).unfollow(MOVER, "u1")
        before = user_actions(d.store("us"), MOVER)
        assert [(a["creator_id"], a["following"]) for a in before] == [("u1", False)]
        Mover(d).move(MOVER, "eu", "moved to Lisbon")
        eu = d.store("eu")
        assert eu.followed_creators(MOVER) == []
        assert user_actions(eu, MOVER) == before
        late = {"event_id": "late-f", "user_id": MOVER, "video_id": "v7", "type": "follow"}
        late["ts"] = before[0]["acted_ms"] / 1000 - 1
        assert Ingestor(d).ingest([late]).results[0].status == "stored"
        assert eu.followed_creators(MOVER) == []
        assert user_actions(d.store("us"), MOVER) == []  # gone with the rest of the user


@pytest.mark.parametrize("point", ["after_copy", "before_removal", "mid_removal"])
def test_a_killed_move_is_reported_and_finished_by_running_it_again(dep: Path, point: str) -> None:
    kill_a_move(dep, point)
    # never without a home: the destination holds the user from the copy on
    assert "eu" in homes(dep)
    scan = ResidencyScanner(dep).run()
    unfinished = [f for f in scan.findings if f.kind == "unfinished_move"]
    assert len(unfinished) == 1 and unfinished[0].user_id == MOVER
    assert "fyp user move" in unfinished[0].location
    with Deployment.open(dep, finish_moves=False) as d:
        assert verify_move(d, MOVER).status == "unfinished"
    code, out = cli("user", "move", str(dep), MOVER, "--to", "eu", "--reason", "again", "--json")
    assert code == 0, out
    assert json.loads(out)["moved"]["events"] == 9
    assert homes(dep) == ["eu"]
    with Deployment.open(dep) as d:
        assert len(d.store("eu").user_events(MOVER, 100)) == 9  # nothing lost, nothing twice
        assert verify_move(d, MOVER).status == "pending_retrain"
    assert ResidencyScanner(dep).run().ok


def test_a_killed_move_is_finished_by_the_next_open(dep: Path) -> None:
    kill_a_move(dep, "before_removal")
    with Deployment.open(dep) as d:  # fyp serve and every command open it so
        assert not d.store("us").existing_users([MOVER])
        assert d.home_region(MOVER) == "eu"
    assert ResidencyScanner(dep).run().ok


def test_a_restore_of_the_source_from_before_the_move_removes_the_user_again(dep: Path) -> None:
    code, out = cli("backup", str(dep), "--region", "us")
    assert code == 0, out
    code, out = cli("user", "move", str(dep), MOVER, "--to", "eu", "--reason", "moved")
    assert code == 0, out
    scan = ResidencyScanner(dep).run()
    assert scan.ok, [f.to_dict() for f in scan.findings]  # the old backup: counted, not found
    assert any(r.moved_away for r in scan.regions)
    code, out = cli("restore", str(dep), "--region", "us")
    assert code in (0, 1), out
    assert homes(dep) == ["eu"]  # not two homes
    with Deployment.open(dep) as d:
        assert len(d.store("eu").user_events(MOVER, 100)) == 9
        report = verify_move(d, MOVER)
        assert not report.remnants, report.to_dict()
    assert ResidencyScanner(dep, scan_backups=False).run().ok


def test_a_restore_of_the_destination_from_before_the_move_says_whom_it_lost(dep: Path) -> None:
    code, out = cli("backup", str(dep), "--region", "eu")
    assert code == 0, out
    code, out = cli("user", "move", str(dep), MOVER, "--to", "eu", "--reason", "moved", "--json")
    assert code == 0, out
    move_id = json.loads(out)["move_id"]
    code, out = cli("restore", str(dep), "--region", "eu", "--json")
    assert code == 1, out  # a warning: the user's only copy was in the replaced store
    report = json.loads(out)
    lost = [w for w in report["warnings"] if move_id in w]
    assert len(lost) == 1 and "from us" in lost[0] and "gone from every region" in lost[0]
    assert homes(dep) == []
    with Deployment.open(dep) as d:
        entry = list(AuditLog(d.store("eu")).entries(action="restore"))[-1]
        assert entry.details["lost_arrivals"] == [move_id]


def test_a_restore_of_the_destination_after_the_user_moved_on_loses_no_one(dep: Path) -> None:
    allow_moves(dep, "eu", "us")
    code, out = cli("backup", str(dep), "--region", "eu")
    assert code == 0, out
    for to in ("eu", "us"):  # in and out again after the backup
        code, out = cli("user", "move", str(dep), MOVER, "--to", to, "--reason", "moved")
        assert code == 0, out
    code, out = cli("restore", str(dep), "--region", "eu", "--json")
    assert code in (0, 1), out
    assert not [w for w in json.loads(out)["warnings"] if "moved into" in w]
    assert homes(dep) == ["us"]
