"""Moderation of a deployment: automated runs, the catalogue hook, For You eligibility.

Each region moderates its own catalogue under its own policy: the verdict, the review
jobs, the fingerprints and the audit entry of an action all live in the store of the
region where it takes effect, written in one transaction.

The creator's age is the one fact that lives elsewhere (in the creator's home region).
It is looked up when a verdict is made, and only the age the creator has certainly
reached, capped at 18, enters the verdict's input: the feed then needs no cross-region
read (the eligibility check is one query on the viewer's own store). The cost: a
creator who turns 16 stays out of For You until their videos are moderated again
(``recheck_creators``), which errs on the safe side.

For You eligibility (:class:`ModerationEligibility`, the check ``FeedService`` runs on
candidates and again on the final page): a video is eligible for a viewer only if, in
the viewer's region (the feed is served from the viewer's home region, whose store
holds that region's verdicts), it is approved, or age_restricted and the viewer is
certainly 18 (birth year known, 18 even if their birthday is on 31 December; unknown
age fails closed); and its creator passed the creator rules. Pending (including never
moderated), rejected, restricted and blocked videos are not eligible. The check reads
the store on every call — one query over all the ids — so a takedown shows in the
very next feed response; there is no cache to go stale.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fyp.audit.log import AuditLog, canonical_json, now_ms, sql_store
from fyp.catalog.models import Video
from fyp.errors import JobConflict, UnknownVideo
from fyp.moderation import dedup
from fyp.moderation.classifier import Classifier, LexiconClassifier
from fyp.moderation.dedup import Signature
from fyp.moderation.engine import PolicyEngine, Replay
from fyp.moderation.models import (
    HUMAN_SOURCES,
    Match,
    ModerationInput,
    State,
    Verdict,
    certain_age,
    certainly_at_least,
    cover_texts,
)
from fyp.moderation.policy import parse_policy
from fyp.moderation.report_store import ReportStore
from fyp.moderation.reports import (
    ReportPolicy,
    ReportSummary,
    ReportTriage,
    parse_reports,
    unresolved_reports,
)
from fyp.moderation.snapshot import NOT_LIVE, ItemCatalogue, snapshot_for
from fyp.moderation.store import ModerationStore

if TYPE_CHECKING:
    from fyp.config import DeploymentConfig
    from fyp.regions.deployment import Deployment

CONTENT_FIELDS = frozenset({"caption", "hashtags", "categories", "attributes"})
"""Fields whose change sends a video back to pending in every region it is in."""
AUTOMATED = "fyp-moderation"
CHUNK = 128
ADULT_CAP = 18
CreatorFact = int | bool | None
"""A creator's certain age capped at 18; None: unknown age; False: no such account."""


class Cell:
    """One region's moderation tables and audit log (opened on first use)."""

    def __init__(self, store: object) -> None:
        self.store = sql_store(store)
        self.mod = ModerationStore(self.store)

    @functools.cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.store)


_cells: weakref.WeakKeyDictionary[object, Cell] = weakref.WeakKeyDictionary()


def cell(store: object) -> Cell:
    """The moderation view of a region store (created once per store object)."""
    found = _cells.get(store)
    if found is None:
        found = _cells[store] = Cell(store)
    return found


def video_changed(
    deployment: Deployment,
    video: Video,
    changed: Collection[str] | None = None,
    previous_regions: Sequence[str] = (),
    actor: str = "catalog",
) -> list[str]:
    """Catalogue hook: a new video, or one whose content or regions changed, becomes
    pending where it must be judged again. Returns those regions.

    New video: every region. Content changed (caption, hashtags, categories or
    attributes, which hold the cover text, maturity and media hash): every region it
    is in. Regions changed: the regions it was added to (the others' verdicts judged
    the same content)."""
    if changed is None:
        regions, reason = list(video.regions), "new video"
    elif CONTENT_FIELDS & set(changed):
        fields = sorted(CONTENT_FIELDS & set(changed))
        regions, reason = list(video.regions), f"changed {', '.join(fields)}"
    else:
        regions = [r for r in video.regions if r not in previous_regions]
        reason = "published to a new region"
    t = now_ms()
    for region in regions:
        store = deployment.store(region)
        c = cell(store)
        with store.transaction():
            _pend(c, video.video_id, reason, actor, t)
    return regions


def _pend(c: Cell, video_id: str, reason: str, actor: str, t: int, audited: str = "") -> None:
    """Back to pending and audited (``audited``: the reason the entry records, if shorter);
    the caller holds the transaction."""
    revision = c.mod.mark_pending(video_id, reason, actor, t)
    details = {"reason": audited or reason, "revision": revision}
    c.mod.set_audit_seq(video_id, c.audit.append(actor, "pending", video_id, details, t).seq)


