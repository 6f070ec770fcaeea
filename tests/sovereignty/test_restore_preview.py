"""What a restore drops: counted by ``fyp restore --dry-run`` before, and by the restore.

Sign-ups, events, uploads and profile edits since a backup have no record outside the
store, so a restore cannot put them back; these tests check the counts against what each test added
since its backup, that a dry run changes nothing, and that a restore says the same in
its warning and its audit entry. The PostgreSQL suite runs them again on a server store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from region_helpers import built, cli, copy_of

from fyp.audit.log import AuditLog, sql_store
from fyp.catalog.models import UserIn, UserPatch, VideoIn
from fyp.catalog.service import Catalog
from fyp.config import load_config
from fyp.errors import Conflict
from fyp.events.ingest import Ingestor
from fyp.regions.deployment import Deployment
from fyp.sovereignty.backup_writer import BackupWriter
from fyp.sovereignty.erasure import Eraser
from fyp.sovereignty.restore import Restorer
from fyp.sovereignty.staging import PENDING_RESTORE

__all__ = ["built"]
US = "us"


@pytest.fixture
def dep(built: Path, tmp_path: Path) -> Path:
    return copy_of(built, tmp_path / "dep")


def add(root: Path, users: int = 0, events: int = 0, videos: int = 0, tag: str = "late") -> None:
    """Sign-ups, likes by an existing user, and uploads, in region us."""
    with Deployment.open(root) as d:
        catalog = Catalog(d)
        for k in range(users):
            catalog.create_user(UserIn(user_id=f"{tag}-u{k}", home_region=US))
        for k in range(videos):
            catalog.create_video(
                VideoIn(video_id=f"{tag}-v{k}", creator_id="u0", duration_ms=9_000, regions=[US])
            )
        if events:
            Ingestor(d).ingest(
                [
                    {"event_id": f"{tag}-e{k}", "user_id": "u0", "video_id": "v1", "type": "like"}
                    for k in range(events)
                ]
            )


def everything(root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Every row of the us store and every file name under the region's directory."""
    with Deployment.open(root) as d:
        sql = sql_store(d.store(US))
        rows = {
            t: sorted(repr(r) for r in sql.query(f'SELECT * FROM "{t}"')) for t in sql.table_names()
        }
    region_dir = root / "regions" / US
    return rows, sorted(str(p.relative_to(region_dir)) for p in region_dir.rglob("*"))


def restore_details(root: Path) -> list[dict[str, object]]:
    with Deployment.open(root) as d:
        return [dict(e.details) for e in AuditLog(d.store(US)).entries(action="restore")]


def test_a_dry_run_counts_what_a_restore_drops_and_changes_nothing(dep: Path) -> None:
    BackupWriter(load_config(dep), US).run()
    add(dep, users=2, events=3, videos=1)
    before = everything(dep)
    code, out = cli("restore", str(dep), "--region", US, "--dry-run", "--json")
    assert code == 0, out
    preview = json.loads(out)
    assert preview["dropped_since_backup"] == {
        "users": 2,
        "events": 3,
        "videos": 1,
        "profile_edits": 0,
    }
    assert preview["replaced_store_damage"] is None
    assert preview["audit_entries_to_carry"] == 1  # the upload's automated verdict
    assert preview["users_to_remove_again"] == 0
    assert everything(dep) == before  # not a row, not a file: the staging copy is gone
    code, out = cli("restore", str(dep), "--region", US, "--dry-run")
    assert code == 0 and "2 users, 3 events, 1 video" in out and "nothing was changed" in out
    # the restore says the same, exits 1, and records the counts (never an id)
    code, out = cli("restore", str(dep), "--region", US, "--json")
    assert code == 1
    (warning,) = json.loads(out)["warnings"]
    assert warning.startswith("2 users, 3 events, 1 video added since the backup")
    (details,) = restore_details(dep)
    assert details["dropped_since_backup"] == {
        "users": 2,
        "events": 3,
        "videos": 1,
        "profile_edits": 0,
    }


