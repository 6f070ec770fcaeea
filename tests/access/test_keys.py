"""API keys: format, hashed storage per region, listing, revocation, the ring, the CLI."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fyp.access import ring as ring_module
from fyp.access.keys import (
    ADMIN_KEY_FILE,
    ROLES,
    KeyStore,
    ensure_admin_key,
    secret_digest,
    split_token,
)
from fyp.access.ring import KeyRing
from fyp.cli.app import app
from fyp.errors import InvalidRequest, NotFound, Unauthenticated, UnknownRegion
from fyp.regions.deployment import Deployment


def _rows(d: Deployment, region: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(d.config.region_dir(region) / "store.sqlite")
    try:
        return db.execute("SELECT * FROM api_keys").fetchall()
    finally:
        db.close()


def test_a_key_is_stored_hashed_in_each_of_its_regions_only(deployment: Deployment) -> None:
    key, token = KeyStore(deployment).create("ingest-us", ["ingest"], ["us"])
    key_id, secret = split_token(token) or ("", "")
    assert key_id == key.key_id and token == f"fyp_{key_id}_{secret}" and len(secret) >= 43
    assert key.secret_sha256 == secret_digest(secret)
    assert [r[0] for r in _rows(deployment, "us")] == [key_id]
    assert _rows(deployment, "eu") == []
    for region in ("us", "eu"):  # the secret itself is in no file of the deployment
        for f in deployment.config.region_dir(region).rglob("*"):
            if f.is_file():
                assert secret.encode() not in f.read_bytes(), f


def test_a_store_refuses_a_key_that_does_not_reach_its_region(deployment: Deployment) -> None:
    from fyp.audit.log import sql_store

    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        sql_store(deployment.store("eu")).execute(
            "INSERT INTO api_keys VALUES ('0123456789abcdef', 'x', 'n', '[\"admin\"]', "
            "'[\"us\"]', 1, NULL)"
        )


def test_create_checks_roles_regions_and_name(deployment: Deployment) -> None:
    keys = KeyStore(deployment)
    with pytest.raises(InvalidRequest):
        keys.create("x", ["root"])
    with pytest.raises(InvalidRequest):
        keys.create("x", [])
    with pytest.raises(InvalidRequest):
        keys.create("", ["feed"])
    with pytest.raises(UnknownRegion):
        keys.create("x", ["feed"], ["mars"])
    key, _ = keys.create("all", list(reversed(ROLES)))
    assert key.roles == ROLES and key.regions == ("us", "eu")


def test_list_and_revoke(deployment: Deployment) -> None:
    keys = KeyStore(deployment)
    a, _ = keys.create("a", ["feed"])
    b, _ = keys.create("b", ["auditor"], ["eu"])
    assert {k.key_id for k in keys.list()} == {a.key_id, b.key_id}
    revoked = keys.revoke(a.key_id)
    assert revoked.revoked_at_ms is not None
    again = keys.revoke(a.key_id)  # idempotent: the first time is kept
    assert again.revoked_at_ms == revoked.revoked_at_ms
    held = [r for reg in ("us", "eu") for r in _rows(deployment, reg) if r[0] == a.key_id]
    assert len(held) == 2 and all(r[6] is not None for r in held)
    with pytest.raises(NotFound):
        keys.revoke("0000000000000000")


def test_the_ring_authenticates_and_refuses(deployment: Deployment) -> None:
    keys = KeyStore(deployment)
    key, token = keys.create("feed", ["feed"], ["eu"])
    ring = KeyRing(deployment)
    p = ring.authenticate(token)
    assert (p.key_id, p.name, p.roles, p.regions) == (key.key_id, "feed", {"feed"}, {"eu"})
    assert not p.all_regions and p.service_roles == {"feed"}
    key_id, secret = split_token(token) or ("", "")
    for bad in (None, "", "nonsense", f"fyp_{key_id}_x{secret}", f"fyp_{'0' * 16}_{secret}"):
        with pytest.raises(Unauthenticated):
            ring.authenticate(bad)
    ring.revoke(key.key_id)  # in-process: at once
    with pytest.raises(Unauthenticated):
        ring.authenticate(token)


def test_another_process_revoking_is_seen_within_the_refresh(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return clock[0]

    monkeypatch.setattr(ring_module, "time", Clock)
    key, token = KeyStore(deployment).create("feed", ["feed"])
    ring = KeyRing(deployment)
    ring.authenticate(token)
    with Deployment.open(deployment.config.root) as other:  # e.g. `fyp keys revoke`
        KeyStore(other).revoke(key.key_id)
    clock[0] += ring_module.REFRESH_S / 2
    ring.authenticate(token)  # cached for now
    clock[0] += ring_module.REFRESH_S
    with pytest.raises(Unauthenticated):
        ring.authenticate(token)


def test_a_key_created_elsewhere_works_at_once(deployment: Deployment) -> None:
    ring = KeyRing(deployment)
    ring.load()
    with Deployment.open(deployment.config.root) as other:
        _, token = KeyStore(other).create("new", ["ingest"])
    assert ring.authenticate(token).name == "new"


def test_a_key_is_valid_only_where_its_region_holds_it(deployment: Deployment) -> None:
    """A carved-out or restored region without the row does not honour the key."""
    from fyp.audit.log import sql_store

    key, token = KeyStore(deployment).create("both", ["admin"])
    sql_store(deployment.store("eu")).execute(
        "DELETE FROM api_keys WHERE key_id = ?", (key.key_id,)
    )
    p = KeyRing(deployment).authenticate(token)
    assert p.regions == {"us"} and not p.all_regions
    # revoked in one region (us) is revoked everywhere: a partial revoke fails closed
    key2, token2 = KeyStore(deployment).create("both2", ["admin"])
    sql_store(deployment.store("us")).execute(
        "UPDATE api_keys SET revoked_at_ms = 1 WHERE key_id = ?", (key2.key_id,)
    )
    with pytest.raises(Unauthenticated):
        KeyRing(deployment).authenticate(token2)


def test_admin_key_file(deployment: Deployment) -> None:
    path, created = ensure_admin_key(deployment)
    assert created and path == deployment.config.root / ADMIN_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "regions" not in path.relative_to(deployment.config.root).parts
    p = KeyRing(deployment).authenticate(path.read_text().strip())
    assert p.roles == {"admin"} and p.all_regions
    assert ensure_admin_key(deployment) == (path, False)
    assert len(KeyStore(deployment).list()) == 1


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    directory = tmp_path / "dep"
    out = runner.invoke(app, ["init", str(directory)])
    assert out.exit_code == 0, out.output
    assert "admin.key" in out.output and (directory / ADMIN_KEY_FILE).is_file()
    create = ["keys", "create", str(directory), "--name", "app", "--role", "feed"]
    created = runner.invoke(app, [*create, "--role", "ingest", "--region", "eu", "--json"])
    assert created.exit_code == 0, created.output
    made = json.loads(created.output)
    assert made["roles"] == ["ingest", "feed"] and made["regions"] == ["eu"]
    assert made["key"].startswith(f"fyp_{made['key_id']}_")
    plain = runner.invoke(app, ["keys", "create", str(directory), "--name", "x", "--role", "feed"])
    assert plain.exit_code == 0 and plain.output.strip().splitlines()[-1].startswith("fyp_")
    assert "note:" not in plain.output
    mixed = runner.invoke(app, [*create, "--role", "auditor"])  # a person's role beside feed
    assert mixed.exit_code == 0 and "note: it holds auditor, a person's role" in mixed.output
    assert mixed.output.strip().splitlines()[-1].startswith("fyp_")
    listed = json.loads(runner.invoke(app, ["keys", "list", str(directory), "--json"]).output)
    assert sorted(k["name"] for k in listed["keys"]) == ["admin", "app", "app", "x"]
    assert all("key" not in k and "secret_sha256" not in k for k in listed["keys"])
    table = runner.invoke(app, ["keys", "list", str(directory)])
    assert made["key_id"] in table.output
    revoked = runner.invoke(app, ["keys", "revoke", str(directory), made["key_id"], "--json"])
    assert revoked.exit_code == 0 and json.loads(revoked.output)["revoked_at_ms"]
    missing = runner.invoke(app, ["keys", "revoke", str(directory), "0" * 16])
    assert missing.exit_code == 2
    bad = runner.invoke(app, ["keys", "create", str(directory), "--name", "y", "--role", "root"])
    assert bad.exit_code == 2
