from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fyp.config import new_config
from fyp.errors import ConfigError, StorageError
from fyp.sovereignty import ErasureLedger, region_secret, user_pseudonym


def test_ledger_records_pseudonyms_and_finds_them(tmp_path: Path) -> None:
    config = new_config(tmp_path, ["us", "eu"])
    ledger = ErasureLedger(config, "us")
    assert ledger.entries() == []
    entry = ledger.record("alice", "rcpt-1", 1_000)
    ledger.record("bob", "rcpt-2", 2_000)
    assert "alice" not in ledger.path.read_text()
    assert entry.subject == ledger.subject("alice") != ledger.subject("bob")
    assert ledger.find("alice") == entry
    assert ledger.find("carol") is None
    assert ledger.matching(["alice", "carol", "bob"]) == {"alice", "bob"}
    assert [e.receipt_id for e in ledger.erased_since(1_500)] == ["rcpt-2"]
    # each region has its own key, so pseudonyms do not link users across regions
    assert ErasureLedger(config, "eu").subject("alice") != entry.subject


def test_region_secret_is_private_stable_and_env_overridable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = new_config(tmp_path, ["us"])
    with pytest.raises(ConfigError):
        region_secret(config, "us", "backup", create=False)
    key = region_secret(config, "us", "backup")
    assert len(key) == 32 and region_secret(config, "us", "backup") == key
    path = config.region_dir("us") / "secrets" / "backup.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    monkeypatch.setenv("FYP_SECRET_US_BACKUP", "ab" * 32)
    assert region_secret(config, "us", "backup") == bytes.fromhex("ab" * 32)
    monkeypatch.setenv("FYP_SECRET_US_BACKUP", "zz")
    with pytest.raises(ConfigError):
        region_secret(config, "us", "backup")


def test_damaged_ledger_is_a_clear_error(tmp_path: Path) -> None:
    config = new_config(tmp_path, ["us"])
    ledger = ErasureLedger(config, "us")
    ledger.record("alice", "r", 1)
    with ledger.path.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(StorageError, match="damaged"):
        ledger.entries()


def test_pseudonym_matches_ledger_subject(tmp_path: Path) -> None:
    config = new_config(tmp_path, ["us"])
    assert user_pseudonym(config, "us", "alice") == ErasureLedger(config, "us").subject("alice")


_MAKE_SECRET = """
import sys
from pathlib import Path
from fyp.config import load_config
from fyp.sovereignty.region_keys import region_secret
config, go = load_config(Path(sys.argv[1])), Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    pass
print(region_secret(config, "us", "ledger").hex())
"""


def test_processes_making_a_region_secret_at_once_all_get_the_same_one(tmp_path: Path) -> None:
    """Serving hosts share the region's directory and make its secrets on first use: the
    first two operator reads on two hosts at once made one fail (the key file existed
    by then) or read a key half written."""
    import subprocess
    import sys

    from fyp.config import write_config

    write_config(new_config(tmp_path, ["us"]))
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _MAKE_SECRET, str(tmp_path), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    go.touch()  # all at once
    outputs = [child.communicate(timeout=30) for child in children]
    assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
    keys = {out.strip() for out, _ in outputs}
    assert keys == {region_secret(new_config(tmp_path, ["us"]), "us", "ledger").hex()}
    assert [p.name for p in (tmp_path / "regions" / "us" / "secrets").iterdir()] == ["ledger.key"]
