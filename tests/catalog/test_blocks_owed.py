"""A block or unblock cut short between its two sides is finished without the client:
the blocker's transaction records the blocked side as owed (``block_mirrors_owed``) and
``settle_owed`` (``fyp user blocks-settle``, run by ``fyp serve``'s schedule) writes it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from catalog.test_follows import _world
from fyp.audit.log import sql_store
from fyp.catalog.blocks import OWED, SETTLE_AFTER_MS, Blocking, settle_owed
from fyp.catalog.blocks_check import BlocksScheduler, check_blocks
from fyp.catalog.models import now_ms
from fyp.cli.app import app
from fyp.errors import StorageError
from fyp.regions.deployment import Deployment
from fyp.sovereignty.erasure import Eraser
from fyp.sovereignty.erasure_verify import verify_erasure
from fyp.sovereignty.move import Mover
from sovereignty.move_helpers import allow_moves

LATER = SETTLE_AFTER_MS + 1_000  # past the grace a request's own write is given


def _owed(d: Deployment, region: str) -> list[tuple[str, str]]:
    rows = sql_store(d.store(region)).query(f"SELECT user_id, creator_id FROM {OWED}")
    return sorted((str(a), str(b)) for a, b in rows)


def _cut_short(monkeypatch: pytest.MonkeyPatch, times: int = 1) -> None:
    """The next ``times`` writes of a blocked side fail, as a store that is down does."""
    real = Blocking.mirror
    left = [times]

    def failing(self: Blocking, blocked: str, blocker: str, since_ms: int | None) -> None:
        if left[0] > 0:
            left[0] -= 1
            raise StorageError("the blocked user's region is down")
        real(self, blocked, blocker, since_ms)

    monkeypatch.setattr(Blocking, "mirror", failing)


def _block_cut_short(d: Deployment, monkeypatch: pytest.MonkeyPatch, times: int = 1) -> None:
    """cy (eu) blocks bob (us); the write of bob's side fails (and ``times - 1`` more)."""
    _cut_short(monkeypatch, times)
    with pytest.raises(StorageError):
        Blocking(d).block("cy", "bob")


def test_a_block_that_completes_leaves_nothing_owed(deployment: Deployment) -> None:
    _world(deployment)
    Blocking(deployment).block("cy", "bob")  # cy in eu, bob in us
    Blocking(deployment).unblock("cy", "bob")
    Blocking(deployment).block("ana", "bob")  # both in us
    assert _owed(deployment, "eu") == [] and _owed(deployment, "us") == []


