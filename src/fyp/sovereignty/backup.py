"""Encrypted, checksummed backups of one region, kept only where that region allows:
what a backup is, where it may be, and reading one back (verified, then unpacked).

A backup is a directory ``<target>/<backup id>/`` with ``snapshot.enc`` and
``manifest.json``: region, time of the snapshot, sizes, sha256 of the ciphertext and of
every plaintext part, the store's schema version and last event seq. The manifest is
MAC'd with a sub-key of the region's ``backup`` secret, so it cannot be edited to fit a
changed snapshot, and a backup cannot be passed off as another region's. Written by
:mod:`fyp.sovereignty.backup_writer`; what it carries of the region's directory:
:mod:`fyp.sovereignty.region_data` (never the region's secrets, since a backup must
not carry its own key, nor the erasure ledger, which must never be rolled back,
:mod:`fyp.sovereignty.ledger`).

Targets: ``file://`` URLs from the region's ``backup_targets`` only; a target inside a
region's directory or overlapping another region's targets is refused even when the
config says otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import re
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from fyp.config import DeploymentConfig, backup_target_path, check_backup_targets
from fyp.errors import (
    BackupCorrupt,
    ConfigError,
    InvalidRequest,
    NotFound,
    ResidencyViolation,
)
from fyp.sovereignty.region_data import store_file
from fyp.sovereignty.region_keys import region_secret
from fyp.sovereignty.sealed import OpenReader, derive_key

BACKUP_SECRET = "backup"
MANIFEST_FILE = "manifest.json"
SNAPSHOT_FILE = "snapshot.enc"
STORE_PART = "store.sqlite"
FILES_PREFIX = "files/"
FORMAT = 1


# -- targets -------------------------------------------------------------------------
def _same(a: str, b: str, config: DeploymentConfig) -> bool:
    pa, pb = backup_target_path(config.root, a), backup_target_path(config.root, b)
    return a == b or (pa is not None and pa == pb)


def target_dir(config: DeploymentConfig, region: str, url: str) -> Path:
    """The directory of one of ``region``'s allowed targets, or a refusal.

    Refused: a URL the region's config does not list (403, nothing written), a scheme
    this version cannot write, a directory inside any region's directory or store
    directory, and targets shared with another region (a config error)."""
    cell = config.region(region)
    if not any(_same(url, allowed, config) for allowed in cell.backup_targets):
        raise ResidencyViolation(
            f"backup target {url!r} is not allowed for region {region!r}; "
            f"its config allows {list(cell.backup_targets) or 'none'}",
            region=region,
            target=url,
            allowed=list(cell.backup_targets),
        )
    check_backup_targets(config.root, config.regions)
    path = backup_target_path(config.root, url)
    if path is None:
        raise ConfigError(
            f"backup target {url!r}: unsupported scheme (this version writes file:// only)",
            region=region,
            target=url,
        )
    for name in config.region_names:
        for inside in (config.region_dir(name).resolve(), _store_dir(config, name)):
            if inside is not None and path.is_relative_to(inside):
                raise ResidencyViolation(
                    f"backup target {url!r} of region {region!r} lies inside the directory "
                    f"of region {name!r} ({inside}): backups need a location of their own",
                    region=region,
                    target=url,
                )
    return path


def _store_dir(config: DeploymentConfig, region: str) -> Path | None:
    try:
        return store_file(config, region).resolve().parent
    except ConfigError:
        return None


def allowed_target_dirs(config: DeploymentConfig, region: str) -> list[tuple[str, Path]]:
    return [(u, target_dir(config, region, u)) for u in config.region(region).backup_targets]


# -- manifest ------------------------------------------------------------------------
def manifest_mac(key: bytes, body: dict[str, Any]) -> str:
    text = json.dumps({k: v for k, v in body.items() if k != "mac"}, sort_keys=True)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def backup_keys(config: DeploymentConfig, region: str, create: bool = False) -> tuple[bytes, bytes]:
    """(encryption key, manifest MAC key) of the region, from its ``backup`` secret."""
    secret = region_secret(config, region, BACKUP_SECRET, create=create)
    return derive_key(secret, "backup/seal"), derive_key(secret, "backup/manifest")


def seal_context(backup_id: str, region: str) -> bytes:
    return f"fyp-backup\0{region}\0{backup_id}\0".encode()


@dataclass(frozen=True)
class Backup:
    """A backup found at a target: where it is and its (not yet verified) manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def backup_id(self) -> str:
        return str(self.manifest["backup_id"])

    @property
    def created_at_ms(self) -> int:
        return int(self.manifest["created_at_ms"])


def read_backup(path: Path) -> Backup:
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupCorrupt(f"cannot read backup manifest in {path}: {exc}") from exc
    if not isinstance(manifest, dict) or "backup_id" not in manifest:
        raise BackupCorrupt(f"{path / MANIFEST_FILE} is not a backup manifest")
    # read to sort backups before any MAC check (Listing.of_region): a damaged one is
    # listed as such, not a traceback of every listing and restore
    stamp = manifest.get("created_at_ms")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        raise BackupCorrupt(
            f"{path / MANIFEST_FILE} has no created_at_ms whole number (edited?)",
            backup_id=path.name,
        )
    return Backup(path, manifest)


