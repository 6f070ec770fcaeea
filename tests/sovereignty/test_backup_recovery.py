"""Backups and restores that are interrupted, meet damaged files, or find damaged backups:
no plaintext copy outlives its run, an erasure is never lost, the newest backup is never
silently passed over (acceptance review)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from region_helpers import built, cli, copy_of

from fyp.config import load_config
from fyp.errors import StorageError
from fyp.regions.deployment import Deployment
from fyp.sovereignty.backup import BackupWriter, remove_stale_partials
from fyp.sovereignty.staging import Staging, remove_stale

__all__ = ["built"]

KILLED_MID_BACKUP = """
import os, signal, sys
from fyp.sovereignty.backup import BackupWriter
BackupWriter._pack = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
sys.argv = ["fyp", *sys.argv[1:]]
from fyp.cli import main
main()
"""


@pytest.fixture
def dep(built: Path, tmp_path: Path) -> Path:
    return copy_of(built, tmp_path / "dep")


def users(root: Path, region: str) -> set[str]:
    with Deployment.open(root) as d:
        return {u.user_id for u in d.store(region).iter_users()}


def kill_a_backup(dep: Path, region: str) -> None:
    """``fyp backup`` killed with SIGKILL once its snapshot is written."""
    run = subprocess.run(
        [sys.executable, "-c", KILLED_MID_BACKUP, "backup", str(dep), "--region", region],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
    )
    assert run.returncode == -9, run.stderr


def leftovers(dep: Path, region: str) -> list[str]:
    found = [p for p in (dep / "regions" / region).iterdir() if p.name.startswith(".backup-")]
    found += [p for p in (dep / "backups" / region).glob(".*.partial")]
    return sorted(p.name for p in found)


def test_a_killed_backups_plaintext_copy_is_found_by_verify_and_removed(dep: Path) -> None:
    kill_a_backup(dep, "us")
    (copy,) = (dep / "regions" / "us").glob(".backup-us-*")
    assert (copy / "store.sqlite").is_file()  # the whole store, in plaintext
    assert len(leftovers(dep, "us")) == 2  # and an empty half-written backup
    code, _ = cli("erasure", "erase", str(dep), "u2")
    assert code == 0
    code, out = cli("erasure", "verify", str(dep), "u2", "--json")
    report = json.loads(out)
    assert code == 1 and report["status"] == "remnants"
    places = {r["where"] for r in report["remnants"] if r["kind"] == "copy"}
    assert f"{copy.name}/store.sqlite: users.user_id" in places
    code, out = cli("erasure", "process", str(dep), "--json")
    assert code == 0
    (run,) = [r for r in json.loads(out)["runs"] if r["region"] == "us"]
    assert run["stale_copies"] == [copy.name] and not copy.exists()
    code, out = cli("erasure", "verify", str(dep), "u2")
    assert code == 0 and "erased" in out
    # the next backup removes what a killed one left in its target
    kill_a_backup(dep, "us")
    assert len(leftovers(dep, "us")) == 2
    BackupWriter(load_config(dep), "us").run()
    assert leftovers(dep, "us") == []


def test_a_running_runs_staging_directory_is_never_removed(dep: Path) -> None:
    region_dir = dep / "regions" / "us"
    target = dep / "backups" / "us"
    target.mkdir(parents=True)
    stale = region_dir / ".backup-us-dead"
    stale.mkdir()  # no lock file at all: left by a run killed as it began
    (target / ".us-dead.partial").mkdir()
    (target / ".us-old.deleting").mkdir()
    with Staging(region_dir / ".backup-us-alive") as alive:
        (alive.path / "store.sqlite").write_bytes(b"x")
        (target / ".us-alive.partial").mkdir()
        assert remove_stale(region_dir) == [stale]
        assert [p.name for p in remove_stale_partials(region_dir, target)] == [
            ".us-dead.partial",
            ".us-old.deleting",
        ]
        BackupWriter(load_config(dep), "us").run()
        assert (alive.path / "store.sqlite").is_file()
        assert (target / ".us-alive.partial").is_dir()
        with pytest.raises(StorageError, match="in use"):
            Staging(alive.path, create=False).__enter__()
    assert not alive.path.exists()
    assert remove_stale_partials(region_dir, target) == [target / ".us-alive.partial"]
