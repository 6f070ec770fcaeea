"""A small two-region deployment with users, events, a moderated catalogue and trained
models, built once per session and copied per test; and a CLI runner with exit codes."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.errors import FypError
from fyp.events.ingest import Ingestor
from fyp.models.training import train_and_publish
from fyp.moderation import Moderator
from fyp.regions.consent import consent_policy
from fyp.regions.deployment import Deployment

N_USERS = 24
N_VIDEOS = 40
runner = CliRunner()


def build(directory: Path) -> Path:
    """us users are u0, u2, ...; eu users u1, u3, ...; every video is in both regions."""
    with Deployment.init(directory, ["us", "eu"]) as d:
        catalog = Catalog(d)
        for u in range(N_USERS):
            region = "us" if u % 2 == 0 else "eu"
            catalog.create_user(UserIn(user_id=f"u{u}", home_region=region, birth_year=1990))
        for v in range(N_VIDEOS):
            catalog.create_video(
                VideoIn(
                    video_id=f"v{v}",
                    creator_id=f"u{v % 6}",
                    duration_ms=15_000,
                    regions=["us", "eu"],
                    categories=[f"cat{v % 4}"],
                )
            )
        rng = random.Random(7)
        events = [
            {
                "event_id": f"e{k}",
                "user_id": f"u{rng.randrange(N_USERS)}",
                "video_id": f"v{rng.randrange(N_VIDEOS)}",
                "type": "play",
                "watch_ms": rng.choice([2_000, 20_000, 30_000]),
            }
            for k in range(800)
        ]
        Ingestor(d).ingest(events)
        moderator = Moderator(d)
        for region in d.regions:
            moderator.run(region)
            train_and_publish(
                d.store(region),
                d.config.region_dir(region),
                consent=consent_policy(d.config, region),
            )
    return directory


def copy_of(built: Path, dest: Path) -> Path:
    shutil.copytree(built, dest)
    return dest


def run_killed(script: str, *args: str) -> None:
    """Run ``python -c script ARGS`` (a fyp command with a step patched to SIGKILL the
    process) and check it was killed, not that it finished or failed."""
    run = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
    )
    assert run.returncode == -9, run.stderr


def cli(*args: str) -> tuple[int, str]:
    """Run a fyp command as ``fyp.cli.app.main`` would: (exit code, output)."""
    from fyp.cli.app import app, fail

    result = runner.invoke(app, list(args))
    if isinstance(result.exception, FypError):
        return fail(result.exception).exit_code, result.exception.message
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small deployment, built once; tests take a copy (``copy_of``)."""
    return build(tmp_path_factory.mktemp("built") / "dep")
