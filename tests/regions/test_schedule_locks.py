"""A schedule's work runs on one host at a time (``fyp.regions.background``): every
run holds a lock file in the deployment directory, and a host whose tick finds it held
skips that tick. Each test runs the schedulers in two processes on one directory, with
real ``flock`` locks; the children are trivial programs standing in for ``fyp train``
and ``fyp moderate``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fyp.cli.app import app
from fyp.config import load_config
from fyp.errors import RunInProgress
from fyp.filelock import try_open_locked, unlock
from fyp.models.schedule import TrainingScheduler
from fyp.moderation.schedule import ModerationScheduler
from fyp.regions.background import HELD_LOCK_ENV, holding, inherited, schedule_lock
from fyp.regions.deployment import Deployment

# the child of the other host: says it started, then runs until told to end (or 60 s)
LONG_CHILD = (
    "import os, pathlib, sys, time\n"
    "here = pathlib.Path(sys.argv[1])\n"
    "(here / 'started.tmp').write_text(str(os.getpid()))\n"
    "(here / 'started.tmp').rename(here / 'started')\n"
    "deadline = time.monotonic() + 60\n"
    "while not (here / 'end').exists() and time.monotonic() < deadline:\n"
    "    time.sleep(0.02)\n"
)
# the other host: one tick of a real TrainingScheduler on the deployment, then its counts
OTHER_HOST = (
    "import pathlib, sys\n"
    "from fyp.config import load_config\n"
    "from fyp.models.schedule import TrainingScheduler\n"
    "scheduler = TrainingScheduler(load_config(pathlib.Path(sys.argv[1])))\n"
    "scheduler.program = (sys.executable, '-c', sys.argv[2], sys.argv[3])\n"
    "ok = scheduler.tick()\n"
    "print(ok, scheduler.runs, scheduler.failures, scheduler.skipped, flush=True)\n"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    with Deployment.init(tmp_path / "dep", ["us", "eu"]):
        pass
    return tmp_path / "dep"


class OtherHost:
    """A second process whose training tick runs :data:`LONG_CHILD`."""

    def __init__(self, root: Path, work: Path) -> None:
        work.mkdir()
        self.work = work
        self.process = subprocess.Popen(
            [sys.executable, "-c", OTHER_HOST, str(root), LONG_CHILD, str(work)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def child_pid(self) -> int:
        """Once its child runs (and so holds the lock)."""
        started = self.work / "started"
        deadline = time.monotonic() + 30
        while not started.exists():
            assert self.process.poll() is None, self.process.communicate()
            assert time.monotonic() < deadline, "the other host's child never started"
            time.sleep(0.02)
        return int(started.read_text())

    def end_child(self) -> None:
        (self.work / "end").write_text("")

    def counts(self) -> str:
        out, err = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, err
        return out.strip()


@pytest.fixture
def other(root: Path, tmp_path: Path) -> Iterator[OtherHost]:
    host = OtherHost(root, tmp_path / "other")
    try:
        yield host
    finally:
        host.end_child()  # its child ends even when the host was killed
        if host.process.poll() is None:
            host.process.kill()
        host.process.communicate()


def this_host(root: Path, tmp_path: Path) -> tuple[TrainingScheduler, Path]:
    """This process's training schedule, whose child leaves a file behind."""
    ran = tmp_path / "ran-here"
    scheduler = TrainingScheduler(load_config(root))
    scheduler.program = (sys.executable, "-c", f"open({str(ran)!r}, 'a').write('x')")
    return scheduler, ran


def runs_within(scheduler: TrainingScheduler, seconds: float) -> bool:
    """Tick until a run is not skipped (the lock is free again)."""
    deadline = time.monotonic() + seconds
    while not scheduler.tick():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_one_host_runs_the_tick_the_other_skips_then_runs_once_it_is_free(
    root: Path, tmp_path: Path, other: OtherHost
) -> None:
    other.child_pid()
    here, ran = this_host(root, tmp_path)
    assert here.tick() is False
    assert (here.runs, here.failures, here.skipped) == (0, 0, 1) and not ran.exists()
    assert (root / ".schedule-training.lock").is_file()

    other.end_child()
    assert other.counts() == "True 1 0 0"  # the other host ran it, skipping nothing
    assert here.tick() is True
    assert (here.runs, here.failures, here.skipped) == (1, 0, 1) and ran.read_text() == "x"


