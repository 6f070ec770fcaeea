"""Writing a region's backups: snapshot, pack, seal, verify, and prune old ones.

``BackupWriter.run`` takes a consistent snapshot of the region's store as a SQLite store
file (:func:`fyp.sovereignty.region_data.snapshot_region`: SQLite's online backup API,
or for a store on PostgreSQL a copy of its tables in one REPEATABLE READ transaction;
either is one read transaction, so a server may keep writing), packs it with
the region's other data files (model artifacts, data-set files,
:func:`fyp.sovereignty.region_data.region_data_files`) into a gzip'd tar, and seals
the stream with the region's ``backup`` secret (:mod:`fyp.sovereignty.sealed`) straight
into the target: plaintext exists only inside the region's own directory. A copy to a
further target is verified as a restore would (:func:`fyp.sovereignty.backup.verify_backup`)
before it takes its name. What a backup is, and reading one back:
:mod:`fyp.sovereignty.backup`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import tarfile
import time
from pathlib import Path
from typing import IO, Any, cast

from fyp.config import DeploymentConfig
from fyp.durable import fsync_path, write_durable
from fyp.errors import BackupCorrupt, InvalidRequest, StorageError
from fyp.models.artifacts import CURRENT, models_dir
from fyp.sovereignty.backup import (
    FILES_PREFIX,
    FORMAT,
    MANIFEST_FILE,
    SNAPSHOT_FILE,
    STORE_PART,
    Backup,
    Damaged,
    allowed_target_dirs,
    backup_keys,
    list_backups,
    manifest_mac,
    read_backup,
    seal_context,
    target_dir,
    verify_backup,
)
from fyp.sovereignty.region_data import (
    region_data_files,
    snapshot_region,
    store_backend,
    store_facts,
)
from fyp.sovereignty.sealed import SealWriter
from fyp.sovereignty.staging import Staging, is_live, refuse_while_restoring, remove_stale

STAGING = ".backup-"  # + backup id, in the region's directory: the store's snapshot
PARTIAL = ".partial"  # .<backup id>.partial in a target: being written
DELETING = ".deleting"  # .<backup id>.deleting in a target: being pruned
COMPRESSLEVEL = 1  # the store compresses ~3x even at level 1; higher levels cost seconds


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
        for url, directory in targets:
            remove_stale_partials(region_dir, directory)
            self._make_target(url, directory)  # before the snapshot: it takes a while
        backup_id = new_backup_id(self.region)
        seal_key, mac_key = backup_keys(self.config, self.region, create=True)
        first_dir = targets[0][1]
        partial = first_dir / f".{backup_id}{PARTIAL}"
        # the lock on the staging directory also marks this run's .partial dirs as live
        with Staging(region_dir / f"{STAGING}{backup_id}") as staging:
            try:
                snap = staging.path / STORE_PART
                created_at_ms = time.time_ns() // 1_000_000
                snapshot_region(self.config, self.region, snap)
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
                    "store_backend": store_backend(self.config, self.region),
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
                manifest["mac"] = manifest_mac(mac_key, manifest)
                write_durable(partial / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
                fsync_path(partial)
                os.replace(partial, first_dir / backup_id)
                fsync_path(first_dir)  # the backup's name too is on disk before it is reported
                for _, other in targets[1:]:
                    self._copy(first_dir / backup_id, other / backup_id)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        return read_backup(first_dir / backup_id)

    def prune(self, keep: int, to: str | None = None) -> tuple[list[str], list[Damaged]]:
        """Delete all but the newest ``keep`` backups of this region at its targets: an
        erased user lingers in older backups until they go (restores re-erase them).

        Damaged backups are neither counted nor deleted, but returned: one may be the
        newest, and what it is can only be told by a person. Nor is the newest backup
        whose ciphertext verifies (:func:`fyp.sovereignty.backup.verify_backup`) ever
        deleted: the kept ones are checked newest first until one does, and if none
        does, the newest older one that does stays too (with the kept one that failed
        reported damaged), so a target never loses its last restorable backup."""
        if keep < 1:
            raise InvalidRequest("--keep must be at least 1: a backup run keeps its backup")
        removed: list[str] = []
        damaged: list[Damaged] = []
        for _, directory in self.targets(to):
            listing = list_backups(directory).of_region(self.config, self.region)
            damaged += listing.damaged
            doomed = listing.backups[:-keep]
            kept_bad: list[Damaged] = []
            good = self._newest_good(listing.backups[-keep:], kept_bad)
            damaged += kept_bad
            if good is None:
                spared = self._newest_good(doomed, [])
                doomed = [b for b in doomed if b is not spared]
            for old in doomed:
                gone = old.path.with_name(f".{old.path.name}{DELETING}")
                os.replace(old.path, gone)  # gone at once, then removed
                _remove(gone)
                removed.append(old.backup_id)
        return removed, damaged

    def _newest_good(self, backups: list[Backup], bad: list[Damaged]) -> Backup | None:
        """The newest of ``backups`` that verifies; those newer that do not go in ``bad``."""
        for backup in reversed(backups):
            try:
                verify_backup(self.config, self.region, backup)
            except BackupCorrupt as exc:
                bad.append(Damaged(backup.path, exc.message))
                continue
            return backup
        return None

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
            sealed = SealWriter(f, key, seal_context(backup_id, self.region))
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

    def _make_target(self, url: str, directory: Path) -> None:
        """The target's directory, made if it is missing: one that cannot be (a volume
        not mounted, a path under a file, no permission) is a one-line error."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"backup target {url!r} of region {self.region!r} cannot be made at "
                f"{directory}: {exc.strerror or exc} (a volume not mounted?)",
                region=self.region,
                target=url,
            ) from exc

    def _copy(self, src: Path, dest: Path) -> None:
        """A copy to a further target, on disk and verified before it takes its name."""
        tmp = dest.with_name(f".{dest.name}{PARTIAL}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        for path in tmp.iterdir():
            fsync_path(path)
        fsync_path(tmp)
        verify_backup(self.config, self.region, read_backup(tmp))
        os.replace(tmp, dest)
        fsync_path(dest.parent)


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
