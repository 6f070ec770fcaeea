"""Schema migrations, recorded in the database they were applied to.

Each migration is a version, a name and SQL with ``{region}`` placeholders: the region
is baked into CHECK constraints, so the database itself refuses rows of other regions.
Region names are validated (``fyp.config.check_region_name``) before they reach SQL.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """``sql`` is SQLite's; ``postgres`` the same change for the PostgreSQL store where
    it cannot be translated (``fyp.storage.postgres_schema.postgres_ddl``): triggers."""

    version: int
    name: str
    sql: str
    postgres: str | None = None


CORE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "users, videos, events, held-out labels",
        """
        CREATE TABLE users (
            user_id        TEXT PRIMARY KEY,
            home_region    TEXT NOT NULL CHECK (home_region = '{region}'),
            birth_year     INTEGER,
            country        TEXT,
            language       TEXT,
            consents       TEXT NOT NULL DEFAULT '{{}}',
            attributes     TEXT NOT NULL DEFAULT '{{}}',
            created_at_ms  INTEGER NOT NULL,
            updated_at_ms  INTEGER NOT NULL
        ) WITHOUT ROWID;

        CREATE TABLE videos (
            video_id       TEXT PRIMARY KEY,
            region         TEXT NOT NULL CHECK (region = '{region}'),
            creator_id     TEXT,
            caption        TEXT NOT NULL DEFAULT '',
            hashtags       TEXT NOT NULL DEFAULT '[]',
            categories     TEXT NOT NULL DEFAULT '[]',
            tags           TEXT NOT NULL DEFAULT '[]',
            duration_ms    INTEGER NOT NULL CHECK (duration_ms > 0),
            regions        TEXT NOT NULL,
            attributes     TEXT NOT NULL DEFAULT '{{}}',
            created_at_ms  INTEGER NOT NULL,
            updated_at_ms  INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX videos_creator ON videos (creator_id);

        CREATE TABLE events (
            seq            INTEGER PRIMARY KEY,
            event_id       TEXT NOT NULL UNIQUE,
            region         TEXT NOT NULL DEFAULT '{region}' CHECK (region = '{region}'),
            user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
            video_id       TEXT NOT NULL,
            type           TEXT NOT NULL,
            ts_ms          INTEGER NOT NULL,
            watch_ms       INTEGER CHECK (watch_ms IS NULL OR watch_ms >= 0),
            watch_ratio    REAL,
            valid_play     INTEGER NOT NULL DEFAULT 0,
            long_play      INTEGER NOT NULL DEFAULT 0,
            short_play     INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX events_user ON events (user_id, seq);

        CREATE TABLE labels (
            dataset        TEXT NOT NULL,
            split          TEXT NOT NULL,
            region         TEXT NOT NULL DEFAULT '{region}' CHECK (region = '{region}'),
            user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
            video_id       TEXT NOT NULL,
            PRIMARY KEY (user_id, dataset, split, video_id)
        ) WITHOUT ROWID;
        """,
    ),
    Migration(
        2,
        "served log: what each user's feed showed, so pages and sessions never repeat",
        """
        CREATE TABLE served (
            user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
            video_id       TEXT NOT NULL,
            region         TEXT NOT NULL DEFAULT '{region}' CHECK (region = '{region}'),
            served_at_ms   INTEGER NOT NULL,
            PRIMARY KEY (user_id, video_id)
        ) WITHOUT ROWID;
        """,
    ),
    Migration(
        3,
        "held-out labels: one row per user, dataset and split, holding the video ids",
        # Held-out labels are read a user's set at a time; a row per video cost 60 % of
        # the KuaiRec-EAR import's inserts (216,147 test rows) for nothing.
        """
        CREATE TABLE label_sets (
            dataset        TEXT NOT NULL,
            split          TEXT NOT NULL,
            region         TEXT NOT NULL DEFAULT '{region}' CHECK (region = '{region}'),
            user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
            video_ids      TEXT NOT NULL CHECK (json_type(video_ids) = 'array'),
            PRIMARY KEY (user_id, dataset, split)
        ) WITHOUT ROWID;
        INSERT INTO label_sets (dataset, split, user_id, video_ids)
            SELECT dataset, split, user_id, json_group_array(video_id)
            FROM (SELECT * FROM labels ORDER BY user_id, dataset, split, video_id)
            GROUP BY user_id, dataset, split;
        DROP TABLE labels;
        ALTER TABLE label_sets RENAME TO labels;
        """,
    ),
    Migration(
        4,
        "served log: a per-user change counter and a time index",
        # The feed checks on every request whether anything about the user changed;
        # with MAX/COUNT over the served log that cost grew with everything the user
        # was ever shown (2.7 ms at 20,000 rows). The counter makes it one row read;
        # the index keeps the seen-window scan and its pruning to the window.
        """
        ALTER TABLE users ADD COLUMN served_seq INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX served_user_time ON served (user_id, served_at_ms);
        """,
    ),
    Migration(
        5,
        "served log: one row per page served, not per video",
        # Recording a page is the one write on the feed's path. A row per video cost ten
        # inserts into two B-trees per page, and the WAL pages they dirtied (~27 KB a
        # page) were what the checkpointer then copied and synced; a row per page costs
        # one insert (~11 KB). ``page_seq`` is the user's served counter after the page
        # (users.served_seq); pages migrated from the old table count down from 0. The
        # view keeps the old shape (a row per video served) for export and erasure
        # counts.
        """
        CREATE TABLE served_pages (
            user_id        TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
            page_seq       INTEGER NOT NULL,
            region         TEXT NOT NULL DEFAULT '{region}' CHECK (region = '{region}'),
            served_at_ms   INTEGER NOT NULL,
            video_ids      TEXT NOT NULL,
            PRIMARY KEY (user_id, page_seq)
        ) WITHOUT ROWID;
        INSERT INTO served_pages (user_id, page_seq, served_at_ms, video_ids)
            SELECT user_id,
                   1 - ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY served_at_ms DESC),
                   served_at_ms, video_ids
            FROM (
                SELECT user_id, served_at_ms, json_group_array(video_id) AS video_ids
                FROM (SELECT * FROM served ORDER BY user_id, served_at_ms, video_id)
                GROUP BY user_id, served_at_ms
            );
        DROP TABLE served;
        CREATE VIEW served (user_id, video_id, region, served_at_ms) AS
            SELECT p.user_id, j.value, p.region, p.served_at_ms
            FROM served_pages AS p, json_each(p.video_ids) AS j;
        """,
    ),
    Migration(
        6,
        "served log: the counter is the newest page; old pages are forgotten by time",
        # Rewriting the users row (the counter) and deleting the user's old pages on every
        # page served were two thirds of the served log's cost per page. The counter is
        # now the newest page's number (users.served_seq keeps it only for a user whose
        # pages were all forgotten), and pages older than the seen window are deleted in
        # bulk by the serving process's maintenance thread, by this index on time.
        """
        CREATE INDEX served_pages_time ON served_pages (served_at_ms);
        """,
    ),
    Migration(
        7,
        "events by time, for the region's retention limit",
        # A region's [policy.retention] events_days deletes events older than the limit
        # in chunks, and `fyp retention check` counts those overdue: both by this index.
        """
        CREATE INDEX events_time ON events (ts_ms);
        """,
    ),
    Migration(
        8,
        "a user's not-interested events, for the feed past their latest events",
        # "not interested" holds for the seen window, not only while the event is among
        # the user's latest (fyp.feed.service.RECENT_EVENTS): the feed reads the older
        # ones by this index, which holds those events only
        """
        CREATE INDEX events_not_interested ON events (user_id, seq)
            WHERE type = 'not_interested';
        """,
    ),
)


def sqlite_migrations() -> tuple[Migration, ...]:
    """Every migration, core first; capability packages add theirs by version number.

    Versions 1-9 are core storage; capabilities take the next free number (10
    moderation, 11 audit log, 12 API keys, 13 the audit log's append-only triggers, 20
    moderation's catalogue change feed, 21 the audit log's TRUNCATE guard, 22 experiment
    exposures, 23 moderation's report jobs and report checkpoint, 24 follows, 25 the
    Following tab's index, 26 blocks, 27 the blocked users' side of blocks, 28 the
    latest follow action of each pair, 29 the retention limit's times of exposures and
    held-out labels, 30 the Following tab's newest-first index)."""
    from fyp.storage.migrations_extra import EXTRA_MIGRATIONS

    migrations = sorted((*CORE_MIGRATIONS, *EXTRA_MIGRATIONS), key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return tuple(migrations)


def split_statements(script: str) -> list[str]:
    """Split a migration into statements the way SQLite parses them, so a trigger body
    (``BEGIN ...; ...; END``) stays whole (``executescript`` would commit on its own)."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):
                out.append(pending.strip())
            pending = ""
    if pending.strip(" \n\t;"):
        out.append(pending.strip())
    return out
