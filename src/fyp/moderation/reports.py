"""Users' reports reach moderation: a reported video comes back to a human, a video
many report leaves For You until a human has looked.

::

    [regions.eu.policy.reports]
    review_reporters = 3    # distinct reporters (users of eu) that open a report review
    hold_reporters = 10     # ... that also take it out of For You until a human decides (0: never)
    window_days = 7         # reports count for this many days

A ``report`` event is stored in the reporter's home region, like every event, so a
region counts only its own users' reports, under its own policy; a video published to
two regions is judged in each on its own.

Not on the ingestion path: the moderation run (:meth:`Moderator.run`, which ``fyp
serve``'s scheduler starts when :meth:`ReportStore.needs_run` says a report came in)
reads the reports since its checkpoint (:mod:`fyp.moderation.report_store`) and, for each
video they name, counts the distinct users who reported it since the later of the
window's start and the video's last human verdict (a video a person just approved does
not bounce back on the reports they already saw). Past ``review_reporters`` a video
with no open job gets a ``report`` job; past ``hold_reporters`` a video in For You
(approved or age-restricted) also goes to pending at once. Both are audited (actor: the
run; details: counts and thresholds, never who reported).

What reports may do to a person's verdict: send it back to a person (a report review, and
at the hold threshold a hold), counting only reports made after it. Never more: a
rejection, block or restriction is never reversed or touched by reports (the video is
out of For You already; reversing is the appeal's business), and a hold is lifted only
by a human decision. An edit does not shake reports off either: a video edited while a
report review or hold stands is sent to a human by the automated checks (rule
``human_hold``), see :func:`unresolved_reports`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fyp.audit.log import now_ms
from fyp.config import DAY_MS, check_keys
from fyp.errors import ConfigError
from fyp.moderation.models import FOR_YOU_STATES, HUMAN_SOURCES, State
from fyp.moderation.report_store import ReportStore
from fyp.moderation.store import Job, split_job_id

if TYPE_CHECKING:
    from fyp.moderation.service import Cell

TABLE = "reports"
DEFAULTS: dict[str, int] = {"review_reporters": 3, "hold_reporters": 10, "window_days": 7}
"""Every key of ``[regions.R.policy.reports]`` and its default."""
KEYS = tuple(DEFAULTS)
_MAX_REPORTERS = 1_000_000
_MAX_WINDOW_DAYS = 365
JOB_KIND = "report"
SOURCE = "reports"
"""The verdict source of a hold (a video sent to pending by its reports)."""
_REMOVED = frozenset({State.rejected.value, State.blocked.value})
_SHOWN = ("reporters", "held")  # what a reviewer reads of an open job: kept up to date


@dataclass(frozen=True)
class ReportPolicy:
    """A region's thresholds for users' reports (``[regions.R.policy.reports]``)."""

    review_reporters: int = DEFAULTS["review_reporters"]
    hold_reporters: int = DEFAULTS["hold_reporters"]
    window_days: int = DEFAULTS["window_days"]

    @property
    def window_ms(self) -> int:
        return self.window_days * DAY_MS

    def to_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in KEYS}


def parse_reports(region: str, policy: Mapping[str, Any]) -> ReportPolicy:
    """The region's report thresholds; a ConfigError for an unknown key (naming the
    closest), a value that is not a whole number, or one out of range."""
    raw = policy.get(TABLE, {})
    where = f"[regions.{region}.policy.{TABLE}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table", region=region)
    check_keys(f"regions.{region}.policy.{TABLE}", raw, KEYS)
    lows = {"review_reporters": 1, "hold_reporters": 0, "window_days": 1}
    highs = {"review_reporters": _MAX_REPORTERS, "hold_reporters": _MAX_REPORTERS}
    values = dict(DEFAULTS)
    for key, value in raw.items():
        high = highs.get(key, _MAX_WINDOW_DAYS)
        if type(value) is not int or not lows[key] <= value <= high:
            raise ConfigError(
                f"{where} {key} must be a whole number from {lows[key]} to {high}, got {value!r}",
                region=region,
                key=key,
            )
        values[key] = value
    hold, review = values["hold_reporters"], values["review_reporters"]
    if hold and hold < review:
        raise ConfigError(
            f"{where} hold_reporters ({hold}) must be 0 (never hold) or at least "
            f"review_reporters ({review}): a video is held only once a human is asked",
            region=region,
            key="hold_reporters",
        )
    return ReportPolicy(**values)


@dataclass
class ReportSummary:
    """What one run did with the region's new reports."""

    read: bool = False  # there were reports to read since the checkpoint
    reread_window: bool = False  # the checkpoint's event was gone: the window was read again
    videos: int = 0  # reported videos counted
    jobs: int = 0  # report reviews opened
    held: int = 0  # videos taken out of For You
    updated: int = 0  # open report jobs whose counts grew
    removed: int = 0  # past the threshold but rejected or blocked already: nothing to do
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "videos_counted": self.videos,
            "report_jobs": self.jobs,
            "held": self.held,
            "jobs_updated": self.updated,
            "already_removed": self.removed,
            "window_reread": self.reread_window,
            "seconds": round(self.seconds, 3),
        }


