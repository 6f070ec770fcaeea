"""Feed commands: train region models, print a user's feed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from fyp.cli.app import WaitOpt, console, exit_code, fail, print_error, scheduled_run

if TYPE_CHECKING:
    from fyp.errors import FypError
    from fyp.feed.page import FeedItem
    from fyp.regions.deployment import Deployment
    from fyp.sovereignty.retention import Expired

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        directory: Path = DirArg,
        region: str | None = typer.Option(None, help="Train only this region (default: all)."),
        keep: int = typer.Option(
            3, min=1, help="Model versions to keep per region (older ones are deleted)."
        ),
        jobs: int = typer.Option(
            0,
            min=0,
            help="Regions trained at once, each in its own process (0: one per CPU); local only.",
        ),
        if_changed: bool = typer.Option(
            False,
            "--if-changed",
            help="Skip regions whose events and catalogue are unchanged since the live model.",
        ),
        ray: str | None = typer.Option(
            None,
            "--ray",
            metavar="ADDRESS",
            help="Train each region as a task on this Ray cluster (auto, HOST:6379, "
            "ray://HOST:10001), only on a node labelled fyp-region:REGION; "
            "default: [training] ray; empty (--ray ''): local processes.",
        ),
        wait: bool = WaitOpt,
    ) -> None:
        """Train every model of each region from that region's store only, rank every
        user's feed ahead with them ([feed] rank_ahead), and go live atomically. First,
        forget the served pages older than the seen window (a serving process also does,
        once a minute): a deployment that is trained but not served keeps no more; and
        delete the events past each region's retention limit, so no model learns them. A
        region that fails (or that no Ray node may train) is reported and the others
        still train; the exit is then non-zero. Holds `.schedule-training.lock`, as a
        server's scheduled training does: one training run at a time."""
        from fyp.config import load_config
        from fyp.regions.background import schedule_lock

        lock = schedule_lock(load_config(directory).root, "training")  # a deployment's
        with scheduled_run(lock, "training", wait):
            _train(directory, region, keep, jobs, if_changed, ray)

    @app.command()
    def recommend(
        directory: Path = DirArg,
        user: str | None = typer.Argument(None, help="User id (omit with --guest)."),
        n: int = typer.Option(10, help="Number of videos."),
        record: bool = typer.Option(
            False, help="Record the videos as served (the next call then shows new ones)."
        ),
        reason: str = typer.Option(
            "fyp recommend on the command line",
            help="Why you read this user's feed: it goes in their region's audit log.",
        ),
        lang: str | None = typer.Option(
            None,
            help="Language of the reasons: en, zh-Hans or zh-Hant (as the API's ?lang=); "
            "default: the user's profile language if supported, else en.",
        ),
        guest: str | None = typer.Option(
            None,
            "--guest",
            metavar="REGION",
            help="Print the region's guest feed instead (a first page for a viewer nobody "
            "knows): no user, nothing read or recorded about anyone.",
        ),
    ) -> None:
        """Print a user's For You feed with the reason for each video (an operator read,
        recorded in the user's region's audit log like one over the API); the feed not
        based on profiling when the user's personalised_feed consent is off. With
        --guest REGION, the region's guest feed (GET /v1/regions/{region}/feed)."""
        from fyp.access.guard import MAX_REASON
        from fyp.audit.log import AuditLog
        from fyp.errors import InvalidRequest
        from fyp.feed.reasons import asked_lang
        from fyp.feed.service import FeedService
        from fyp.regions.deployment import Deployment
        from fyp.sovereignty.ledger import user_pseudonym

        if (user is None) == (guest is None):
            raise InvalidRequest("name a USER, or a region with --guest (not both)")
        if guest is not None and record:
            raise InvalidRequest("--record: a guest feed records nothing")
        asked = asked_lang(lang, None, field="--lang")  # before the feed is read
        why = reason.strip()
        if guest is None and not 0 < len(why) <= MAX_REASON:  # as X-Fyp-Reason over HTTP
            raise fail(
                InvalidRequest(
                    f"--reason: say why you read this user's feed (1 to {MAX_REASON} characters)"
                )
            )
        with Deployment.open(directory) as d:
            if guest is not None:
                shown = FeedService(d).guest_feed(guest, n=n)
                title = f"guest feed of {shown.region} (not personalised)"
                _print_feed(d, shown.region, title, shown.items, shown.language(asked))
                return
            assert user is not None
            home = d.homed_region(user)  # on record before it is read, as over HTTP
            AuditLog(d.store(home)).append(
                "cli:fyp recommend",
                "user_data.read",
                user_pseudonym(d.config, home, user),
                {"route": "fyp recommend", "reason": why},
            )
            page = FeedService(d).feed(user, n=n, record=record)
            kind = "" if page.personalised else ", not personalised"
            title = f"feed of {user} ({page.region}{kind})"
            _print_feed(d, page.region, title, page.items, page.language(asked))


