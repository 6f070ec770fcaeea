"""Encrypted, checksummed backups of one region, written only where that region allows.

``create_backup`` takes a consistent snapshot of the region's store with SQLite's
online backup API (one read transaction, so a server may keep writing), packs it with
the region's other data files (model artifacts, data-set files) into a gzip'd tar, and
seals the stream with the region's ``backup`` secret (:mod:`fyp.sovereignty.sealed`)
straight into the target: plaintext exists only inside the region's own directory.

Not in a backup: the region's secrets (a backup must not carry its own key) and the
erasure ledger (it must never be rolled back, :mod:`fyp.sovereignty.ledger`).

A backup is a directory ``<target>/<backup id>/`` with ``snapshot.enc`` and
``manifest.json``: region, time of the snapshot, sizes, sha256 of the ciphertext and of
every plaintext part, the store's schema version and last event seq. The manifest is
MAC'd with a sub-key of the same secret, so it cannot be edited to fit a changed
snapshot, and a backup cannot be passed off as another region's.

Targets: ``file://`` URLs from the region's ``backup_targets`` only; a target inside a
region's directory or overlapping another region's targets is refused even when the
config says otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import sqlite3
import tarfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from fyp.access.keys import REVOCATIONS_FILE
from fyp.config import DeploymentConfig, backup_target_path, check_backup_targets
from fyp.errors import ConfigError, InvalidRequest, NotFound, ResidencyViolation, StorageError
from fyp.models.artifacts import CURRENT, models_dir
from fyp.sovereignty.ledger import LEDGER_FILE
from fyp.sovereignty.region_keys import region_secret
from fyp.sovereignty.sealed import OpenReader, SealBroken, SealWriter, derive_key
from fyp.sovereignty.staging import Staging, is_live, refuse_while_restoring, remove_stale

BACKUP_SECRET = "backup"
MANIFEST_FILE = "manifest.json"
SNAPSHOT_FILE = "snapshot.enc"
STORE_PART = "store.sqlite"
FILES_PREFIX = "files/"
FORMAT = 1
STAGING = ".backup-"  # + backup id, in the region's directory: the store's snapshot
PARTIAL = ".partial"  # .<backup id>.partial in a target: being written
DELETING = ".deleting"  # .<backup id>.deleting in a target: being pruned
COMPRESSLEVEL = 1  # the store compresses ~3x even at level 1; higher levels cost seconds
NOT_BACKED_UP = {"secrets", LEDGER_FILE, REVOCATIONS_FILE}
"""Entries of a region directory a backup leaves out (besides the live store files)."""


class BackupCorrupt(SealBroken):
    """A backup whose checksums, MAC or seal do not hold: nothing is restored from it."""


# -- where things are ----------------------------------------------------------------
def store_file(config: DeploymentConfig, region: str) -> Path:
    """The SQLite file of a region's store (backups and carve-outs copy SQLite stores)."""
    url = config.resolve_url(config.region(region).store)
    if not url.startswith("sqlite:///"):
        raise ConfigError(f"region {region!r}: only SQLite stores can be backed up ({url})")
    path = url[len("sqlite:///") :].partition("?")[0]
    if not path or path == ":memory:":
        raise ConfigError(f"region {region!r}: an in-memory store cannot be backed up")
    return Path(path)


def store_companions(path: Path) -> list[Path]:
    """The live store file and SQLite's side files next to it."""
    return [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))]


