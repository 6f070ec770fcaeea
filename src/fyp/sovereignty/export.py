"""Everything held about a user, as one JSON document: ``GET /v1/users/{id}/export``.

Portability means the user gets what fyp holds, in a form another service can read:
the profile, every event, held-out labels, the served log, the experiments they were
served under (arm and first exposure), whom they follow and block (with each
follow's or unfollow's latest time), the videos they uploaded,
the appeals they made, and what the live model of their home region learned about
them (their vector). The document opens with a manifest of its sections and counts,
and is produced as a stream of chunks — events are read a page at a time — so a long
history never sits in memory at once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator
from typing import Any

import numpy as np

from fyp.audit.log import SQLStore, sql_store
from fyp.catalog.blocks import OWED
from fyp.catalog.blocks import TABLE as BLOCKS
from fyp.catalog.follow_order import user_actions
from fyp.catalog.follows import TABLE as FOLLOWS
from fyp.catalog.follows import Follow, creator_rows
from fyp.models.artifacts import ARRAYS, current_version, models_dir, read_manifest
from fyp.regions.deployment import Deployment
from fyp.sovereignty import served_data
from fyp.sovereignty.erasure import iso, now_ms

PAGE = 2000
FORMAT = "fyp-user-export/1"


def _columns(sql: SQLStore, table: str) -> list[str]:
    return [name for name, _ in sql.table_columns(table)]


def _has_table(sql: SQLStore, table: str) -> bool:
    return table in sql.table_names()


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-in-TEXT columns (consents, hashtags, excluded, ...) as JSON, not strings."""
    out = dict(row)
    for k, v in row.items():
        if isinstance(v, str) and v.startswith(("[", "{")):
            with contextlib.suppress(ValueError):
                out[k] = json.loads(v)
    return out


