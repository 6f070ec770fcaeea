"""Moderation tables in a region's store: states, review jobs, caption fingerprints.

A region's store holds the moderation state of that region's catalogue, so a video
published to us and eu has one row in each store, each judged under its region's
policy. A video with no row is pending: imports write catalogue rows directly, and a
failed hook must never leave a video eligible. The region is baked into CHECK
constraints like every other table of the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fyp.audit.log import SQLStore, canonical_json
from fyp.errors import JobConflict, UnknownJob
from fyp.storage.migrations import Migration

MODERATION_MIGRATION = Migration(
    10,
    "moderation: per-region states, human review jobs, caption fingerprints",
    """
    CREATE TABLE moderation (
        video_id       TEXT PRIMARY KEY,
        region         TEXT NOT NULL CHECK (region = '{region}'),
        state          TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected',
                           'restricted', 'age_restricted', 'blocked')),
        creator_ok     INTEGER NOT NULL DEFAULT 0 CHECK (creator_ok IN (0, 1)),
        reason         TEXT NOT NULL DEFAULT '',
        source         TEXT NOT NULL,
        decided_by     TEXT NOT NULL,
        decided_at_ms  INTEGER NOT NULL,
        revision       INTEGER NOT NULL DEFAULT 0,
        verdict        TEXT NOT NULL DEFAULT '{{}}',
        input          TEXT NOT NULL DEFAULT '{{}}',
        audit_seq      INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX moderation_state ON moderation (state);

    CREATE TABLE moderation_jobs (
        job_no         INTEGER PRIMARY KEY,
        region         TEXT NOT NULL CHECK (region = '{region}'),
        video_id       TEXT NOT NULL,
        kind           TEXT NOT NULL CHECK (kind IN ('review', 'appeal')),
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
        note           TEXT
    );
    CREATE INDEX moderation_jobs_status ON moderation_jobs (status, job_no);
    CREATE UNIQUE INDEX moderation_jobs_one_open ON moderation_jobs (video_id)
        WHERE status IN ('open', 'claimed');

    CREATE TABLE moderation_signatures (
        video_id       TEXT PRIMARY KEY,
        region         TEXT NOT NULL CHECK (region = '{region}'),
        creator_id     TEXT,
        minhash        BLOB,
        media_sha256   TEXT,
        updated_at_ms  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX moderation_signatures_media ON moderation_signatures (media_sha256);
    """,
)

_RECORD_COLS = (
    "video_id, state, creator_ok, reason, source, decided_by, decided_at_ms, revision, "
    "verdict, input, audit_seq"
)
_JOB_COLS = (
    "job_no, region, video_id, kind, status, reason, created_at_ms, excluded, appellant, "
    "claimed_by, claimed_at_ms, decided_by, decided_at_ms, verdict, note, details"
)


@dataclass(frozen=True)
class Record:
    """A video's moderation state in one region."""

    video_id: str
    region: str
    state: str
    creator_ok: bool
    reason: str
    source: str
    decided_by: str
    decided_at_ms: int
    revision: int
    verdict: dict[str, Any] = field(default_factory=dict)
    input: dict[str, Any] = field(default_factory=dict)
    audit_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "region": self.region,
            "state": self.state,
            "creator_ok": self.creator_ok,
            "reason": self.reason,
            "source": self.source,
            "decided_by": self.decided_by,
            "decided_at_ms": self.decided_at_ms,
            "revision": self.revision,
            "verdict": self.verdict,
            "audit_seq": self.audit_seq,
        }


@dataclass(frozen=True)
class Job:
    job_id: str  # "<region>-<n>": unique across the deployment
    region: str
    video_id: str
    kind: str
    status: str
    reason: str
    created_at_ms: int
    excluded: tuple[str, ...]
    appellant: str | None
    claimed_by: str | None
    claimed_at_ms: int | None
    decided_by: str | None
    decided_at_ms: int | None
    verdict: str | None
    note: str | None
    details: dict[str, Any] = field(default_factory=dict)
    """What the job's kind tells the reviewer beyond its reason (a ``report`` job: how
    many distinct users reported the video, in which window; never who)."""

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["excluded"] = list(self.excluded)
        out["details"] = dict(self.details)
        return out