def test_a_killed_servers_child_holds_the_lock_until_it_ends(
    root: Path, tmp_path: Path, other: OtherHost
) -> None:
    """``kill -9`` of a server leaves its child running (its own session): a second
    run must not start beside it, and one must start once it is gone."""
    child = other.child_pid()
    other.process.kill()
    other.process.wait()
    os.kill(child, 0)  # still running
    here, ran = this_host(root, tmp_path)
    assert here.tick() is False and here.skipped == 1 and not ran.exists()

    other.end_child()  # the orphan finishes its work
    assert runs_within(here, 10), "the lock outlived the child"
    assert here.runs == 1 and ran.read_text() == "x"


def test_a_child_killed_while_its_server_lives_frees_the_lock(
    root: Path, tmp_path: Path, other: OtherHost
) -> None:
    os.kill(other.child_pid(), signal.SIGKILL)
    assert other.counts() == "False 1 1 0"  # counted as a failure over there
    here, ran = this_host(root, tmp_path)
    assert here.tick() is True and (here.runs, here.skipped) == (1, 0) and ran.exists()


def test_a_server_stopping_its_child_frees_the_lock(tmp_path: Path, root: Path) -> None:
    """Shutdown ends the child (``ChildScheduler.stop``) and the lock goes with it."""
    work = tmp_path / "w"
    work.mkdir()
    scheduler = TrainingScheduler(load_config(root))
    scheduler.program = (sys.executable, "-c", LONG_CHILD, str(work))
    scheduler.interval_s = 0.01
    scheduler.start()
    deadline = time.monotonic() + 30
    while not (work / "started").exists():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.02)
    lock = schedule_lock(root, "training")
    assert try_open_locked(lock) is None
    scheduler.stop(grace_s=5)
    fd = try_open_locked(lock)
    assert fd is not None
    unlock(fd)