def video_removed(
    deployment: Deployment, video_id: str, regions: Sequence[str], actor: str = "catalog"
) -> None:
    """Catalogue hook: a video deleted from ``regions`` keeps no verdict there. Whatever
    puts it back (an upload, an import, a region added) finds it pending, never under a
    verdict that judged other content."""
    t = now_ms()
    for region in regions:
        store = deployment.store(region)
        c = cell(store)
        with store.transaction():
            _pend(c, video_id, "removed from the catalogue", actor, t, audited="removed")


def human_holds(c: Cell, video_ids: Sequence[str]) -> dict[str, str]:
    """Video id -> what a standing human verdict other than approved says, for those of
    ``video_ids`` whose latest human verdict in this region is one (from the audit log,
    which keeps it through edits, deletions and restores)."""
    latest: dict[str, tuple[int, dict[str, Any], str]] = {}
    for e in c.audit.entries_of(video_ids, action="verdict"):
        if e.details.get("source") in HUMAN_SOURCES:
            latest[e.subject] = (e.seq, e.details, e.actor)
    out: dict[str, str] = {}
    for vid, (_, details, actor) in latest.items():
        state = details.get("state")
        if state != State.approved.value:
            why = str(details.get("reason", ""))[:200]
            out[vid] = f"{state} by a human ({details.get('source')} by {actor}: {why})"
    return out


Todo = tuple[str, int, str, str]
"""A video to judge: id, the revision and state its row must still have when the verdict
is written, and the source of the verdict it replaces ("" for pending)."""
Judged = tuple[Video, Todo, Verdict, ModerationInput, "Signature | None"]
POLICY_CHECKED = "policy.recheck"
REMOVALS = frozenset({State.rejected, State.blocked, State.restricted})


@dataclass
class RunSummary:
    """What one automated run over a region's pending videos did."""

    region: str
    examined: int = 0
    written: int = 0
    skipped: int = 0  # changed or decided by a human while the run was going
    jobs: int = 0
    by_state: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)  # "rule:action"
    failures: Counter[str] = field(default_factory=Counter)
    policy_rechecked: int = 0  # verdicts re-judged because the policy changed
    reports: ReportSummary = field(default_factory=ReportSummary)
    seconds: float = 0.0

    def count(self, verdict: Verdict) -> None:
        self.by_state[verdict.state.value] += 1
        for f in verdict.findings:
            self.by_rule[f"{f.rule}:{f.action.value}"] += 1
        for failure in verdict.failures:
            self.failures[failure.rule] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "examined": self.examined,
            "written": self.written,
            "skipped": self.skipped,
            "review_jobs": self.jobs,
            "by_state": dict(sorted(self.by_state.items())),
            "by_rule": dict(sorted(self.by_rule.items())),
            "rule_failures": dict(sorted(self.failures.items())),
            "policy_rechecked": self.policy_rechecked,
            "reports": self.reports.to_dict(),
            "seconds": round(self.seconds, 3),
        }