@dataclass(frozen=True)
class Damaged:
    """A directory of a backup target that is not a readable backup (no manifest, or
    one that does not parse): listed and reported, never chosen, never pruned."""

    path: Path
    reason: str

    @property
    def backup_id(self) -> str:
        return self.path.name

    def to_dict(self) -> dict[str, str]:
        return {"backup_id": self.backup_id, "path": str(self.path), "reason": self.reason}


@dataclass
class Listing:
    """What one or more target directories hold: readable backups, oldest first, and
    damaged ones (which a listing must show: one may be the newest)."""

    backups: list[Backup] = field(default_factory=list)
    damaged: list[Damaged] = field(default_factory=list)

    def of_region(self, config: DeploymentConfig, region: str, verify: bool = False) -> Listing:
        """Backups of ``region`` whose manifest its MAC key authenticates and whose
        ciphertext has the size it names (``verify``: and its sha256, reading it whole);
        any other is damaged. A manifest's fields are not trusted before that: an edited
        ``created_at_ms`` or ``region`` made "latest" quietly pick an older backup, and a
        cut or overwritten ``snapshot.enc`` was listed as fine (only a restore read it)."""
        _, mac_key = backup_keys(config, region)
        mine: list[Backup] = []
        damaged = list(self.damaged)
        for b in self.backups:
            if not hmac.compare_digest(
                str(b.manifest.get("mac", "")), manifest_mac(mac_key, b.manifest)
            ):
                damaged.append(Damaged(b.path, "its manifest fails its MAC check (edited?)"))
            elif b.manifest.get("region") == region:
                problem = _ciphertext_problem(config, region, b, verify)
                if problem is None:
                    mine.append(b)
                else:
                    damaged.append(Damaged(b.path, problem))
        return Listing(mine, damaged)

    def newer_damaged(self, region: str) -> list[Damaged]:
        """Damaged backups that may be newer than the newest readable one: named as a
        later backup of ``region``, or named so that it cannot be told."""
        newest = self.backups[-1].backup_id if self.backups else None
        return [
            d
            for d in self.damaged
            if BACKUP_ID.fullmatch(d.backup_id) is None
            or (d.backup_id.startswith(f"{region}-") and (newest is None or d.backup_id > newest))
        ]