def test_a_restore_with_nothing_added_since_drops_nothing(dep: Path) -> None:
    BackupWriter(load_config(dep), US).run()
    code, out = cli("restore", str(dep), "--region", US, "--dry-run", "--json")
    assert json.loads(out)["dropped_since_backup"] == {
        "users": 0,
        "events": 0,
        "videos": 0,
        "profile_edits": 0,
    }
    code, out = cli("restore", str(dep), "--region", US, "--json")
    assert code == 0 and json.loads(out)["warnings"] == []
    (details,) = restore_details(dep)
    assert "dropped_since_backup" not in details


def test_profile_edits_since_the_backup_are_counted_as_undone(dep: Path) -> None:
    BackupWriter(load_config(dep), US).run()
    with Deployment.open(dep) as d:
        catalog = Catalog(d)
        catalog.update_user("u0", UserPatch(language="zh"))
        catalog.update_user("u2", UserPatch(country="DE"))
        catalog.update_user("u2", UserPatch(country="FR"))  # one user, edited twice
        catalog.update_user("u1", UserPatch(country="FR"))  # in eu: not this restore's
    add(dep, users=1)  # a sign-up is added, not edited
    code, out = cli("restore", str(dep), "--region", US, "--dry-run", "--json")
    assert json.loads(out)["dropped_since_backup"] == {
        "users": 1,
        "events": 0,
        "videos": 0,
        "profile_edits": 2,
    }
    code, out = cli("restore", str(dep), "--region", US, "--dry-run")
    assert "profiles edited since the backup (the edits undone): 2 users" in out
    code, out = cli("restore", str(dep), "--region", US, "--json")
    assert code == 1
    added, edited = json.loads(out)["warnings"]
    assert added.startswith("1 user, 0 events, 0 videos added since the backup")
    assert edited.startswith("the profile edits of 2 users made since the backup")
    assert "are undone" in edited
    with Deployment.open(dep) as d:
        assert Catalog(d).get_user("u0").language != "zh"  # the backup's profile is back
    (details,) = restore_details(dep)
    assert details["dropped_since_backup"]["profile_edits"] == 2


def test_erased_users_are_removed_again_not_counted_as_dropped(dep: Path) -> None:
    config = load_config(dep)
    BackupWriter(config, US).run()
    with Deployment.open(dep) as d:
        Eraser(d).erase("u2")
    preview = Restorer(config, US).preview()
    assert preview.users_to_remove_again == 1  # u2 is in the backup; the ledger says gone
    assert preview.dropped_since_backup == {
        "users": 0,
        "events": 0,
        "videos": 0,
        "profile_edits": 0,
    }
    assert preview.audit_entries_to_carry is not None and preview.audit_entries_to_carry >= 1
    report = Restorer(config, US).run()
    assert len(report.reerased) == 1 and report.warnings == []


def test_events_are_compared_by_id_once_the_numbering_went_apart(dep: Path) -> None:
    """Restoring an older backup reuses event numbers; the next restore of the newer
    backup must still count the events it lacks, whatever their numbers."""
    config = load_config(dep)
    older = BackupWriter(config, US).run()
    add(dep, events=3, tag="a")  # numbered past the older backup's last
    BackupWriter(config, US).run()  # the newer backup holds those three
    Restorer(config, US).run(older.backup_id)  # back to before them
    add(dep, events=2, tag="b")  # the same numbers as two of the three, other events
    preview = Restorer(config, US).preview()  # latest: the newer backup
    assert preview.dropped_since_backup == {
        "users": 0,
        "events": 2,
        "videos": 0,
        "profile_edits": 0,
    }


def test_a_dry_run_is_refused_while_a_restore_is_unfinished(dep: Path) -> None:
    config = load_config(dep)
    BackupWriter(config, US).run()
    marker = dep / "regions" / US / PENDING_RESTORE
    marker.write_text("{}")  # (what a restore cut short leaves; its content is not read)
    try:
        with pytest.raises(Conflict, match="unfinished restore"):
            Restorer(config, US).preview()
    finally:
        marker.unlink()