def last_human_verdicts(c: Cell, video_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Video id -> (audit seq, time) of its latest human verdict in this region."""
    out: dict[str, tuple[int, int]] = {}
    for e in c.audit.entries_of(video_ids, action="verdict"):
        if e.details.get("source") in HUMAN_SOURCES:
            out[e.subject] = (e.seq, e.ts_ms)
    return out


def unresolved_reports(c: Cell, video_ids: Sequence[str]) -> dict[str, str]:
    """Video id -> why, for those of ``video_ids`` whose reports sent them to a human
    (a report review or a hold) and no human verdict came since: the automated checks
    of such a video (edited, or back to pending otherwise) leave it to a person."""
    if not video_ids:
        return {}
    humans = last_human_verdicts(c, video_ids)
    out: dict[str, str] = {}
    opened = c.audit.entries_of(video_ids, action="job.open")
    held = [e for e in c.audit.entries_of(video_ids, action="verdict") if _is_hold(e.details)]
    for e in sorted([*opened, *held], key=lambda e: e.seq):
        if e.details.get("kind") != JOB_KIND and not _is_hold(e.details):
            continue
        if e.seq > humans.get(e.subject, (0, 0))[0]:
            out[e.subject] = (
                f"reported by {e.details.get('reporters')} distinct users "
                f"({'held' if _is_hold(e.details) else 'report review'}), not decided by a "
                "human since"
            )
    return out


def _is_hold(details: Mapping[str, Any]) -> bool:
    return details.get("source") == SOURCE


class ReportTriage:
    """One region's pass over its new reports, in the moderation run (see the module
    docstring). ``now``: the clock, for tests."""

    def __init__(self, c: Cell, policy: ReportPolicy, actor: str, now: int | None = None) -> None:
        self.c = c
        self.policy = policy
        self.actor = actor
        self.now = now
        self.reports = ReportStore(c.store)

    def run(self) -> ReportSummary:
        started = time.perf_counter()
        summary = ReportSummary()
        if not self.reports.needs_run():
            return summary  # nothing since the checkpoint: no write, no audit entry
        summary.read = True
        t = now_ms() if self.now is None else self.now
        window_start = t - self.policy.window_ms
        head, mark = self.reports.head(), self.reports.checkpoint()
        summary.reread_window = mark is None
        due: dict[str, tuple[int, int]] = {}
        if head is not None:
            videos = self.reports.reported_videos(mark.seq if mark else 0, head.seq, window_start)
            humans = last_human_verdicts(self.c, videos)
            since = {v: max(window_start, humans.get(v, (0, 0))[1]) for v in videos}
            counts = self.reports.reporters(since, head.seq)
            summary.videos = len(counts)
            review = self.policy.review_reporters
            due = {v: (n, since[v]) for v, n in counts.items() if n >= review}
        with self.c.store.transaction():
            jobs = self.c.mod.open_jobs(sorted(due))
            for video_id, (n, since_ms) in sorted(due.items()):
                self._act(video_id, n, since_ms, window_start, jobs.get(video_id), t, summary)
            self.reports.set_checkpoint(head, t)
        summary.seconds = time.perf_counter() - started
        return summary

    def _act(
        self,
        video_id: str,
        n: int,
        since_ms: int,
        window_start: int,
        job: Job | None,
        t: int,
        summary: ReportSummary,
    ) -> None:
        """Open a report review and/or hold one video (inside the run's transaction)."""
        c, p = self.c, self.policy
        record = c.mod.get(video_id)
        state = record.state if record else State.pending.value
        if state in _REMOVED:
            summary.removed += 1  # out of every feed already; a reversal is an appeal's
            return
        hold = bool(p.hold_reporters) and n >= p.hold_reporters
        details: dict[str, Any] = {
            "reporters": n,
            "window_days": p.window_days,
            "counted_since_ms": since_ms,
            "review_reporters": p.review_reporters,
            "hold_reporters": p.hold_reporters,
            "held": hold or bool(job is not None and job.details.get("held")),
        }
        after = " since its last human verdict" if since_ms > window_start else ""
        reason = (
            f"reported by {n} distinct users of region {c.store.region} within "
            f"{p.window_days} days{after} (review at {p.review_reporters}"
            + (f", held out of For You at {p.hold_reporters})" if p.hold_reporters else ")")
        )
        if job is None:
            job = c.mod.create_job(video_id, JOB_KIND, reason, t, details=details)
            c.audit.append(
                self.actor,
                "job.open",
                video_id,
                {"job_id": job.job_id, "kind": JOB_KIND, "reason": reason, **details},
                t,
            )
            summary.jobs += 1
        elif job.kind == JOB_KIND and any(job.details.get(k) != details[k] for k in _SHOWN):
            c.mod.update_job(split_job_id(job.job_id)[1], reason, details)
            summary.updated += 1
        if hold and state in {s.value for s in FOR_YOU_STATES}:
            verdict = {
                "state": State.pending.value,
                "reason": reason,
                "job_id": job.job_id,
                "previous_state": state,
                **details,
            }
            if c.mod.hold(video_id, reason, self.actor, t, verdict):
                entry = c.audit.append(
                    self.actor, "verdict", video_id, {"source": SOURCE, **verdict}, t
                )
                c.mod.set_audit_seq(video_id, entry.seq)
                summary.held += 1