HOLD = (
    "import pathlib, sys, time\n"
    "from fyp.filelock import open_locked\n"
    "fd = open_locked(pathlib.Path(sys.argv[1]))\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


def test_moderation_locks_each_region_apart(root: Path, tmp_path: Path) -> None:
    """A host moderating us does not keep another from moderating eu."""
    config = load_config(root)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(schedule_lock(config.region_dir("us"), "moderation"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        scheduler = ModerationScheduler(config, lambda region: "videos are waiting")
        ran = tmp_path / "ran"
        # the child is told `moderate ROOT --region R`: it records R
        record = f"import sys; open({str(ran)!r}, 'a').write(sys.argv[-1] + ' ')"
        scheduler.program = (sys.executable, "-c", record)
        assert scheduler.tick() is False  # not every region ran
        assert ran.read_text() == "eu " and (scheduler.runs, scheduler.skipped) == (1, 1)
    finally:
        holder.kill()
        holder.wait()
    assert scheduler.tick() is True and ran.read_text() == "eu us eu "


def test_a_lock_that_cannot_be_opened_runs_nothing_and_is_a_failure(
    root: Path, tmp_path: Path
) -> None:
    """Whether another host runs it cannot be told: the safe side is not to."""
    here, ran = this_host(root, tmp_path)
    lock = schedule_lock(root, "training")
    lock.mkdir()  # a directory where the lock file should be
    assert here.tick() is False
    assert (here.runs, here.failures, here.skipped) == (1, 1, 0) and not ran.exists()


class Holder:
    """Another process holding a lock, as a scheduled run's child does."""

    def __init__(self, lock: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None and self.process.stdout.readline() == "held\n"

    def release(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def holder() -> Iterator[Callable[[Path], Holder]]:
    made: list[Holder] = []

    def hold(lock: Path) -> Holder:
        made.append(Holder(lock))
        return made[-1]

    yield hold
    for h in made:
        h.release()


def fyp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fyp", *args], capture_output=True, text=True, timeout=120
    )


def _versions(root: Path, region: str) -> list[Path]:
    models = root / "regions" / region / "models"
    return sorted(p for p in models.iterdir() if p.is_dir()) if models.is_dir() else []


@pytest.mark.parametrize(
    ("command", "lock"),
    [
        (["train"], ".schedule-training.lock"),
        (["erasure", "process"], ".schedule-erasure.lock"),
        (["moderate"], "regions/us/.schedule-moderation.lock"),
    ],
)
def test_a_command_run_by_hand_with_no_wait_refuses_while_its_schedule_runs(
    root: Path, holder: Callable[[Path], Holder], command: list[str], lock: str
) -> None:
    """Until session 27 a hand-run (or cron) `fyp train` took no lock and trained beside
    a server's scheduled run."""
    held = holder(root / lock)
    refused = fyp(*command, str(root), "--no-wait")  # the real exit code and message
    assert refused.returncode == 2, refused.stderr
    assert "error (run_in_progress)" in refused.stderr and lock in refused.stderr
    assert _versions(root, "us") == []  # nothing trained
    held.release()
    ran = CliRunner().invoke(app, [*command, str(root), "--no-wait"])
    assert ran.exit_code == 0, ran.output


def test_moderating_one_region_by_hand_is_not_held_up_by_another_regions_run(
    root: Path, holder: Callable[[Path], Holder]
) -> None:
    holder(root / "regions" / "us" / ".schedule-moderation.lock")
    ran = CliRunner().invoke(app, ["moderate", str(root), "--region", "eu", "--no-wait"])
    assert ran.exit_code == 0, ran.output


def test_train_by_hand_waits_for_the_scheduled_run_then_trains(
    root: Path, holder: Callable[[Path], Holder]
) -> None:
    held = holder(schedule_lock(root, "training"))
    hand = subprocess.Popen(
        [sys.executable, "-m", "fyp", "train", str(root), "--jobs", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert hand.stderr is not None
        line = hand.stderr.readline()  # said before it blocks
        assert "waiting for another training run to finish" in line, line
        time.sleep(0.5)
        assert hand.poll() is None and _versions(root, "us") == []
        held.release()
        out, err = hand.communicate(timeout=60)
    finally:
        if hand.poll() is None:
            hand.kill()
            hand.communicate()
    assert hand.returncode == 0, err
    assert "trained 2 region(s)" in out and len(_versions(root, "us")) == 1


def test_a_scheduled_child_runs_under_the_lock_it_was_passed(root: Path, tmp_path: Path) -> None:
    """The server holds the lock while its child runs: the child must not wait for it
    (it would wait for its own parent), and a hand-run beside them must."""
    scheduler, ran = this_host(root, tmp_path)
    lock = schedule_lock(root, "training")
    scheduler.program = (
        sys.executable,
        "-c",
        "import pathlib, sys\n"
        "from fyp.regions.background import holding\n"
        f"with holding(pathlib.Path({str(lock)!r}), 'training', wait=False):\n"
        f"    open({str(ran)!r}, 'a').write('x')\n",
    )
    assert scheduler.tick() is True and ran.read_text() == "x"
    assert (scheduler.runs, scheduler.failures) == (1, 0)


def test_a_stray_variable_does_not_stand_for_the_lock(
    root: Path, holder: Callable[[Path], Holder], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The descriptor named must be open on the lock file itself."""
    lock = schedule_lock(root, "training")
    holder(lock)
    other = tmp_path / "other.lock"
    other.touch()
    with open(other) as f:  # an open descriptor, but of another file
        monkeypatch.setenv(HELD_LOCK_ENV, str(f.fileno()))
        assert not inherited(lock)
        with pytest.raises(RunInProgress), holding(lock, "training", wait=False):
            pass
    monkeypatch.setenv(HELD_LOCK_ENV, "not a number")
    assert not inherited(lock)
    with open(lock) as f:  # the lock file itself, but another open file: not the holder's
        monkeypatch.setenv(HELD_LOCK_ENV, str(f.fileno()))
        assert not inherited(lock)