def _rows(sql: SQLStore, table: str, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cols = _columns(sql, table)
    names = ", ".join(f'"{c}"' for c in cols)
    return [
        _decoded(dict(zip(cols, r, strict=True)))
        for r in sql.query(f'SELECT {names} FROM "{table}" WHERE {where}', params)
    ]


APPEAL_COLUMNS = (
    "job_no",
    "region",
    "video_id",
    "kind",
    "status",
    "reason",
    "created_at_ms",
    "appellant",
    "decided_at_ms",
    "verdict",
)
"""What an export shows of each of the user's appeals."""


class UserExport:
    """The export of one user; iterate :meth:`chunks` for the JSON text."""

    def __init__(
        self, deployment: Deployment, user_id: str, regions: Collection[str] | None = None
    ) -> None:
        """``regions``: the regions it may read besides the home region (an API key's;
        None: all). A region-scoped key reads no other region's store, this included:
        the user's uploads and appeals there are left out and the manifest says where."""
        self.deployment = deployment
        self.user_id = user_id
        self.region = deployment.homed_region(user_id)  # UnknownUser before any output
        self.regions = [
            r for r in deployment.regions if regions is None or r in regions or r == self.region
        ]
        # pages served a few milliseconds ago may still be buffered (fyp.storage.served_log)
        deployment.store(self.region).flush_served()
        # a served log on Redis is read now: a server that does not answer is a 503
        # before any output, not a document cut short
        self._served = served_data.export_rows(deployment, self.region, user_id)

    @property
    def home(self) -> SQLStore:
        return sql_store(self.deployment.store(self.region))

    def counts(self) -> dict[str, int]:
        sql, uid = self.home, self.user_id
        n = {
            t: int(sql.query(f"SELECT COUNT(*) FROM {t} WHERE user_id=?", (uid,))[0][0])
            for t in ("events", "served")
        }
        n["served"] += len(self.served_log())
        n["labels"] = len(self.labels())
        return {
            "profile": 1,
            **n,
            "experiment_exposures": len(self.exposures()),
            "following": len(self.following()),
            "follow_actions": len(self.follow_actions()),
            "blocked": len(self.blocked()),
            "blocks_owed": len(self.blocks_owed()),
            "videos": len(self.videos()),
            "appeals": len(self.appeals()),
            "model": 1,
        }

    def profile(self) -> dict[str, Any]:
        return _rows(self.home, "users", "user_id=?", (self.user_id,))[0]

    def events(self) -> Iterator[dict[str, Any]]:
        sql = self.home
        cols = [c for c in _columns(sql, "events") if c != "region"]
        names = ", ".join(cols)
        after = -1
        while True:
            page = sql.query(
                f"SELECT {names} FROM events WHERE user_id=? AND seq>? ORDER BY seq LIMIT ?",
                (self.user_id, after, PAGE),
            )
            for r in page:
                yield dict(zip(cols, r, strict=True))
            if len(page) < PAGE:
                return
            after = int(page[-1][0])

    def videos(self) -> list[dict[str, Any]]:
        """The user's uploads, once each, with every region that carries them."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.regions:
            for row in _rows(
                sql_store(self.deployment.store(r)), "videos", "creator_id=?", (self.user_id,)
            ):
                row.pop("region", None)
                out.setdefault(str(row["video_id"]), row)
        return [out[k] for k in sorted(out)]

    def appeals(self) -> list[dict[str, Any]]:
        """The user's appeals and how each ended; not who handled them (the reviewers
        excluded, claiming or deciding are staff, not the user's data), nor their notes."""
        out: list[dict[str, Any]] = []
        for r in self.regions:
            sql = sql_store(self.deployment.store(r))
            if _has_table(sql, "moderation_jobs"):
                rows = _rows(sql, "moderation_jobs", "appellant=?", (self.user_id,))
                out += [{k: v for k, v in row.items() if k in APPEAL_COLUMNS} for row in rows]
        return out

    def model(self) -> dict[str, Any]:
        """What the live artifact of the home region holds about the user."""
        region_dir = self.deployment.config.region_dir(self.region)
        version = current_version(region_dir)
        if version is None:
            return {"region": self.region, "version": None, "learned_from": False, "vector": None}
        manifest = read_manifest(region_dir, version)
        with np.load(models_dir(region_dir) / version / ARRAYS, allow_pickle=False) as data:
            users = data["user_ids"]
            hit = np.flatnonzero(users == self.user_id)
            vector = data["user_factors"][int(hit[0])].tolist() if len(hit) else None
            lineage = data["lineage_user_ids"] if "lineage_user_ids" in data.files else users
            learned = bool(np.any(lineage == self.user_id))
        return {
            "region": self.region,
            "version": version,
            "trained_at": manifest.created_at,
            "learned_from": learned,
            "vector": vector,
        }

    def chunks(self) -> Iterator[str]:
        """The JSON document, a section (or a page of events) at a time."""
        t = now_ms()
        head = {
            "format": FORMAT,
            "user_id": self.user_id,
            "home_region": self.region,
            "exported_at_ms": t,
            "exported_at": iso(t),
            "manifest": {
                "sections": self.counts(),
                "regions_read": self.regions,
                "regions_not_read": [r for r in self.deployment.regions if r not in self.regions],
            },
        }
        yield json.dumps(head, ensure_ascii=False)[:-1]
        yield ', "profile": ' + json.dumps(self.profile(), ensure_ascii=False)
        yield ', "events": ['
        first = True
        batch: list[str] = []
        for e in self.events():
            batch.append(json.dumps(e, ensure_ascii=False))
            if len(batch) == PAGE:
                yield ("" if first else ", ") + ", ".join(batch)
                first, batch = False, []
        if batch:
            yield ("" if first else ", ") + ", ".join(batch)
        yield "]"
        for name, rows in (
            ("labels", self.labels()),
            (
                "served",
                _rows(self.home, "served", "user_id=?", (self.user_id,)) + self.served_log(),
            ),
            ("experiment_exposures", self.exposures()),
            ("following", self.following()),
            ("follow_actions", self.follow_actions()),
            ("blocked", self.blocked()),
            ("blocks_owed", self.blocks_owed()),
            ("videos", self.videos()),
            ("appeals", self.appeals()),
        ):
            yield f', "{name}": ' + json.dumps(rows, ensure_ascii=False)
        yield ', "model": ' + json.dumps(self.model(), ensure_ascii=False) + "}"

    def served_log(self) -> list[dict[str, Any]]:
        """The pages the home region's served log holds outside the store (Redis), a row
        per video like the store's ``served`` view."""
        return self._served

    def exposures(self) -> list[dict[str, Any]]:
        """The experiments the user was served under: each one's arm and first page."""
        rows = _rows(self.home, "experiment_exposures", "user_id=?", (self.user_id,))
        return sorted(rows, key=lambda r: (r["exposed_at_ms"], r["experiment"]))

    def following(self) -> list[dict[str, Any]]:
        """The creators the user follows, oldest follow first."""
        return _creators(creator_rows(self.home, FOLLOWS, self.user_id))

    def follow_actions(self) -> list[dict[str, Any]]:
        """The user's latest follow or unfollow of each creator, oldest first: what
        decides whether an event sent late still changes whom they follow."""
        return user_actions(self.home, self.user_id)

    def blocked(self) -> list[dict[str, Any]]:
        """The creators the user blocked, oldest block first."""
        return _creators(creator_rows(self.home, BLOCKS, self.user_id))

    def blocks_owed(self) -> list[dict[str, Any]]:
        """The user's blocks and unblocks of a creator in another region whose side
        there is still to be written (a request cut short; ``fyp user blocks-settle``
        writes it, and the row goes), oldest first: bookkeeping about the user's own
        choice, so it is theirs to see."""
        return _creators(creator_rows(self.home, OWED, self.user_id))

    def labels(self) -> list[dict[str, Any]]:
        """One entry per held-out label (the store keeps them as a set per user)."""
        out: list[dict[str, Any]] = []
        for row in _rows(self.home, "labels", "user_id=?", (self.user_id,)):
            videos = row.pop("video_ids")
            out.extend({**row, "video_id": v} for v in videos)
        return out

    def document(self) -> dict[str, Any]:
        """The whole export as one value (tests, the CLI)."""
        doc: dict[str, Any] = json.loads("".join(self.chunks()))
        return doc


def _creators(rows: list[Follow]) -> list[dict[str, Any]]:
    return [{"creator_id": f.creator_id, "since_ms": f.since_ms} for f in rows]