def _ciphertext_problem(
    config: DeploymentConfig, region: str, backup: Backup, verify: bool
) -> str | None:
    if verify:
        try:
            verify_backup(config, region, backup)
        except BackupCorrupt as exc:
            return exc.message
        return None
    try:
        size = (backup.path / SNAPSHOT_FILE).stat().st_size
        want = int(backup.manifest["ciphertext"]["size"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        return f"its {SNAPSHOT_FILE} cannot be checked: {exc}"
    if size != want:
        return f"its {SNAPSHOT_FILE} is {size:,} bytes, its manifest says {want:,} (cut short?)"
    return None


BACKUP_ID = re.compile(r"[a-z][a-z0-9_]*-\d{8}T\d{9}Z-[0-9a-f]{6}")
"""How :func:`new_backup_id` names a backup: ids of one region sort by time."""


def list_backups(*directories: Path) -> Listing:
    """Backups in target directories, oldest first, and the damaged directories there."""
    out = Listing()
    for directory in directories:
        if not directory.is_dir():
            continue
        for child in sorted(directory.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            try:
                out.backups.append(read_backup(child))
            except BackupCorrupt as exc:
                out.damaged.append(Damaged(child, exc.message))
    out.backups.sort(key=lambda b: (b.created_at_ms, b.backup_id))
    return out


# -- reading -------------------------------------------------------------------------
def verify_backup(config: DeploymentConfig, region: str, backup: Backup) -> dict[str, Any]:
    """Check the manifest's MAC and region and the ciphertext's size and sha256.

    Cheap enough to run before anything is touched; the seal and each part's
    checksum are checked again while unpacking (:func:`unpack_backup`)."""
    m = backup.manifest
    _, mac_key = backup_keys(config, region)
    if not hmac.compare_digest(str(m.get("mac", "")), manifest_mac(mac_key, m)):
        raise BackupCorrupt(
            f"backup {backup.backup_id}: manifest MAC does not match: edited, or not a "
            f"backup of region {region!r} made with its key",
            backup_id=backup.backup_id,
        )
    if m.get("region") != region or m.get("format") != FORMAT:
        raise BackupCorrupt(
            f"backup {backup.backup_id} is not a format-{FORMAT} backup of {region!r}"
        )
    path = backup.path / SNAPSHOT_FILE
    h = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
                size += len(block)
    except OSError as exc:
        raise BackupCorrupt(f"backup {backup.backup_id}: cannot read {path}: {exc}") from exc
    want = m["ciphertext"]
    if size != want["size"] or h.hexdigest() != want["sha256"]:
        raise BackupCorrupt(
            f"backup {backup.backup_id}: checksum mismatch in {SNAPSHOT_FILE} "
            f"(sha256 {h.hexdigest()[:16]}…, size {size:,}; manifest says "
            f"{want['sha256'][:16]}…, {want['size']:,})",
            backup_id=backup.backup_id,
        )
    return m


def unpack_backup(config: DeploymentConfig, region: str, backup: Backup, dest: Path) -> None:
    """Verify, decrypt and unpack a backup into ``dest`` (store.sqlite + files/...).

    Every part's size and sha256 are checked against the manifest; on any failure
    ``dest`` is removed and :class:`BackupCorrupt` raised."""
    verify_backup(config, region, backup)
    seal_key, _ = backup_keys(config, region)
    expected = {p["path"]: p for p in backup.manifest["parts"]}
    seen: set[str] = set()
    dest.mkdir(parents=True, exist_ok=False)
    try:
        with (backup.path / SNAPSHOT_FILE).open("rb") as f:
            reader = OpenReader(f, seal_key, seal_context(backup.backup_id, region))
            packed = gzip.GzipFile(fileobj=cast(IO[bytes], reader), mode="rb")
            with tarfile.open(fileobj=packed, mode="r|") as tar:
                for info in tar:
                    part = expected.get(info.name)
                    if part is None or not info.isfile() or info.name in seen:
                        raise BackupCorrupt(
                            f"backup {backup.backup_id}: unexpected entry {info.name!r}"
                        )
                    target = (dest / info.name).resolve()
                    if not target.is_relative_to(dest.resolve()):
                        raise BackupCorrupt(
                            f"backup {backup.backup_id}: entry escapes: {info.name!r}"
                        )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(info)
                    assert src is not None
                    h = hashlib.sha256()
                    with target.open("wb") as out:
                        while block := src.read(1 << 20):
                            h.update(block)
                            out.write(block)
                    if info.size != part["size"] or h.hexdigest() != part["sha256"]:
                        raise BackupCorrupt(
                            f"backup {backup.backup_id}: checksum mismatch in {info.name}"
                        )
                    seen.add(info.name)
            packed.read()  # the rest of the gzip stream (its CRC is checked at its end)
            reader.read()  # the seal's final chunk must be there
        if seen != set(expected):
            raise BackupCorrupt(
                f"backup {backup.backup_id}: parts missing: {sorted(set(expected) - seen)[:5]}"
            )
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise BackupCorrupt(f"backup {backup.backup_id}: cannot unpack: {exc}") from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def find_backup(
    config: DeploymentConfig, region: str, backup_id: str = "latest", source: str | None = None
) -> Backup:
    """A backup of ``region`` by id (or the latest) in ``source`` or its allowed targets.
    ``source`` must be one of the region's allowed targets, as for writing: a region's
    data is read back only from where its policy lets it be (copy a backup kept
    elsewhere into a target first). A damaged backup is never passed over: "latest"
    is refused while one may be newer than the newest readable backup."""
    dirs: list[Path]
    if source is not None:
        if backup_target_path(config.root, source) is None:
            raise InvalidRequest(f"unsupported backup location {source!r} (use file://)")
        dirs = [target_dir(config, region, source)]
    else:
        dirs = [p for _, p in allowed_target_dirs(config, region)]
    listing = list_backups(*dirs).of_region(config, region)
    found = listing.backups
    if backup_id != "latest":
        found = [b for b in found if b.backup_id == backup_id]
        broken = [d for d in listing.damaged if d.backup_id == backup_id]
    else:
        broken = listing.newer_damaged(region)
    if broken and (backup_id == "latest" or not found):
        bad = broken[-1]
        if backup_id == "latest":
            older = f"{found[-1].backup_id}" if found else "none"
            why = (
                "may be the latest, so 'latest' is not chosen (the newest readable backup "
                f"is {older}: pass --backup ID to restore it)"
            )
        else:
            why = "cannot be restored"
        raise BackupCorrupt(
            f"backup {bad.backup_id} of region {region!r} is damaged ({bad.reason}) and {why}",
            region=region,
            backup_id=bad.backup_id,
            damaged=[d.to_dict() for d in broken],
        )
    if not found:
        where = ", ".join(str(d) for d in dirs) or "no target"
        raise NotFound(f"no backup {backup_id!r} of region {region!r} in {where}", region=region)
    return max(found, key=lambda b: (b.created_at_ms, b.backup_id))


def iter_region_backups(config: DeploymentConfig, region: str) -> Iterator[tuple[str, Path]]:
    """Every backup directory in the region's targets, readable or not (for scans)."""
    for url, directory in allowed_target_dirs(config, region):
        if directory.is_dir():
            for child in sorted(directory.iterdir()):
                if child.is_dir() and not child.name.startswith("."):
                    yield url, child
