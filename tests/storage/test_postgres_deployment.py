"""Whole deployments on PostgreSQL: the API's, feeds', erasure's and export's own tests
run again with every store of every deployment they make in a schema of a PostgreSQL
server (``Deployment.init`` is given a ``--store`` URL). Runs when
``FYP_TEST_POSTGRES_URL`` names a server (CI starts one: ``.ci/run``)."""

from __future__ import annotations

import itertools
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fyp.regions.deployment import Deployment

SERVER = os.environ.get("FYP_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not SERVER, reason="FYP_TEST_POSTGRES_URL is not set")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sovereignty"))  # its helpers

from feed.conftest import trained  # noqa: E402, F401
from feed.test_api_feed import *  # noqa: E402, F403
from serving.test_api_events import *  # noqa: E402, F403
from serving.test_api_moderation import *  # noqa: E402, F403
from serving.test_api_ops import *  # noqa: E402, F403
from serving.test_api_users import *  # noqa: E402, F403
from serving.test_api_videos import *  # noqa: E402, F403
from sovereignty.test_erasure import *  # noqa: E402, F403
from sovereignty.test_export import *  # noqa: E402, F403

# What these check reads or writes SQLite files (planted rows, deleted bytes, buffered
# pages, backups, residency scans of store files): not ported to PostgreSQL yet.
for _name in (
    "test_deleted_bytes_do_not_linger_in_store_files",
    "test_verify_finds_planted_event_row_and_artifact_row",
    "test_reapply_after_a_restore_erases_again_without_a_new_ledger_entry",
    "test_a_name_inside_another_users_json_attributes_is_erased_too",
    "test_an_export_right_after_a_feed_page_holds_that_page",
):
    del globals()[_name]


@pytest.fixture(autouse=True)
def on_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every deployment a test makes keeps its stores in schemas of its own, dropped
    afterwards."""
    import psycopg

    prefix = f"d{uuid.uuid4().hex[:12]}"
    numbers = itertools.count()
    sep = "&" if "?" in SERVER else "?"
    real = Deployment.init.__func__  # type: ignore[attr-defined]

    def init(
        cls: type[Deployment],
        root: Any,
        regions: list[str],
        name: str | None = None,
        store: str | None = None,
    ) -> Deployment:
        template = f"{SERVER}{sep}schema={prefix}_{next(numbers)}_{{region}}"
        return real(cls, root, regions, name, store or template)  # type: ignore[no-any-return]

    monkeypatch.setattr(Deployment, "init", classmethod(init))
    yield
    with psycopg.connect(SERVER, autocommit=True) as conn:
        made = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{prefix}%",)
        ).fetchall()
        for (schema,) in made:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