class Moderator:
    """Moderation of one deployment. Policies are validated here: a bad policy key
    is a ConfigError when the server or CLI starts, not when a video arrives."""

    def __init__(self, deployment: Deployment, classifier: Classifier | None = None) -> None:
        self.deployment = deployment
        self.classifier = classifier or LexiconClassifier()
        self.engines = self._engines(deployment.config)
        self.report_policies = self._report_policies(deployment.config)
        self.claim_lease_ms = 30 * 60 * 1000
        # when each region's policy took effect in this process (monotonic seconds)
        self.policy_since = dict.fromkeys(self.engines, time.monotonic())

    def _engines(self, config: DeploymentConfig) -> dict[str, PolicyEngine]:
        return {
            r: PolicyEngine(parse_policy(r, config.region(r).policy), self.classifier)
            for r in config.region_names
        }

    def _report_policies(self, config: DeploymentConfig) -> dict[str, ReportPolicy]:
        return {r: parse_reports(r, config.region(r).policy) for r in config.region_names}

    def prepare(self, config: DeploymentConfig) -> Callable[[], None]:
        """The engines (and report thresholds) of ``config``'s policies, swapped in by
        the returned call (a serving process applying an edit of ``fyp.toml``:
        :mod:`fyp.serving.reload`). A changed policy then makes its region's verdicts
        stale (:meth:`policy_stale`) until a run re-judges them."""
        engines = self._engines(config)
        reports = self._report_policies(config)

        def swap() -> None:
            now = time.monotonic()
            for region, engine in engines.items():
                old = self.engines.get(region)
                if old is None or old.versions["policy"] != engine.versions["policy"]:
                    self.policy_since[region] = now
            self.engines = engines
            self.report_policies = reports

        return swap

    def cell(self, region: str) -> Cell:
        return cell(self.deployment.store(region))

    # -- inputs ---------------------------------------------------------------
    def creator_facts(self, creator_ids: Iterable[str]) -> dict[str, CreatorFact]:
        """Creator id -> certain age capped at 18 (None: unknown), False if no account."""
        wanted = sorted(set(creator_ids))
        homes = self.deployment.locate_users(wanted)
        year = time.gmtime().tm_year
        out: dict[str, CreatorFact] = {}
        for creator in wanted:
            region = homes.get(creator)
            user = self.deployment.store(region).get_user(creator) if region else None
            if user is None:
                out[creator] = False
            else:
                age = certain_age(user.birth_year, year)
                out[creator] = None if age is None else min(age, ADULT_CAP)
        return out

    def build_input(
        self,
        video: Video,
        region: str,
        facts: dict[str, CreatorFact],
        matches: tuple[Match, ...] = (),
        held: str | None = None,
    ) -> ModerationInput:
        attrs = video.attributes or {}
        if video.creator_id is None:
            source = attrs.get("source")
            creator, age = ("imported" if isinstance(source, str) and source else "none"), None
        else:
            fact = facts.get(video.creator_id, False)
            creator = "missing" if fact is False else "user"
            age = None if isinstance(fact, bool) else fact
        maturity = attrs.get("maturity")
        return ModerationInput(
            video_id=video.video_id,
            region=region,
            caption=video.caption,
            cover_texts=cover_texts(attrs),
            hashtags=tuple(video.hashtags),
            categories=tuple(video.categories),
            maturity=None if maturity is None else str(maturity),
            media_sha256=_media(video),
            creator=creator,
            creator_age=age,
            matches=matches,
            held=held,
        )

    # -- automated checks -----------------------------------------------------
    def run(self, region: str, limit: int | None = None, actor: str = AUTOMATED) -> RunSummary:
        """Automated checks over the region's pending videos (not those awaiting a
        human), oldest first; a verdict of pending opens a review job. First the users'
        reports since the last run are counted (``fyp.moderation.reports``): a hold takes
        effect before the checks start. A run without a ``limit`` also re-judges every
        verdict if the region's policy changed since the last such recheck."""
        started = time.perf_counter()
        store = self.deployment.store(region)
        c = self.cell(region)
        engine = self.engines[region]
        summary = RunSummary(region)
        summary.reports = ReportTriage(c, self.report_policies[region], actor).run()
        todo: list[Todo] = [
            (vid, rev, State.pending.value, "") for vid, rev in c.mod.pending(limit)
        ]
        digest = engine.versions["policy"]
        recheck = limit is None and self.policy_checked(region) != digest
        if recheck:
            todo += c.mod.judged()
        index = dedup.DuplicateIndex(engine.policy.duplicate_threshold)
        states = c.mod.all_states()
        waiting = {vid for vid, _, expect, _ in todo if expect == State.pending.value}
        for vid, creator, blob, media in c.mod.signatures():
            if vid not in waiting:
                sig = dedup.Signature.from_bytes(blob) if blob else None
                index.add(vid, sig, media, states.get(vid, "pending"), creator)
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            videos = [(store.get_video(t[0]), t) for t in chunk]
            facts = self.creator_facts(v.creator_id for v, _ in videos if v and v.creator_id)
            fresh = [t[0] for t in chunk if t[2] == State.pending.value]
            holds = {**unresolved_reports(c, fresh), **human_holds(c, [t[0] for t in chunk])}
            judged: list[Judged] = []
            for video, todo_item in videos:
                if video is None:
                    continue  # deleted since the run started
                summary.examined += 1
                sig = dedup.signature(video.caption, video.hashtags)
                media = _media(video)
                matches = index.matches(video.video_id, sig, media, video.creator_id)
                item = self.build_input(video, region, facts, matches, holds.get(video.video_id))
                verdict = engine.evaluate(item)
                judged.append((video, todo_item, verdict, item, sig))
                index.add(video.video_id, sig, media, verdict.state.value, video.creator_id)
            self._write(c, store, judged, actor, summary)
        if recheck:
            with store.transaction():
                c.audit.append(actor, POLICY_CHECKED, f"policy:{region}", {"digest": digest})
            summary.policy_rechecked = len(todo) - len(waiting)
        summary.seconds = time.perf_counter() - started
        return summary

    def policy_digest(self, region: str) -> str:
        """The digest of the region's moderation policy in force here."""
        return str(self.engines[region].versions["policy"])

    def policy_stale(self, region: str) -> bool:
        """Whether some verdict of the region may have been made under another policy than
        its current one (a run without a limit re-judges them)."""
        if self.policy_checked(region) == self.engines[region].versions["policy"]:
            return False
        judged = self.cell(region).store.query(
            "SELECT 1 FROM moderation WHERE state != 'pending' LIMIT 1"
        )
        return bool(judged)

    def rejudge_overdue(self, region: str, grace_s: float) -> bool | None:
        """None when the region's verdicts follow its policy; else whether they have
        been stale longer than ``grace_s`` since the policy took effect here (a re-judge
        runs within [moderation] every_seconds, and lasts a pass over the verdicts)."""
        if not self.policy_stale(region):
            return None
        return time.monotonic() - self.policy_since.get(region, 0.0) > grace_s

    def run_reason(self, region: str) -> str | None:
        """Why the region needs a moderation run now (videos no check has judged yet,
        users' reports since the last run, or verdicts made under another policy), or
        None: what a server's schedule asks."""
        c = self.cell(region)
        if c.mod.has_pending():
            return "videos are waiting for the automated checks"
        if ReportStore(c.store).needs_run():
            return "users reported videos since the last run"
        if self.policy_stale(region):
            return "the policy changed since its verdicts were made"
        return None

    def policy_checked(self, region: str) -> str | None:
        """The digest of the policy every verdict of the region was last re-judged under
        (None: never): a run re-judges them all when the policy is another."""
        last = None
        for e in self.cell(region).audit.entries(subject=f"policy:{region}", action=POLICY_CHECKED):
            last = e.details.get("digest")
        return None if last is None else str(last)

    def _write(
        self,
        c: Cell,
        store: object,
        judged: list[Judged],
        actor: str,
        summary: RunSummary,
    ) -> None:
        """Write a chunk of verdicts in one transaction. A video edited (new revision)
        or decided by a human since the run read it keeps what happened meanwhile. A
        re-judged human verdict (policy recheck) changes only to a removal: a new policy
        may take down what a person approved, never approve what a person removed."""
        t = now_ms()
        with sql_store(store).transaction():
            now = c.mod.revisions([v.video_id for v, *_ in judged])
            fresh = []
            for video, (_, rev, expect, source), verdict, item, sig in judged:
                current = now.get(video.video_id)
                still = current == (expect, rev) or (current is None and rev == 0)
                if not still:
                    summary.skipped += 1
                elif source in HUMAN_SOURCES and verdict.state not in REMOVALS:
                    pass  # the person's verdict stands
                elif expect != State.pending.value and verdict.state.value == expect:
                    pass  # re-judged, same state: nothing to write
                else:
                    fresh.append((video, verdict, item, sig))
            bodies = [(verdict.to_dict(), item.to_dict()) for _, verdict, item, _ in fresh]
            entries = c.audit.append_many(
                [
                    (actor, "verdict", video.video_id, {**body, "input": given}, t)
                    for (video, *_), (body, given) in zip(fresh, bodies, strict=True)
                ]
            )
            c.mod.write_many(
                [
                    (
                        video.video_id,
                        verdict.state.value,
                        int(verdict.creator_ok),
                        verdict.reason,
                        actor,
                        t,
                        canonical_json(body),
                        canonical_json(given),
                        entry.seq,
                    )
                    for (video, verdict, _, _), (body, given), entry in zip(
                        fresh, bodies, entries, strict=True
                    )
                ]
            )
            c.mod.put_signatures(
                [
                    (
                        video.video_id,
                        video.creator_id,
                        sig.to_bytes() if sig else None,
                        item.media_sha256,
                        t,
                    )
                    for video, _, item, sig in fresh
                ]
            )
            waiting = c.mod.open_jobs(
                [v.video_id for v, verdict, _, _ in fresh if verdict.state is State.pending]
            )
            for video, verdict, _, _ in fresh:
                summary.written += 1
                summary.count(verdict)
                if verdict.state is State.pending and video.video_id not in waiting:
                    job = c.mod.create_job(video.video_id, "review", verdict.reason, t)
                    c.audit.append(
                        actor,
                        "job.open",
                        video.video_id,
                        {"job_id": job.job_id, "reason": job.reason},
                        t,
                    )
                    summary.jobs += 1

    def recheck_creators(
        self, region: str, actor: str = AUTOMATED, creators: Collection[str] | None = None
    ) -> int:
        """Re-evaluate creator eligibility of every judged video in the region (a
        creator who turned 16, a birth year added or corrected), or only of the videos
        of ``creators``; returns how many changed."""
        store = self.deployment.store(region)
        c = self.cell(region)
        engine = self.engines[region]
        changed = 0
        videos = [v for v in store.iter_videos() if creators is None or v.creator_id in creators]
        facts = self.creator_facts(v.creator_id for v in videos if v.creator_id)
        t = now_ms()
        with store.transaction():
            for video in videos:
                record = c.mod.get(video.video_id)
                if record is None or record.state == State.pending.value:
                    continue
                ok, findings = engine.creator_ok(self.build_input(video, region, facts))
                if ok == record.creator_ok:
                    continue
                c.mod.store.execute(
                    "UPDATE moderation SET creator_ok = ? WHERE video_id = ?",
                    (int(ok), video.video_id),
                )
                entry = c.audit.append(
                    actor,
                    "creator_recheck",
                    video.video_id,
                    {"creator_ok": ok, "findings": [f.to_dict() for f in findings]},
                    t,
                )
                c.mod.set_audit_seq(video.video_id, entry.seq)
                changed += 1
        return changed

    # -- status and replay ----------------------------------------------------
    def status(self, video_id: str) -> dict[str, Any]:
        """The video's moderation state in every region whose catalogue holds it."""
        regions = self.deployment.locate_video(video_id)
        if not regions:
            raise UnknownVideo(f"no video {video_id!r}", video_id=video_id)
        out: dict[str, Any] = {}
        for region in regions:
            record = self.cell(region).mod.get(video_id)
            out[region] = (
                record.to_dict()
                if record
                else {
                    "video_id": video_id,
                    "region": region,
                    "state": "pending",
                    "reason": "not moderated yet",
                }
            )
        return {"video_id": video_id, "regions": out}

    def replay(self, region: str, video_id: str) -> Replay:
        """Evaluate the video's latest automated verdict again from its stored input:
        404 for a video the region does not hold, 409 for one without such a verdict."""
        where = {"video_id": video_id, "region": region}
        entries = [
            e
            for e in self.cell(region).audit.entries(subject=video_id, action="verdict")
            if "input" in e.details  # automated verdicts; human ones have no input to replay
        ]
        if not entries:  # the video's state, not the request, is what is wrong: 409
            if region not in self.deployment.locate_video(video_id):
                raise UnknownVideo(f"no video {video_id!r} in region {region!r}", **where)
            raise JobConflict(
                f"video {video_id!r} has no automated verdict in region {region!r} to replay "
                "(pending, or decided by people only)",
                **where,
            )
        details = dict(entries[-1].details)
        stored_input = details.pop("input")
        return self.engines[region].replay(stored_input, details)


