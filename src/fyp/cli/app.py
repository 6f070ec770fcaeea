"""Root Typer app and the one place CLI errors become messages and exit codes.

Exit codes: 0 success, 1 a check found a problem, 2 a client error (bad arguments or
input), 3 a server-side error (store, config, model).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from fyp.errors import ClientError, FypError

app = typer.Typer(
    name="fyp",
    help="fyp: a For You feed engine for short-video apps, with ringfenced regions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts name config sections like [feed]: not Rich markup, and paragraphs reflow
    rich_markup_mode="markdown",
)
# no emoji codes: ids may hold colons (acme:x:7), and ":x:" must not print as an emoji
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

EXIT_CLIENT = 2
EXIT_SERVER = 3


def print_error(error: FypError, context: str = "") -> None:
    """Print an error the same way for every command (``context``: what it is about,
    e.g. ``region eu: `` when a command goes on with other regions)."""
    # one line however narrow the terminal, or none (a log file, a CI job)
    err_console.print(
        f"[bold red]error[/] ({error.code}): {escape(context + error.message)}",
        soft_wrap=True,
        highlight=False,
    )


WaitOpt = typer.Option(
    True,
    "--wait/--no-wait",
    help="When another run of this work holds its lock (a server's schedule, or the "
    "command run elsewhere), wait for it to finish (default), or stop at once (exit 2, "
    "run_in_progress): for cron.",
)


@contextmanager
def scheduled_run(lock: Path, what: str, wait: bool) -> Iterator[None]:
    """Hold the lock of a schedule's runs (``fyp.regions.background.holding``) for a
    command that does the same work by hand, saying so on stderr if it has to wait."""
    from fyp.regions.background import holding

    def waiting() -> None:
        err_console.print(
            f"waiting for another {what} run to finish (it holds {lock})",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )

    with holding(lock, what, wait, waiting):
        yield


def exit_code(errors: list[FypError]) -> int:
    """2 when every error is the caller's to fix, else 3."""
    return EXIT_CLIENT if all(isinstance(e, ClientError) for e in errors) else EXIT_SERVER


def fail(error: FypError) -> typer.Exit:
    """Print an error and return the exit to raise."""
    print_error(error)
    return typer.Exit(exit_code([error]))


def _register() -> None:
    from fyp.cli import (
        backup,
        data,
        deploy,
        erasure,
        evaluate,
        experiments,
        feed,
        moderate,
        quarantine,
        retention,
        users,
    )
    from fyp.cli import keys as api_keys

    deploy.register(app)
    data.register(app)
    feed.register(app)
    evaluate.register(app)
    moderate.register(app)
    api_keys.register(app)
    erasure.register(app)
    backup.register(app)
    users.register(app)
    experiments.register(app)
    quarantine.register(app)
    retention.register(app)


_register()


def main() -> None:
    try:
        app()
    except FypError as exc:
        raise SystemExit(fail(exc).exit_code) from None
    except KeyboardInterrupt:
        sys.exit(130)
