"""What a region's store keeps for user reports: the checkpoint and the report indexes.

Reports are ``report`` events, stored like every event in the reporter's home region:
a region's store holds only its own users' reports, so a region counts only those
(residency by construction). Two partial indexes cover only report events, so event
ingestion pays for them on reports alone: one by ``seq`` (what is new since the
checkpoint: the server's "is a run needed" check is one seek in it), one by video and
time (distinct reporters of a video in a window).

The checkpoint (``report_checkpoint``, one row) is the newest report event a
run has read: its ``seq`` and, as a marker, its time and video (no event id: a client's
event id may spell a user's name, and the checkpoint must outlive an erasure). A SQLite
store may hand a deleted row's ``seq`` to the next event: if the newest events are
erased, a new report could get a number at or below the checkpoint and be missed. So
the checkpoint counts only while the event it names is still there unchanged; otherwise
the next run reads every report of the window again (counting is a recount anyway, so
reading a report twice changes nothing).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from fyp.audit.log import SQLStore
from fyp.storage.migrations import Migration

_JOB_COLUMNS = (
    "job_no, region, video_id, kind, status, reason, created_at_ms, excluded, appellant, "
    "claimed_by, claimed_at_ms, decided_by, decided_at_ms, verdict, note"
)
_REPORT_TABLES = """
    CREATE TABLE report_checkpoint (
        region         TEXT PRIMARY KEY CHECK (region = '{region}'),
        last_seq       INTEGER NOT NULL,
        last_ts_ms     INTEGER NOT NULL,
        last_video_id  TEXT NOT NULL,
        updated_at_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX events_reports ON events (seq) WHERE type = 'report';
    CREATE INDEX events_reports_video ON events (video_id, ts_ms, user_id)
        WHERE type = 'report';
"""
REPORTS_MIGRATION = Migration(
    23,
    "moderation: report review jobs (job details), the user-report checkpoint and indexes",
    # SQLite cannot change a CHECK constraint in place: the jobs table is rebuilt (its
    # rows, numbers and indexes kept) to admit the kind 'report' and a details column
    f"""
    CREATE TABLE moderation_jobs_v23 (
        job_no         INTEGER PRIMARY KEY,
        region         TEXT NOT NULL CHECK (region = '{{region}}'),
        video_id       TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('review', 'appeal', 'report')),
        status         TEXT NOT NULL CHECK (status IN ('open', 'claimed', 'decided',
                           'superseded')),
        reason         TEXT NOT NULL,
        created_at_ms  INTEGER NOT NULL,
        excluded       TEXT NOT NULL DEFAULT '[]',
        appellant      TEXT,
        claimed_by     TEXT,
        claimed_at_ms  INTEGER,
        decided_by     TEXT,
        decided_at_ms  INTEGER,
        verdict        TEXT,
        note           TEXT,
        details        TEXT NOT NULL DEFAULT '{{{{}}}}'
    );
    INSERT INTO moderation_jobs_v23 ({_JOB_COLUMNS})
        SELECT {_JOB_COLUMNS} FROM moderation_jobs;
    DROP TABLE moderation_jobs;
    ALTER TABLE moderation_jobs_v23 RENAME TO moderation_jobs;
    CREATE INDEX moderation_jobs_status ON moderation_jobs (status, job_no);
    CREATE UNIQUE INDEX moderation_jobs_one_open ON moderation_jobs (video_id)
        WHERE status IN ('open', 'claimed');
    {_REPORT_TABLES}
    """,
    postgres=f"""
    ALTER TABLE moderation_jobs DROP CONSTRAINT moderation_jobs_kind_check;
    ALTER TABLE moderation_jobs ADD CONSTRAINT moderation_jobs_kind_check
        CHECK (kind IN ('review', 'appeal', 'report'));
    ALTER TABLE moderation_jobs ADD COLUMN details TEXT NOT NULL DEFAULT '{{{{}}}}';
    {_REPORT_TABLES.replace("INTEGER", "BIGINT").replace(") WITHOUT ROWID", ")")}
    """,
)


class Mark(NamedTuple):
    """A report event as the checkpoint names it."""

    seq: int
    ts_ms: int
    video_id: str


_VALID = (
    "EXISTS (SELECT 1 FROM events e WHERE e.seq = c.last_seq AND e.type = 'report' "
    "AND e.ts_ms = c.last_ts_ms AND e.video_id = c.last_video_id)"
)


class ReportStore:
    """The report queries and the checkpoint of one region store; writes join the
    caller's transaction."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        self.region = store.region

    def needs_run(self) -> bool:
        """Whether a report came in since the checkpoint (or the checkpoint's event is
        gone): one statement, a seek in the report index."""
        return bool(
            self.store.query(
                "SELECT 1 FROM events WHERE type = 'report' AND seq > COALESCE("
                "(SELECT last_seq FROM report_checkpoint), 0) "
                f"UNION ALL SELECT 1 FROM report_checkpoint c WHERE NOT {_VALID} "
                "LIMIT 1"
            )
        )

    def checkpoint(self) -> Mark | None:
        """The checkpoint if its event is still there as recorded, else None (read the
        whole window again)."""
        rows = self.store.query(
            f"SELECT last_seq, last_ts_ms, last_video_id FROM report_checkpoint c WHERE {_VALID}"
        )
        return Mark(int(rows[0][0]), int(rows[0][1]), str(rows[0][2])) if rows else None

    def head(self) -> Mark | None:
        """The newest report event (None: there is none)."""
        rows = self.store.query(
            "SELECT seq, ts_ms, video_id FROM events WHERE type = 'report' "
            "ORDER BY seq DESC LIMIT 1"
        )
        return Mark(int(rows[0][0]), int(rows[0][1]), str(rows[0][2])) if rows else None

    def reported_videos(self, after_seq: int, upto_seq: int, since_ms: int) -> list[str]:
        """Videos of the region's catalogue with a report event in ``(after_seq,
        upto_seq]`` made at ``since_ms`` or later (an older one counts for nothing)."""
        rows = self.store.query(
            "SELECT DISTINCT e.video_id FROM events e JOIN videos v ON v.video_id = e.video_id "
            "WHERE e.type = 'report' AND e.seq > ? AND e.seq <= ? AND e.ts_ms >= ? "
            "ORDER BY e.video_id",
            (after_seq, upto_seq, since_ms),
        )
        return [str(r[0]) for r in rows]

    def reporters(self, since: dict[str, int], upto_seq: int) -> dict[str, int]:
        """Video id -> how many distinct users reported it at or after ``since[video]``
        (in report events up to ``upto_seq``). One query, a row per video and reporter
        (the ids are counted here and go no further)."""
        if not since:
            return {}
        rows = self.store.query(
            "SELECT video_id, user_id, MAX(ts_ms) FROM events WHERE type = 'report' "
            "AND video_id IN (SELECT value FROM json_each(?)) AND ts_ms >= ? AND seq <= ? "
            "GROUP BY video_id, user_id",
            (json.dumps(sorted(since), ensure_ascii=False), min(since.values()), upto_seq),
        )
        out = dict.fromkeys(since, 0)
        for video_id, _, last_ms in rows:
            if int(last_ms) >= since[str(video_id)]:
                out[str(video_id)] += 1
        return out

    def set_checkpoint(self, mark: Mark | None, ts_ms: int) -> None:
        if mark is None:
            self.store.execute("DELETE FROM report_checkpoint")
            return
        self.store.execute(
            "INSERT INTO report_checkpoint (region, last_seq, last_ts_ms, "
            "last_video_id, updated_at_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT (region) DO "
            "UPDATE SET last_seq = excluded.last_seq, last_ts_ms = excluded.last_ts_ms, "
            "last_video_id = excluded.last_video_id, updated_at_ms = excluded.updated_at_ms",
            (self.region, *mark, ts_ms),
        )
