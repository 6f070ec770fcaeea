"""``fyp keys``: create, list and revoke API keys (scoped by role and region)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Column, Table

from fyp.access.keys import OPERATOR_ROLES, ROLES
from fyp.cli.app import console, fail
from fyp.errors import FypError

DirArg = typer.Argument(..., help="Deployment directory (holds fyp.toml).")


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def register(app: typer.Typer) -> None:
    keys = typer.Typer(
        name="keys", help="Manage the API keys of a deployment.", no_args_is_help=True
    )
    app.add_typer(keys, name="keys")

    @keys.command("create")
    def create(
        directory: Path = DirArg,
        name: str = typer.Option(..., help="Who or what holds the key (shown in audit entries)."),
        role: list[str] = typer.Option(..., help=f"A role: {', '.join(ROLES)}; repeatable."),
        region: list[str] | None = typer.Option(
            None, help="A region the key reaches; repeatable (default: every region)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the key as JSON."),
    ) -> None:
        """Create a key; its secret is printed once and never stored."""
        from fyp.access.keys import KeyStore
        from fyp.regions.deployment import Deployment

        try:
            with Deployment.open(directory) as d:
                key, token = KeyStore(d).create(name, role, region or None)
        except FypError as exc:
            raise fail(exc) from None
        if as_json:
            typer.echo(json.dumps({**key.to_dict(), "key": token}, indent=2))
            return
        console.print(
            f"created key [bold]{key.key_id}[/] ({key.name}): roles {', '.join(key.roles)}; "
            f"regions {', '.join(key.regions)}"
        )
        people = sorted(set(key.roles) & OPERATOR_ROLES)
        if people and len(people) < len(key.roles):
            console.print(
                f"note: it holds {', '.join(people)}, a person's role: on a user's routes it "
                "acts as a person (X-Fyp-Reason, audited), service roles beside it included"
            )
        console.print("the key (shown only now; send it as 'Authorization: Bearer <key>'):")
        typer.echo(token)

    @keys.command("list")
    def list_keys(
        directory: Path = DirArg,
        as_json: bool = typer.Option(False, "--json", help="Print the keys as JSON."),
    ) -> None:
        """Every key: id, name, roles, regions, created, revoked (never a secret)."""
        from fyp.access.keys import KeyStore
        from fyp.regions.deployment import Deployment

        try:
            with Deployment.open(directory) as d:
                found = KeyStore(d).list()
        except FypError as exc:
            raise fail(exc) from None
        if as_json:
            typer.echo(json.dumps({"keys": [k.to_dict() for k in found]}, indent=2))
            return
        table = Table("name", "roles", "regions", "created (UTC)", "revoked (UTC)")
        table.columns.insert(0, Column("key_id", no_wrap=True))
        for k in found:
            table.add_row(
                k.key_id,
                k.name,
                ",".join(k.roles),
                ",".join(k.regions),
                _when(k.created_at_ms),
                _when(k.revoked_at_ms),
            )
        console.print(table)

    @keys.command("revoke")
    def revoke(
        directory: Path = DirArg,
        key_id: str = typer.Argument(..., help="The key's id (from `fyp keys list`)."),
        as_json: bool = typer.Option(False, "--json", help="Print the revoked key as JSON."),
    ) -> None:
        """Revoke a key in every region; a running server refuses it within a second."""
        from fyp.access.keys import KeyStore
        from fyp.regions.deployment import Deployment

        try:
            with Deployment.open(directory) as d:
                key = KeyStore(d).revoke(key_id)
        except FypError as exc:
            raise fail(exc) from None
        if as_json:
            typer.echo(json.dumps(key.to_dict(), indent=2))
            return
        console.print(
            f"revoked key [bold]{key.key_id}[/] ({key.name}) at {_when(key.revoked_at_ms)}"
        )