def _media(video: Video) -> str | None:
    value = (video.attributes or {}).get("media_sha256")
    return value.lower() if isinstance(value, str) and value else None


# -- enforcement -------------------------------------------------------------------
ADULT = 18


class Viewer(Protocol):
    """What the check needs of ``fyp.feed.state.UserState``."""

    @property
    def region(self) -> str: ...

    @property
    def age(self) -> int | None: ...


class ModerationEligibility:
    """The ``EligibilityCheck`` for ``FeedService``: ids and viewer -> {id: reason} for
    the ineligible ones (see the module docstring for the rule). A video not in the live
    catalogue is one of them, so the feed's final check needs no separate one."""

    checks_availability = True

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    def __call__(self, video_ids: Sequence[str], viewer: Viewer) -> dict[str, str]:
        if not video_ids:
            return {}
        snapshot = snapshot_for(self.deployment.store(viewer.region))
        barred = snapshot.barred(certainly_at_least(viewer.age, ADULT))  # refreshes first
        live = snapshot.live
        return {v: barred.get(v, NOT_LIVE) for v in video_ids if v in barred or v not in live}

    def ineligible_items(self, model: ItemCatalogue, viewer: Viewer) -> np.ndarray:
        """The same rule per item of ``model``'s catalogue, as bools (read only): the feed
        looks its candidates up in it and asks ``__call__`` only for those removed."""
        snapshot = snapshot_for(self.deployment.store(viewer.region))
        return snapshot.blocked_items(model, certainly_at_least(viewer.age, ADULT))