def region_data_files(config: DeploymentConfig, region: str) -> list[Path]:
    """Files of the region's directory that are region data, relative to it.

    Leaves out the live store files (snapshotted instead), secrets, the erasure ledger
    and dot-entries (temporaries: half-written artifacts, staging directories)."""
    root = config.region_dir(region)
    live = {p.resolve() for p in store_companions(store_file(config, region))}
    out: list[Path] = []
    if not root.is_dir():
        return out
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and not (here == root and d in NOT_BACKED_UP)
        )
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or (here == root and name in NOT_BACKED_UP):
                continue
            if path.resolve() in live or path.is_symlink():
                continue
            out.append(path.relative_to(root))
    return out


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (a URI, so any character in the path is quoted)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def snapshot_store(src: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite store, taken in one read transaction.

    In WAL mode the read does not block the server's writers; the copy is what the
    store held at one instant (every transaction committed before it, none after)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_file():
        raise StorageError(f"store {src} does not exist")
    source = read_only(src)
    target = sqlite3.connect(dest)
    try:
        source.execute("PRAGMA busy_timeout=10000")
        source.backup(target)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot snapshot store {src}: {exc}") from exc
    finally:
        target.close()
        source.close()


def store_facts(path: Path) -> dict[str, Any]:
    """What a manifest says about a store snapshot (schema, last event, row counts)."""
    conn = read_only(path)
    try:

        def one(sql: str) -> Any:
            return conn.execute(sql).fetchone()[0]

        return {
            "region": one("SELECT value FROM store_meta WHERE key='region'"),
            "schema_version": int(one("SELECT MAX(version) FROM schema_migrations") or 0),
            "max_event_seq": int(one("SELECT COALESCE(MAX(seq), 0) FROM events")),
            "users": int(one("SELECT COUNT(*) FROM users")),
            "events": int(one("SELECT COUNT(*) FROM events")),
        }
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read store snapshot {path}: {exc}") from exc
    finally:
        conn.close()


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
def _mac(key: bytes, body: dict[str, Any]) -> str:
    text = json.dumps({k: v for k, v in body.items() if k != "mac"}, sort_keys=True)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def backup_keys(config: DeploymentConfig, region: str, create: bool = False) -> tuple[bytes, bytes]:
    """(encryption key, manifest MAC key) of the region, from its ``backup`` secret."""
    secret = region_secret(config, region, BACKUP_SECRET, create=create)
    return derive_key(secret, "backup/seal"), derive_key(secret, "backup/manifest")


def _context(backup_id: str, region: str) -> bytes:
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

    def of_region(self, region: str) -> Listing:
        """Backups of ``region`` only; damaged ones stay (their region cannot be read)."""
        mine = [b for b in self.backups if b.manifest.get("region") == region]
        return Listing(mine, list(self.damaged))

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


# -- writing -------------------------------------------------------------------------
class _Hashing:
    """Reads a file while hashing it, so a part's checksum is of the bytes packed."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data


def new_backup_id(region: str) -> str:
    ns = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns / 1e9)) + f"{ns // 1_000_000 % 1000:03d}Z"
    return f"{region}-{stamp}-{secrets.token_hex(3)}"


class BackupWriter:
    """Writes one backup of one region to its allowed targets."""

    def __init__(self, config: DeploymentConfig, region: str) -> None:
        self.config = config
        self.region = config.region(region).name

    def targets(self, to: str | None) -> list[tuple[str, Path]]:
        if to is not None:
            return [(to, target_dir(self.config, self.region, to))]
        targets = allowed_target_dirs(self.config, self.region)
        if not targets:
            raise InvalidRequest(
                f"region {self.region!r} allows no backup targets: set backup_targets in "
                f"[regions.{self.region}] of fyp.toml",
                region=self.region,
            )
        return targets

    def run(self, to: str | None = None) -> Backup:
        """Snapshot, pack, seal and write; every target gets the same verified bytes.

        First removes what killed runs left: plaintext staging directories in the
        region's directory and half-written backups in the targets."""
        started = time.perf_counter()
        targets = self.targets(to)  # refusals happen before anything is written
        region_dir = self.config.region_dir(self.region)
        refuse_while_restoring(region_dir, self.region, "backed up")
        remove_stale(region_dir)
        for _, directory in targets:
            remove_stale_partials(region_dir, directory)
        backup_id = new_backup_id(self.region)
        seal_key, mac_key = backup_keys(self.config, self.region, create=True)
        first_dir = targets[0][1]
        partial = first_dir / f".{backup_id}{PARTIAL}"
        # the lock on the staging directory also marks this run's .partial dirs as live
        with Staging(region_dir / f"{STAGING}{backup_id}") as staging:
            try:
                snap = staging.path / STORE_PART
                created_at_ms = time.time_ns() // 1_000_000
                snapshot_store(store_file(self.config, self.region), snap)
                facts = store_facts(snap)
                if facts["region"] != self.region:
                    raise StorageError(
                        f"store of region {self.region!r} says it is {facts['region']!r}"
                    )
                partial.mkdir(parents=True)
                parts, sealed = self._pack(snap, partial / SNAPSHOT_FILE, seal_key, backup_id)
                manifest: dict[str, Any] = {
                    "format": FORMAT,
                    "backup_id": backup_id,
                    "region": self.region,
                    "deployment": self.config.name,
                    "created_at_ms": created_at_ms,
                    "created_at": time.strftime(
                        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_at_ms / 1e3)
                    ),
                    "store": facts,
                    "parts": parts,
                    "plaintext_bytes": sum(p["size"] for p in parts),
                    "packed_bytes": sealed.plain_size,
                    "ciphertext": {
                        "file": SNAPSHOT_FILE,
                        "size": sealed.size,
                        "sha256": sealed.sha256,
                    },
                    "packing": f"tar+gzip-{COMPRESSLEVEL}",
                    "cipher": "AES-256-GCM, HKDF-SHA256 sub-key of the region's backup secret",
                    "seconds": round(time.perf_counter() - started, 3),
                }
                manifest["mac"] = _mac(mac_key, manifest)
                _write_durable(partial / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
                os.replace(partial, first_dir / backup_id)
                for _, other in targets[1:]:
                    self._copy(first_dir / backup_id, other / backup_id)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        return read_backup(first_dir / backup_id)

    def prune(self, keep: int, to: str | None = None) -> tuple[list[str], list[Damaged]]:
        """Delete all but the newest ``keep`` backups of this region at its targets: an
        erased user lingers in older backups until they go (restores re-erase them).

        Damaged backups are neither counted nor deleted, but returned: one may be the
        newest, and what it is can only be told by a person."""
        if keep < 1:
            raise InvalidRequest("--keep must be at least 1: a backup run keeps its backup")
        removed: list[str] = []
        damaged: list[Damaged] = []
        for _, directory in self.targets(to):
            listing = list_backups(directory).of_region(self.region)
            damaged += listing.damaged
            for old in listing.backups[:-keep]:
                doomed = old.path.with_name(f".{old.path.name}{DELETING}")
                os.replace(old.path, doomed)  # gone at once, then removed
                _remove(doomed)
                removed.append(old.backup_id)
        return removed, damaged

    def _pack(
        self, snap: Path, out: Path, key: bytes, backup_id: str
    ) -> tuple[list[dict[str, Any]], SealWriter]:
        from fyp.sovereignty.erasure import region_models_lock

        region_dir = self.config.region_dir(self.region)
        # erasures neither rewrite nor delete artifacts while the files are read, and
        # `current` is read before the versions are listed, so it names one of them
        with region_models_lock(region_dir):
            current = models_dir(region_dir) / CURRENT
            pinned = current.read_bytes() if current.is_file() else None
            entries = [(STORE_PART, snap)] + [
                (FILES_PREFIX + rel.as_posix(), region_dir / rel)
                for rel in region_data_files(self.config, self.region)
            ]
            try:
                return self._write(entries, out, key, backup_id, current, pinned)
            except OSError as exc:
                raise StorageError(
                    f"backup of {self.region!r} failed reading its files: {exc}"
                ) from exc

    def _write(
        self,
        entries: list[tuple[str, Path]],
        out: Path,
        key: bytes,
        backup_id: str,
        current: Path,
        pinned: bytes | None,
    ) -> tuple[list[dict[str, Any]], SealWriter]:
        parts: list[dict[str, Any]] = []
        with out.open("wb") as f:
            sealed = SealWriter(f, key, _context(backup_id, self.region))
            with (
                gzip.GzipFile(
                    fileobj=cast(IO[bytes], sealed), mode="wb", compresslevel=COMPRESSLEVEL, mtime=0
                ) as packed,
                tarfile.open(fileobj=packed, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                for name, path in entries:
                    info = tar.gettarinfo(str(path), arcname=name)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if path == current and pinned is not None:
                        info.size = len(pinned)
                        reader = _Hashing(io.BytesIO(pinned))
                        tar.addfile(info, reader)
                    else:
                        with path.open("rb") as src:
                            reader = _Hashing(src)
                            tar.addfile(info, reader)
                    parts.append({"path": name, "size": info.size, "sha256": reader.h.hexdigest()})
            sealed.close()
            f.flush()
            os.fsync(f.fileno())
        return parts, sealed

    def _copy(self, src: Path, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}{PARTIAL}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        verify_backup(self.config, self.region, read_backup(tmp))
        os.replace(tmp, dest)


def remove_stale_partials(region_dir: Path, directory: Path) -> list[Path]:
    """Delete what dead runs left in a target: half-written backups (``.<id>.partial``,
    kept while the backup run of that id holds its staging lock) and backups a prune
    was deleting (``.<id>.deleting``)."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for child in sorted(directory.iterdir()):
        name = child.name
        if not (name.startswith(".") and child.is_dir()):
            continue
        if name.endswith(PARTIAL):
            if is_live(region_dir / f"{STAGING}{name[1 : -len(PARTIAL)]}"):
                continue
        elif not name.endswith(DELETING):
            continue
        _remove(child)
        removed.append(child)
    return removed


def _remove(path: Path) -> None:
    """rmtree that tolerates another cleaner removing the same tree meanwhile."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise StorageError(f"cannot remove {path}")


def _write_durable(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# -- reading -------------------------------------------------------------------------
def verify_backup(config: DeploymentConfig, region: str, backup: Backup) -> dict[str, Any]:
    """Check the manifest's MAC and region and the ciphertext's size and sha256.

    Cheap enough to run before anything is touched; the seal and each part's
    checksum are checked again while unpacking (:func:`unpack_backup`)."""
    m = backup.manifest
    _, mac_key = backup_keys(config, region)
    if not hmac.compare_digest(str(m.get("mac", "")), _mac(mac_key, m)):
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
            reader = OpenReader(f, seal_key, _context(backup.backup_id, region))
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
    listing = list_backups(*dirs).of_region(region)
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