def _print_feed(
    d: Deployment, region: str, title: str, items: list[FeedItem], language: str
) -> None:
    """A page as a table: each video's caption (from ``region``), score, source, reason."""
    videos = d.store(region).get_videos(i.video_id for i in items)
    table = Table(
        "#",
        "video",
        Column("caption", max_width=40, no_wrap=True, overflow="ellipsis"),
        "score",
        "source",
        "reason",
        title=title,
    )
    for item in items:
        video = videos.get(item.video_id)
        table.add_row(
            str(item.position + 1),
            item.video_id,
            escape(" ".join(video.caption.split())) if video else "",
            f"{item.score:.3f}",
            item.source,
            escape(item.why.text(language)),
        )
    console.print(table)


def _changed(d: Deployment, regions: list[str]) -> list[str]:
    """The regions whose live model is behind their store, each said why."""
    from fyp.experiments.arms import region_record, settings_record
    from fyp.models.schedule import retrain_reason
    from fyp.regions.consent import consent_policy

    out = []
    settings = settings_record(d.config.ranking, d.config.feed)
    for name in regions:
        experiment = region_record(d.config, name)
        consent = consent_policy(d.config, name)
        reason = retrain_reason(
            d.store(name), d.config.region_dir(name), experiment, consent, settings
        )
        console.print(
            f"{name}: {reason or 'unchanged since the live model; not trained'}", markup=False
        )
        if reason is not None:
            out.append(name)
    return out


def _print_expired(expired: Expired) -> None:
    if any(expired.tables.values()):
        console.print(
            f"{expired.region}: {expired.summary()} past the region's retention limit "
            "([regions.R.policy.retention] events_days)",
            markup=False,
        )


def _print_trained(m: dict[str, Any]) -> None:
    low, high = m["seq"]
    if m["forgotten"]:
        console.print(f"{m['region']}: forgot {m['forgotten']:,} served pages beyond the window")
    where = m["trained_on"]
    on = f"on {where['host']}"
    if where["executor"] == "ray":
        on = f"on Ray node {where['ray_node_id'][:12]} ({where['host']})"
    excluded = m.get("excluded", 0)
    left_out = f" ({excluded:,} left out: no consent to model training)" if excluded else ""
    console.print(
        f"region [bold]{m['region']}[/]: version {m['version']}, {m['events']:,} events "
        f"(seq {low}..{high}), {m['users']:,} users{left_out}, {m['videos']:,} videos, "
        f"{m['train_seconds']} s, feeds ranked ahead in {m['ahead_seconds']} s, {on}"
    )


def _train(
    directory: Path, region: str | None, keep: int, jobs: int, if_changed: bool, ray: str | None
) -> None:
    """`fyp train` once its lock is held."""
    from fyp.models.executors import executor_for
    from fyp.regions.deployment import Deployment
    from fyp.regions.live_config import record_policy_in_force
    from fyp.sovereignty.retention import expire_region

    with Deployment.open(directory) as d:  # checks the config and the region name
        regions = [d.config.region(region).name] if region else d.regions
        record_policy_in_force(d)  # a policy edited while no server ran: from now, on record
        for name in regions:  # first, so a region whose events expired retrains
            _print_expired(expire_region(d, name))
        if if_changed:
            regions = _changed(d, regions)
        address = d.config.training.ray if ray is None else ray
    if not regions:
        return
    started = time.perf_counter()
    failed: list[FypError] = []
    for outcome in executor_for(address, jobs).run(directory, regions, keep):
        if outcome.error is None:
            assert outcome.summary is not None
            _print_trained(outcome.summary)
        else:
            failed.append(outcome.error)
            print_error(outcome.error, f"region {outcome.region}: ")
    trained = len(regions) - len(failed)
    console.print(
        f"trained {trained} region(s) in {time.perf_counter() - started:.1f} s"
        + (f"; {len(failed)} failed" if failed else "")
    )
    if failed:
        raise typer.Exit(exit_code(failed))