JOB_KINDS = ("review", "appeal", "report")
"""A review job's kinds: opened by a check or policy, by an appeal, by users' reports."""


def job_id(region: str, job_no: int) -> str:
    return f"{region}-{job_no}"


def split_job_id(value: str) -> tuple[str, int]:
    region, _, number = value.rpartition("-")
    if not region or not number.isdigit():
        raise UnknownJob(f"no review job {value!r} (job ids look like 'us-12')", job_id=value)
    return region, int(number)


class ModerationStore:
    """The moderation tables of one region store. Writes join the caller's transaction."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        self.region = store.region

    # -- states ---------------------------------------------------------------
    def states(self, video_ids: Sequence[str]) -> dict[str, tuple[str, bool]]:
        """State and creator eligibility of each id that has a row: one query, any size."""
        if not video_ids:
            return {}
        rows = self.store.query(
            "SELECT video_id, state, creator_ok FROM moderation "
            "WHERE video_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(video_ids), ensure_ascii=False),),
        )
        return {str(r[0]): (str(r[1]), bool(r[2])) for r in rows}

    def all_states(self) -> dict[str, str]:
        return {
            str(r[0]): str(r[1]) for r in self.store.query("SELECT video_id, state FROM moderation")
        }

    def get(self, video_id: str) -> Record | None:
        rows = self.store.query(
            f"SELECT {_RECORD_COLS} FROM moderation WHERE video_id = ?", (video_id,)
        )
        if not rows:
            return None
        r = rows[0]
        return Record(
            video_id=str(r[0]),
            region=self.region,
            state=str(r[1]),
            creator_ok=bool(r[2]),
            reason=str(r[3]),
            source=str(r[4]),
            decided_by=str(r[5]),
            decided_at_ms=int(r[6]),
            revision=int(r[7]),
            verdict=json.loads(r[8]),
            input=json.loads(r[9]),
            audit_seq=None if r[10] is None else int(r[10]),
        )

    def pending(self, limit: int | None = None) -> list[tuple[str, int]]:
        """Catalogue videos without a verdict and not waiting for a human, oldest first,
        with the revision the verdict must still match when it is written."""
        rows = self.store.query(
            "SELECT v.video_id, COALESCE(m.revision, 0) FROM videos v "
            "LEFT JOIN moderation m ON m.video_id = v.video_id "
            "WHERE (m.state IS NULL OR m.state = 'pending') AND NOT EXISTS ("
            "  SELECT 1 FROM moderation_jobs j WHERE j.video_id = v.video_id "
            "  AND j.status IN ('open', 'claimed')) "
            "ORDER BY v.created_at_ms, v.video_id" + ("" if limit is None else " LIMIT ?"),
            () if limit is None else (limit,),
        )
        return [(str(r[0]), int(r[1])) for r in rows]

    def has_pending(self) -> bool:
        """Whether :meth:`pending` would return anything: one row, in no order (a server
        asks every few seconds, so it must not sort the catalogue)."""
        return bool(
            self.store.query(
                "SELECT 1 FROM videos v LEFT JOIN moderation m ON m.video_id = v.video_id "
                "WHERE (m.state IS NULL OR m.state = 'pending') AND NOT EXISTS ("
                "  SELECT 1 FROM moderation_jobs j WHERE j.video_id = v.video_id "
                "  AND j.status IN ('open', 'claimed')) LIMIT 1"
            )
        )

    def judged(self) -> list[tuple[str, int, str, str]]:
        """Catalogue videos with a verdict: id, revision, state and the verdict's source
        (a policy recheck re-judges them)."""
        rows = self.store.query(
            "SELECT m.video_id, m.revision, m.state, m.source FROM moderation m "
            "JOIN videos v ON v.video_id = m.video_id WHERE m.state != 'pending' "
            "ORDER BY v.created_at_ms, v.video_id"
        )
        return [(str(r[0]), int(r[1]), str(r[2]), str(r[3])) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        rows = self.store.query(
            "SELECT COALESCE(m.state, 'pending'), COUNT(*) FROM videos v "
            "LEFT JOIN moderation m ON m.video_id = v.video_id GROUP BY 1"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def count_jobs_by_status(self) -> dict[str, int]:
        rows = self.store.query("SELECT status, COUNT(*) FROM moderation_jobs GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}

    def mark_pending(self, video_id: str, reason: str, actor: str, ts_ms: int) -> int:
        """Back to pending (new revision) and any open review of old content superseded."""
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO moderation (video_id, region, state, creator_ok, reason, source, "
                "decided_by, decided_at_ms, revision) VALUES (?, ?, 'pending', 0, ?, 'catalog', "
                "?, ?, 1) ON CONFLICT (video_id) DO UPDATE SET state = 'pending', "
                "creator_ok = 0, reason = excluded.reason, source = 'catalog', "
                "decided_by = excluded.decided_by, decided_at_ms = excluded.decided_at_ms, "
                "revision = moderation.revision + 1, verdict = '{}', input = '{}'",
                (video_id, self.region, reason, actor, ts_ms),
            )
            self.supersede_jobs(video_id)
            rows = self.store.query(
                "SELECT revision FROM moderation WHERE video_id = ?", (video_id,)
            )
        return int(rows[0][0])

    def write(
        self,
        video_id: str,
        state: str,
        creator_ok: bool,
        reason: str,
        source: str,
        decided_by: str,
        ts_ms: int,
        verdict: dict[str, Any],
        input: dict[str, Any] | None = None,
        expect_revision: int | None = None,
    ) -> bool:
        """Store a verdict. With ``expect_revision`` (automated runs) it is written only
        if the video is still pending at that revision: an edit or a human decision made
        meanwhile wins. Returns whether it was written."""
        params = (
            video_id,
            self.region,
            state,
            int(creator_ok),
            reason,
            source,
            decided_by,
            ts_ms,
            canonical_json(verdict),
            canonical_json(input or {}),
        )
        sql = (
            "INSERT INTO moderation (video_id, region, state, creator_ok, reason, source, "
            "decided_by, decided_at_ms, verdict, input) VALUES (?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (video_id) DO UPDATE SET state = excluded.state, "
            "creator_ok = excluded.creator_ok, reason = excluded.reason, "
            "source = excluded.source, decided_by = excluded.decided_by, "
            "decided_at_ms = excluded.decided_at_ms, verdict = excluded.verdict, "
            "input = excluded.input"
        )
        if expect_revision is None:
            return self.store.execute(sql, params) == 1
        sql += " WHERE moderation.state = 'pending' AND moderation.revision = ?"
        return self.store.execute(sql, (*params, expect_revision)) == 1

    def hold(
        self, video_id: str, reason: str, actor: str, ts_ms: int, verdict: dict[str, Any]
    ) -> bool:
        """Take a video out of For You (pending, source ``reports``) if it is still in
        it (approved or age-restricted); the revision stays (its content did not change).
        Returns whether it was."""
        return (
            self.store.execute(
                "UPDATE moderation SET state = 'pending', reason = ?, source = 'reports', "
                "decided_by = ?, decided_at_ms = ?, verdict = ? "
                "WHERE video_id = ? AND state IN ('approved', 'age_restricted')",
                (reason, actor, ts_ms, canonical_json(verdict), video_id),
            )
            == 1
        )

    def revisions(self, video_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        rows = self.store.query(
            "SELECT video_id, state, revision FROM moderation "
            "WHERE video_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(video_ids), ensure_ascii=False),),
        )
        return {str(r[0]): (str(r[1]), int(r[2])) for r in rows}

    def write_many(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Batch form of :meth:`write` for automated runs, which check revisions first
        inside the same write transaction. Each row: video_id, state, creator_ok,
        reason, decided_by, decided_at_ms, verdict, input, audit_seq."""
        self.store.executemany(
            "INSERT INTO moderation (video_id, region, state, creator_ok, reason, source, "
            "decided_by, decided_at_ms, verdict, input, audit_seq) "
            f"VALUES (?, '{self.region}', ?, ?, ?, 'automated', ?, ?, ?, ?, ?) "
            "ON CONFLICT (video_id) DO UPDATE SET state = excluded.state, "
            "creator_ok = excluded.creator_ok, reason = excluded.reason, "
            "source = excluded.source, decided_by = excluded.decided_by, "
            "decided_at_ms = excluded.decided_at_ms, verdict = excluded.verdict, "
            "input = excluded.input, audit_seq = excluded.audit_seq",
            rows,
        )

    def set_audit_seq(self, video_id: str, seq: int) -> None:
        self.store.execute(
            "UPDATE moderation SET audit_seq = ? WHERE video_id = ?", (seq, video_id)
        )

    # -- fingerprints ---------------------------------------------------------
    def signatures(self) -> list[tuple[str, str | None, bytes | None, str | None]]:
        rows = self.store.query(
            "SELECT video_id, creator_id, minhash, media_sha256 FROM moderation_signatures"
        )
        return [(str(r[0]), r[1], r[2], r[3]) for r in rows]

    def put_signatures(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Rows of video_id, creator_id, minhash bytes (or None), media_sha256, ts_ms."""
        self.store.executemany(
            "INSERT INTO moderation_signatures (video_id, region, creator_id, minhash, "
            f"media_sha256, updated_at_ms) VALUES (?, '{self.region}', ?, ?, ?, ?) "
            "ON CONFLICT (video_id) DO UPDATE SET creator_id = excluded.creator_id, "
            "minhash = excluded.minhash, media_sha256 = excluded.media_sha256, "
            "updated_at_ms = excluded.updated_at_ms",
            rows,
        )

    # -- review jobs ----------------------------------------------------------
    def _job(self, r: tuple[Any, ...]) -> Job:
        return Job(
            job_id=job_id(self.region, int(r[0])),
            region=str(r[1]),
            video_id=str(r[2]),
            kind=str(r[3]),
            status=str(r[4]),
            reason=str(r[5]),
            created_at_ms=int(r[6]),
            excluded=tuple(json.loads(r[7])),
            appellant=r[8],
            claimed_by=r[9],
            claimed_at_ms=r[10],
            decided_by=r[11],
            decided_at_ms=r[12],
            verdict=r[13],
            note=r[14],
            details=json.loads(r[15]),
        )

    def create_job(
        self,
        video_id: str,
        kind: str,
        reason: str,
        ts_ms: int,
        excluded: Iterable[str] = (),
        appellant: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Job:
        # a second open job of the video (moderation_jobs_one_open) inserts nothing: the
        # same on every backend (catching sqlite3.IntegrityError let PostgreSQL's
        # UniqueViolation through, a 500 for a second appeal; found by fuzzing the API)
        with self.store.transaction():
            rows = self.store.query(
                "INSERT INTO moderation_jobs (region, video_id, kind, status, reason, "
                "created_at_ms, excluded, appellant, details) "
                f"VALUES (?,?,?,'open',?,?,?,?,?) ON CONFLICT DO NOTHING RETURNING {_JOB_COLS}",
                (
                    self.region,
                    video_id,
                    kind,
                    reason,
                    ts_ms,
                    json.dumps(sorted(set(excluded))),
                    appellant,
                    canonical_json(details or {}),
                ),
            )
        if not rows:
            raise JobConflict(
                f"video {video_id!r} already has an open review job in region {self.region!r}",
                video_id=video_id,
                region=self.region,
            )
        return self._job(rows[0])

    def open_jobs(self, video_ids: Sequence[str]) -> dict[str, Job]:
        """The open (or claimed) job of each of ``video_ids`` that has one: one query."""
        if not video_ids:
            return {}
        rows = self.store.query(
            f"SELECT {_JOB_COLS} FROM moderation_jobs WHERE status IN ('open', 'claimed') "
            "AND video_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(video_ids), ensure_ascii=False),),
        )
        return {job.video_id: job for job in map(self._job, rows)}

    def update_job(self, job_no: int, reason: str, details: dict[str, Any]) -> bool:
        """New reason and details of a job not decided yet (a report job's counts grew)."""
        return (
            self.store.execute(
                "UPDATE moderation_jobs SET reason = ?, details = ? "
                "WHERE job_no = ? AND status IN ('open', 'claimed')",
                (reason, canonical_json(details), job_no),
            )
            == 1
        )

    def job(self, job_no: int) -> Job | None:
        rows = self.store.query(
            f"SELECT {_JOB_COLS} FROM moderation_jobs WHERE job_no = ?", (job_no,)
        )
        return self._job(rows[0]) if rows else None

    def jobs(
        self, status: str | None = None, limit: int = 100, kind: str | None = None
    ) -> list[Job]:
        conditions = [(c, v) for c, v in (("status = ?", status), ("kind = ?", kind)) if v]
        where = " AND ".join(c for c, _ in conditions)
        rows = self.store.query(
            f"SELECT {_JOB_COLS} FROM moderation_jobs {'WHERE ' + where if where else ''} "
            "ORDER BY job_no LIMIT ?",
            (*(v for _, v in conditions), limit),
        )
        return [self._job(r) for r in rows]

    def claim(
        self, reviewer: str, ts_ms: int, lease_ms: int, person: str | None = None
    ) -> Job | None:
        """Atomically hand the oldest claimable job to ``reviewer``: an open one, or one
        whose claim lapsed; never one the reviewer is excluded from (an appeal of their
        own decision; ``person``: the form of their id that ``excluded`` holds). One
        UPDATE in a write transaction, so no two reviewers get it."""
        with self.store.transaction():
            rows = self.store.query(
                "UPDATE moderation_jobs SET status = 'claimed', claimed_by = ?, "
                "claimed_at_ms = ? WHERE job_no = (SELECT job_no FROM moderation_jobs j "
                "WHERE (j.status = 'open' OR (j.status = 'claimed' AND j.claimed_at_ms < ?)) "
                "AND NOT EXISTS (SELECT 1 FROM json_each(j.excluded) WHERE value = ?) "
                f"ORDER BY job_no LIMIT 1) RETURNING {_JOB_COLS}",
                (reviewer, ts_ms, ts_ms - lease_ms, reviewer if person is None else person),
            )
        return self._job(rows[0]) if rows else None

    def finish_job(self, job_no: int, reviewer: str, verdict: str, note: str, ts_ms: int) -> bool:
        """Mark a job decided, only if it is still claimed by ``reviewer``."""
        return (
            self.store.execute(
                "UPDATE moderation_jobs SET status = 'decided', decided_by = ?, "
                "decided_at_ms = ?, verdict = ?, note = ? "
                "WHERE job_no = ? AND status = 'claimed' AND claimed_by = ?",
                (reviewer, ts_ms, verdict, note, job_no, reviewer),
            )
            == 1
        )

    def supersede_jobs(self, video_id: str) -> int:
        return self.store.execute(
            "UPDATE moderation_jobs SET status = 'superseded' "
            "WHERE video_id = ? AND status IN ('open', 'claimed')",
            (video_id,),
        )