def test_a_block_cut_short_is_owed_then_settled(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(deployment)
    _block_cut_short(deployment, monkeypatch)
    us = deployment.store("us")
    assert deployment.store("eu").blocked_creators("cy") == ["bob"]  # the blocker's row
    assert us.blocked_creators("bob") == []  # bob still sees cy: the side is owed
    assert _owed(deployment, "eu") == [("cy", "bob")]
    assert settle_owed(deployment) == (0, 0)  # too young: may still be its request's
    assert settle_owed(deployment, now=now_ms() + LATER) == (1, 0)
    assert us.blocked_creators("bob") == ["cy"] and _owed(deployment, "eu") == []
    assert check_blocks(deployment).ok


def test_the_blockers_export_lists_a_side_owed_until_it_is_settled(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fyp.sovereignty.export import UserExport

    _world(deployment)
    before = now_ms()
    _block_cut_short(deployment, monkeypatch)
    doc = UserExport(deployment, "cy").document()
    [owed] = doc["blocks_owed"]
    assert owed["creator_id"] == "bob" and owed["since_ms"] >= before
    assert doc["manifest"]["sections"]["blocks_owed"] == 1
    assert [b["creator_id"] for b in doc["blocked"]] == ["bob"]
    assert UserExport(deployment, "bob").document()["blocks_owed"] == []  # the blocker's
    settle_owed(deployment, now=now_ms() + LATER)
    doc = UserExport(deployment, "cy").document()
    assert doc["blocks_owed"] == [] and doc["manifest"]["sections"]["blocks_owed"] == 0


def test_an_unblock_cut_short_is_settled_as_no_blocked_side(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(deployment)
    Blocking(deployment).block("cy", "bob")
    _cut_short(monkeypatch)
    with pytest.raises(StorageError):
        Blocking(deployment).unblock("cy", "bob")
    assert deployment.store("us").blocked_creators("bob") == ["cy"]  # not yet
    assert settle_owed(deployment, now=now_ms() + LATER) == (1, 0)
    assert deployment.store("us").blocked_creators("bob") == []
    assert _owed(deployment, "eu") == [] and check_blocks(deployment).ok


def test_a_pair_that_cannot_be_settled_stays_owed(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(deployment)
    _block_cut_short(deployment, monkeypatch, times=2)
    assert settle_owed(deployment, now=now_ms() + LATER) == (0, 1)  # still down
    assert _owed(deployment, "eu") == [("cy", "bob")]
    assert settle_owed(deployment, now=now_ms() + LATER) == (1, 0)  # back up


def test_a_settlement_racing_a_request_writes_the_blocks_latest_state(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blocker unblocks while the settlement writes the block's side: the settlement
    reads the blocker's row again and writes what it says now, not what it read first."""
    _world(deployment)
    _block_cut_short(deployment, monkeypatch)
    real = Blocking.mirror
    raced = [False]

    def racing(self: Blocking, blocked: str, blocker: str, since_ms: int | None) -> None:
        real(self, blocked, blocker, since_ms)
        if not raced[0]:  # the unblock lands just after the settlement's first write
            raced[0] = True
            Blocking(deployment).unblock("cy", "bob")

    monkeypatch.setattr(Blocking, "mirror", racing)
    assert settle_owed(deployment, now=now_ms() + LATER) == (1, 0)
    assert deployment.store("us").blocked_creators("bob") == []
    assert check_blocks(deployment).ok and _owed(deployment, "eu") == []


def test_a_settlement_clears_only_what_it_settled(deployment: Deployment) -> None:
    """A request acting on the pair since leaves a newer owed row: that one stays."""
    _world(deployment)
    eu = sql_store(deployment.store("eu"))
    Blocking(deployment).block("cy", "bob")
    eu.execute(f"INSERT INTO {OWED} (user_id, creator_id, since_ms) VALUES ('cy', 'bob', 5)")
    Blocking(deployment)._settled("cy", "bob", "eu", owed_ms=4)
    assert _owed(deployment, "eu") == [("cy", "bob")]
    Blocking(deployment)._settled("cy", "bob", "eu", owed_ms=5)
    assert _owed(deployment, "eu") == []


def test_owed_rows_go_with_the_blocker_when_erased(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(deployment)
    _cut_short(monkeypatch, times=2)
    for blocker in ("cy", "eve"):  # both in eu, bob in us
        with pytest.raises(StorageError):
            Blocking(deployment).block(blocker, "bob")
    assert _owed(deployment, "eu") == [("cy", "bob"), ("eve", "bob")]
    assert Eraser(deployment).erase("eve").removed.get(OWED) == 1
    assert _owed(deployment, "eu") == [("cy", "bob")]
    assert not verify_erasure(deployment, "eve").remnants


def test_owed_rows_move_with_the_blocker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Deployment.init(tmp_path / "dep", ["us", "eu"]):
        pass
    allow_moves(tmp_path / "dep", "eu", "us")
    with Deployment.open(tmp_path / "dep") as d:
        _world(d)
        _block_cut_short(d, monkeypatch)
        Mover(d).move("cy", "us", "moved to Ohio")
        assert _owed(d, "eu") == [] and _owed(d, "us") == [("cy", "bob")]
        assert settle_owed(d, now=now_ms() + LATER) == (1, 0)
        assert d.store("us").blocked_creators("bob") == ["cy"] and check_blocks(d).ok


def test_erasing_the_blocked_user_takes_the_owed_row(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(deployment)
    _block_cut_short(deployment, monkeypatch)
    Eraser(deployment).erase("bob")
    assert _owed(deployment, "eu") == []
    assert not verify_erasure(deployment, "bob").remnants


def _cli(d: Deployment, *args: str) -> tuple[int, Any]:
    result = CliRunner().invoke(app, ["user", "blocks-settle", str(d.config.root), "--json", *args])
    return result.exit_code, json.loads(result.output)


def test_the_commands_default_age_is_the_schedules() -> None:
    """The option's default is written out in fyp.cli.users (which starts light)."""
    help_text = CliRunner().invoke(app, ["user", "blocks-settle", "--help"]).output
    assert f"default: {SETTLE_AFTER_MS / 1000}" in " ".join(help_text.split())


def test_the_command_settles_and_says_what_is_left(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(deployment)
    _block_cut_short(deployment, monkeypatch, times=2)
    assert _cli(deployment) == (0, {"ok": True, "settled": 0, "still_owed": 0})  # too young
    assert _cli(deployment, "--older-than", "0") == (
        1,
        {"ok": False, "settled": 0, "still_owed": 1},
    )
    assert _cli(deployment, "--older-than", "0") == (
        0,
        {"ok": True, "settled": 1, "still_owed": 0},
    )
    assert deployment.store("us").blocked_creators("bob") == ["cy"]


def test_the_schedule_runs_the_command_in_a_child_only_when_something_is_owed(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(deployment)
    scheduler = BlocksScheduler(deployment.config, deployment)
    assert scheduler.interval_s == 60 and not scheduler.due()
    _block_cut_short(deployment, monkeypatch)
    assert not scheduler.due()  # too young
    assert scheduler.due(now_ms() + LATER)
    sql_store(deployment.store("eu")).execute(  # as if owed for a minute already
        f"UPDATE {OWED} SET since_ms = since_ms - ?", (LATER,)
    )
    assert scheduler.program[0] == sys.executable  # the real `fyp user blocks-settle`
    assert scheduler.tick() is True and (scheduler.runs, scheduler.failures) == (1, 0)
    assert deployment.store("us").blocked_creators("bob") == ["cy"]
    assert _owed(deployment, "eu") == [] and not scheduler.due(now_ms() + LATER)
    assert scheduler.tick() is False and scheduler.runs == 1  # nothing owed: no child
