"""Per-region secret keys (backup encryption, erasure-ledger pseudonyms).

A region's secrets live in ``regions/<region>/secrets/<name>.key`` (32 random bytes,
mode 0600), inside the region's own directory, so carving a region out takes its keys
with it and no other region ever holds them. An operator who keeps keys in a KMS sets
``FYP_SECRET_<REGION>_<NAME>`` (hex) instead; the environment wins over the file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fyp.config import DeploymentConfig
from fyp.errors import ConfigError

KEY_BYTES = 32


def secrets_dir(config: DeploymentConfig, region: str) -> Path:
    return config.region_dir(region) / "secrets"


def _env_name(region: str, name: str) -> str:
    return f"FYP_SECRET_{region.upper()}_{name.upper()}"


def region_secret(config: DeploymentConfig, region: str, name: str, create: bool = True) -> bytes:
    """The region's secret called ``name``; created on first use unless ``create`` is false."""
    if not name.isidentifier():
        raise ConfigError(f"invalid secret name {name!r}")
    from_env = os.environ.get(_env_name(region, name))
    if from_env:
        try:
            key = bytes.fromhex(from_env)
        except ValueError:
            raise ConfigError(f"{_env_name(region, name)} is not hex") from None
        if len(key) != KEY_BYTES:
            raise ConfigError(f"{_env_name(region, name)} must be {KEY_BYTES} bytes")
        return key
    path = secrets_dir(config, region) / f"{name}.key"
    if path.is_file():
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise ConfigError(f"{path} is damaged: expected {KEY_BYTES} bytes, got {len(key)}")
        return key
    if not create:
        raise ConfigError(f"region {region!r} has no secret {name!r} ({path})", region=region)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    key = secrets.token_bytes(KEY_BYTES)
    # written aside, then linked into place: the name appears with the whole key or not
    # at all, and of processes (serving hosts) making it at the same moment one wins and
    # the others read its key (a link is atomic on NFS too)
    draft = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(draft, path)
    except FileExistsError:
        return region_secret(config, region, name, create=False)
    finally:
        draft.unlink()
    return key
