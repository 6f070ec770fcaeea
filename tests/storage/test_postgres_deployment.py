"""Whole deployments on PostgreSQL: the API's (a video by link among them), feeds'
(experiment exposures, the feed not based on profiling, the guest feed, the
Following tab and a tuned pipeline among them), erasure's, export's, follows'
and blocks' own tests run again with every store of every deployment they make in a
schema of a PostgreSQL server (``Deployment.init`` is given a ``--store`` URL). Runs
when ``FYP_TEST_POSTGRES_URL`` names a server (CI starts one: ``.ci/run``)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import SERVER, deployments_on_postgres, drop_schemas, schema_url

from fyp.regions.deployment import Deployment

pytestmark = pytest.mark.skipif(not SERVER, reason="FYP_TEST_POSTGRES_URL is not set")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sovereignty"))  # its helpers

from catalog.test_blocks import *  # noqa: E402, F403
from catalog.test_blocks_check import *  # noqa: E402, F403
from catalog.test_blocks_owed import *  # noqa: E402, F403
from catalog.test_follow_order import *  # noqa: E402, F403
from catalog.test_follows import *  # noqa: E402, F403
from feed.conftest import trained  # noqa: E402, F401
from feed.test_api_feed import *  # noqa: E402, F403
from feed.test_event_order import *  # noqa: E402, F403
from feed.test_experiment_exposures import *  # noqa: E402, F403
from feed.test_feed_consent import *  # noqa: E402, F403
from feed.test_following_tab import *  # noqa: E402, F403
from feed.test_guest_feed import *  # noqa: E402, F403
from feed.test_tuned_feed import *  # noqa: E402, F403
from feed.test_watch import test_the_tab_and_the_link_show_the_same_videos  # noqa: E402, F401
from serving.test_api_errors import (  # noqa: E402, F401 - a NUL was a 500 on PostgreSQL
    test_a_nul_escaped_as_text_and_in_an_event_are_not_refused_as_nul,
    test_text_with_a_nul_character_is_a_422_naming_it,
)
from serving.test_api_events import *  # noqa: E402, F403
from serving.test_api_moderation import *  # noqa: E402, F403
from serving.test_api_ops import *  # noqa: E402, F403
from serving.test_api_users import *  # noqa: E402, F403
from serving.test_api_video_by_link import *  # noqa: E402, F403
from serving.test_api_videos import *  # noqa: E402, F403
from sovereignty.test_erasure import *  # noqa: E402, F403
from sovereignty.test_export import *  # noqa: E402, F403

# What these check reads or writes SQLite files (planted rows, deleted bytes, buffered
# pages, residency scans of store files): not ported to PostgreSQL yet. (Backups,
# restores and carve-outs of PostgreSQL regions: test_postgres_backups.py.)
for _name in (
    "test_deleted_bytes_do_not_linger_in_store_files",
    "test_erasure_process_does_the_wal_truncation_an_erasure_owed",
    "test_verify_finds_planted_event_row_and_artifact_row",
    "test_reapply_after_a_restore_erases_again_without_a_new_ledger_entry",
    "test_a_name_inside_another_users_json_attributes_is_erased_too",
    "test_an_export_right_after_a_feed_page_holds_that_page",
    # a PostgreSQL store writes each exposure at once: only SQLite's commits in groups
    "test_a_serving_store_writes_the_exposure_with_the_served_logs_group",
):
    del globals()[_name]


@pytest.fixture(autouse=True)
def on_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every deployment a test makes keeps its stores in schemas of its own, dropped
    afterwards."""
    with deployments_on_postgres(monkeypatch):
        yield


# -- the residency scan reads a region's PostgreSQL store through its connection ----------
def _scanned(tmp_path: Path) -> Deployment:
    from fyp.catalog.models import UserIn, VideoIn
    from fyp.catalog.service import Catalog
    from fyp.moderation import Moderator

    d = Deployment.init(tmp_path / "dep", ["us", "eu"])
    catalog = Catalog(d)
    for u in range(6):
        catalog.create_user(UserIn(user_id=f"u{u}", home_region=("us", "eu")[u % 2]))
    catalog.create_video(
        VideoIn(video_id="v0", creator_id="u1", duration_ms=9_000, regions=["us", "eu"])
    )
    for region in d.regions:
        Moderator(d).run(region)
    return d


def test_residency_check_reads_postgres_stores(tmp_path: Path) -> None:
    import json

    from fyp.catalog.models import User
    from fyp.sovereignty.residency import ResidencyScanner
    from sovereignty.region_helpers import cli

    d = _scanned(tmp_path)
    try:
        report = ResidencyScanner(d.config.root).run()
        assert report.ok and report.findings == []
        us = next(r for r in report.to_dict()["regions"] if r["region"] == "us")
        assert us["scanned"]["store_columns"] >= 4 and us["exempt_creators"] > 0
        # what an app sent about u0 names an eu user, a ghost, and a non-person field
        store = d.store("us")
        u0 = store.get_user("u0")
        assert u0 is not None
        attributes = {"invited_by": "u1", "circle": {"user_ids": ["u3", "u0"]}, "user_id": "x9"}
        store.update_user(User(**{**u0.model_dump(), "attributes": {**attributes, "pet": "u5"}}))
        code, out = cli("residency", "check", str(d.config.root), "--json")
        assert code == 1
        found = {(f["kind"], f["location"], f["user_id"]) for f in json.loads(out)["findings"]}
        assert found == {
            ("foreign", "users.attributes.invited_by", "u1"),
            ("foreign", "users.attributes.user_ids", "u3"),
            ("orphan", "users.attributes.user_id", "x9"),
        }
    finally:
        d.close()


def test_a_region_declared_on_postgres_is_created_by_region_add(tmp_path: Path) -> None:
    """The documented way to add a region whose store is on a server: declare it in
    fyp.toml with its URL, then `fyp region add` makes the schema and its tables."""
    from fyp.config import CONFIG_FILE
    from sovereignty.region_helpers import cli

    Deployment.init(tmp_path / "dep", ["us"]).close()
    prefix = f"ra{uuid.uuid4().hex[:10]}"
    url = schema_url(f"{prefix}_apac")
    config = tmp_path / "dep" / CONFIG_FILE
    config.write_text(config.read_text() + f'\n[regions.apac]\nstore = "{url}"\n')
    try:
        code, out = cli("region", "add", str(tmp_path / "dep"), "apac")
        assert code == 0, out
        with Deployment.open(tmp_path / "dep") as d:
            assert d.regions == ["us", "apac"] and d.store("apac").schema_version() >= 20
        code, out = cli("region", "add", str(tmp_path / "dep"), "apac")
        assert code != 0 and "already has a store" in out
    finally:
        drop_schemas(prefix)
