"""``fyp quarantine``: damaged stores a restore kept are listed, and removed only on record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from region_helpers import built, cli, copy_of
from test_restore_salvage import backup_then_takedown, leaf_pages, smash

from fyp.audit.log import AuditLog
from fyp.config import load_config
from fyp.regions.deployment import Deployment
from fyp.sovereignty import quarantine
from fyp.sovereignty.region_data import store_file

__all__ = ["built"]


@pytest.fixture
def kept(built: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """A deployment whose us store was damaged and restored over: (root, the quarantined
    store's name, the backup restored)."""
    root = copy_of(built, tmp_path / "dep")
    backup_id = backup_then_takedown(root)
    live = store_file(load_config(root), "us")
    smash(live, leaf_pages(live, "audit_log")[:1])
    code, out = cli("restore", str(root), "--region", "us")
    assert code == 0, out
    (aside,) = (root / "regions" / "us" / ".quarantine").iterdir()
    return root, aside.name, backup_id


def removals(root: Path) -> list[dict[str, object]]:
    with Deployment.open(root) as d:
        log = AuditLog(d.store("us"))
        assert log.verify().ok
        return [
            {"actor": e.actor, "subject": e.subject, **e.details}
            for e in log.entries(action=quarantine.REMOVED)
        ]


def test_the_list_says_what_is_kept_since_when_and_why(kept: tuple[Path, str, str]) -> None:
    root, name, backup_id = kept
    code, out = cli("quarantine", "list", str(root), "--json")
    assert code == 0, out
    listed = json.loads(out)
    assert listed["eu"] == []
    (entry,) = listed["us"]
    assert entry["name"] == name and entry["path"] == f".quarantine/{name}"
    assert entry["replaced_by_backup"] == backup_id and entry["damage"]
    assert entry["bytes"] > 0 and entry["files"] >= 2  # the store and why.json
    code, out = cli("quarantine", "list", str(root), "--region", "us")
    assert code == 0 and name in out and backup_id in out


def test_a_removal_is_recorded_before_the_files_go(kept: tuple[Path, str, str]) -> None:
    root, name, backup_id = kept
    args = ["quarantine", "remove", str(root), name, "--region", "us"]
    code, out = cli(*args, "--reason", "  ", "--json")
    assert code == 2 and "reason" in out  # a removal needs a why
    code, out = cli(*args, "--reason", "nothing left to salvage", "--actor", "ops:alice", "--json")
    assert code == 0, out
    done = json.loads(out)
    assert not (root / "regions" / "us" / ".quarantine" / name).exists()
    (entry,) = removals(root)
    assert entry["actor"] == "ops:alice" and entry["subject"] == f".quarantine/{name}"
    assert entry["reason"] == "nothing left to salvage"
    assert entry["replaced_by_backup"] == backup_id and entry["bytes"] == done["bytes"]
    code, out = cli("quarantine", "list", str(root), "--json")
    assert json.loads(out)["us"] == []


def test_only_a_listed_store_can_be_named(kept: tuple[Path, str, str]) -> None:
    root, name, _ = kept
    for bad in ("..", "../store.sqlite", f"{name}/why.json", "store-nope"):
        code, out = cli("quarantine", "remove", str(root), bad, "--region", "us", "--reason", "x")
        assert code == 2 and name in out, (bad, out)
    code, _ = cli("quarantine", "remove", str(root), name, "--region", "eu", "--reason", "x")
    assert code == 2  # not that region's
    assert (root / "regions" / "us" / ".quarantine" / name).is_dir()
    assert removals(root) == []


def test_a_removal_cut_short_is_finished_by_running_it_again_recorded_once(
    kept: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, name, _ = kept
    real = shutil.rmtree

    def fail(path: object, *args: object, **kwargs: object) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(quarantine.shutil, "rmtree", fail)
    with Deployment.open(root) as d, pytest.raises(OSError):
        quarantine.remove(d, "us", name, "done with it", "ops:bob")
    assert (root / "regions" / "us" / ".quarantine" / name).is_dir()
    assert len(removals(root)) == 1  # on record before the files went
    monkeypatch.setattr(quarantine.shutil, "rmtree", real)
    with Deployment.open(root) as d:
        quarantine.remove(d, "us", name, "done with it (again)", "ops:bob")
    assert not (root / "regions" / "us" / ".quarantine" / name).exists()
    (entry,) = removals(root)
    assert entry["reason"] == "done with it"
