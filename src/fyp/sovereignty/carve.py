"""Carve a region out of a deployment as a standalone deployment of its own.

A region is a cell: everything it needs is its store (users, events, catalogue,
moderation, audit log, API keys), its directory (model artifacts, data-set files,
secrets, erasure ledger) and its block of ``fyp.toml``. ``carve_out`` copies exactly
those — the store as a consistent snapshot, so the source may keep serving — into a
new directory whose config declares that region alone. Nothing of any other region is
read or copied, so the result starts and serves with every other region's files
absent, and ``fyp residency check`` on it runs region-local.

The new directory is built next to its final place and renamed into it at the end, so
a failed carve leaves nothing that looks like a deployment.

The carved store is a SQLite file (``regions/<r>/store.sqlite``, or the source's own
relative SQLite URL) whatever keeps the source region's store: a cell that runs on its
own anywhere. ``store`` names another place for it instead, such as a schema on the
carved cell's own PostgreSQL server; the snapshot is loaded there in one transaction,
into a store that must not exist yet or be empty.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fyp.config import (
    CONFIG_FILE,
    DeploymentConfig,
    RegionConfig,
    backup_target_path,
    load_config,
    write_config,
)
from fyp.errors import AlreadyExists, InvalidRequest
from fyp.sovereignty.region_data import (
    live_store_files,
    open_server_store,
    server_url,
    snapshot_region,
    store_file,
)
from fyp.sovereignty.region_keys import secrets_dir
from fyp.sovereignty.served_data import carve_into
from fyp.sovereignty.staging import refuse_while_restoring
from fyp.storage.postgres_dialect import redact


@dataclass
class CarveReport:
    region: str
    source: str
    out: str
    users: int = 0
    events: int = 0
    videos: int = 0
    files: int = 0
    backups: int = 0
    audit_entries: int = 0
    audit_ok: bool = False
    revoked_keys: int = 0  # keys that also reached other regions, revoked in the copy
    foreign_records: int = 0  # what `fyp residency check` of the copy finds (0: nothing)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _relative_store(config: DeploymentConfig, region: str) -> str:
    """The carved store URL: the same relative URL, or the default one if it was absolute."""
    url = config.region(region).store
    rest = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
    if rest and not rest.startswith("/") and not rest.startswith(".."):
        return url
    return f"sqlite:///regions/{region}/store.sqlite"


class Carver:
    """Copies one region of ``config`` into a new standalone deployment at ``out``."""

    def __init__(
        self, config: DeploymentConfig, region: str, out: Path, store: str | None = None
    ) -> None:
        """``store``: the carved region's store URL (``{region}`` may stand for its name;
        default: a SQLite file in the carved directory)."""
        self.config = config
        self.region = config.region(region).name
        self.out = out.resolve()
        self.store = None if store is None else store.replace("{region}", self.region)

    def check_out(self) -> None:
        root = self.config.root.resolve()
        if self.out.exists() and any(self.out.iterdir()):
            raise AlreadyExists(f"{self.out} exists and is not empty", path=str(self.out))
        if self.out.is_relative_to(root) or root.is_relative_to(self.out):
            raise InvalidRequest(
                f"{self.out} overlaps the source deployment {root}: carve out to a "
                "directory outside it",
                path=str(self.out),
            )

    def new_config(self, root: Path) -> DeploymentConfig:
        cell = self.config.region(self.region)
        region = RegionConfig(
            name=self.region,
            store=self.store or _relative_store(self.config, self.region),
            backup_targets=cell.backup_targets,
            policy=cell.policy,
        )
        return dataclasses.replace(
            self.config,
            root=root,
            name=f"{self.config.name}-{self.region}",
            regions={self.region: region},
        )

    def run(self, with_backups: bool = True) -> CarveReport:
        started = time.perf_counter()
        self.check_out()
        self._check_target_store()
        refuse_while_restoring(self.config.region_dir(self.region), self.region, "carved out")
        report = CarveReport(self.region, str(self.config.root), str(self.out))
        tmp = self.out.with_name(f".{self.out.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
        except OSError as exc:  # a parent that is a file, or not writable: the path given
            raise InvalidRequest(
                f"cannot create {self.out}: {exc.strerror or exc}", path=str(self.out)
            ) from exc
        try:
            carved = self.new_config(tmp)
            write_config(carved)
            target = server_url(carved, self.region)
            if target is None:
                file = store_file(carved, self.region)
                snapshot_region(self.config, self.region, file)
                report.notes += carve_into(self.config, self.region, f"sqlite:///{file}")
            report.files = self._copy_region_dir(carved)
            if with_backups:
                report.backups = self._copy_backups(carved, report.notes)
            if target is not None:
                report.notes += self._load_into_server(carved)
            if self.out.exists():
                self.out.rmdir()  # empty, checked above
            os.replace(tmp, self.out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._check(report)
        self._scan(report, with_backups)
        if any(k.startswith(f"FYP_SECRET_{self.region.upper()}_") for k in os.environ):
            report.notes.append(
                f"some secrets of {self.region} come from FYP_SECRET_{self.region.upper()}_* "
                "environment variables: the carved deployment needs them too"
            )
        report.notes.append(
            "API keys of this region alone travel in its store and still work; keys that "
            f"also reached other regions ({report.revoked_keys}, the deployment's admin.key "
            f"among them) are revoked in the copy: make an admin key with `fyp keys create "
            f"{self.out} --name admin --role admin`"
        )
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _copy_region_dir(self, carved: DeploymentConfig) -> int:
        """Everything in the region's directory but the live store files and temporaries."""
        src = self.config.region_dir(self.region)
        dest = carved.region_dir(self.region)
        live = live_store_files(self.config, self.region)
        copied = 0
        for dirpath, dirs, files in os.walk(src):
            here = Path(dirpath)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            target = dest / here.relative_to(src)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copystat(here, target)
            for name in sorted(files):
                path = here / name
                if name.startswith(".") or path.resolve() in live or path.is_symlink():
                    continue
                shutil.copy2(path, target / name)
                copied += 1
        keys = secrets_dir(carved, self.region)
        if keys.is_dir():
            os.chmod(keys, 0o700)
        return copied

    def _check_target_store(self) -> None:
        """A store named for the carved region must be new. A server's may be empty (a
        carve that failed after making it is run again), or hold what the same carve
        (same deployment, same target directory, where no deployment is yet) loaded
        before it failed: the load replaces every row, in one transaction."""
        if self.store is None:
            return
        url = self.store
        if url.startswith("sqlite:"):  # (a relative path is inside the new directory)
            path = Path(url[len("sqlite:///") :].partition("?")[0])
            if path.is_absolute() and path.exists():
                raise AlreadyExists(f"{path} exists: carve out to a new store", path=str(path))
            return
        from fyp.audit.log import sql_store
        from fyp.storage import open_store
        from fyp.storage.postgres_snapshot import OWN_TABLES

        store = open_store(url, self.region, create=True)
        try:
            sql = sql_store(store)
            tables = [t for t in sql.table_names() if t not in OWN_TABLES]
            held = any(sql.query(f'SELECT 1 FROM "{t}" LIMIT 1') for t in tables)
            if held and not self._failed_carve(store):
                raise AlreadyExists(
                    f"the store at {redact(url)} already holds data: carve out to a new store",
                    store=redact(url),
                )
        finally:
            store.close()

    def _load_label(self) -> str:
        return f"carve-out of {self.config.name} to {self.out.resolve()}"

    def _failed_carve(self, store: Any) -> bool:
        """The store holds what this carve (this deployment, this target directory)
        loaded on an earlier run that failed before the directory was put in place (a
        finished carve marks its store done: ``_check``)."""
        loaded_by = getattr(store, "restored_by", None)
        return (
            loaded_by is not None
            and loaded_by() == self._load_label()
            and not (self.out / CONFIG_FILE).exists()
        )

    def _load_into_server(self, carved: DeploymentConfig) -> list[str]:
        """The region's snapshot, with its served log if that is on Redis, loaded into
        the carved store on its server in one transaction: whatever fails before leaves
        that store empty, so the carve-out can be run again. Returns the notes."""
        snapshot = carved.region_dir(self.region) / ".carve-snapshot.sqlite"
        try:
            snapshot_region(self.config, self.region, snapshot)
            notes = carve_into(self.config, self.region, f"sqlite:///{snapshot}")
            store = open_server_store(carved, self.region, create=True)
            try:
                store.import_sqlite(snapshot, self._load_label())
            finally:
                store.close()
        finally:
            for path in snapshot.parent.glob(f"{snapshot.name}*"):
                path.unlink()
        return notes

    def _copy_backups(self, carved: DeploymentConfig, notes: list[str]) -> int:
        """Backups in targets under the source deployment travel along (they stay sealed)."""
        count = 0
        root = self.config.root.resolve()
        for url in self.config.region(self.region).backup_targets:
            src = backup_target_path(root, url)
            if src is None or not src.is_dir():
                continue
            if not src.is_relative_to(root):
                notes.append(f"backups at {url} are outside the deployment: left where they are")
                continue
            dest = backup_target_path(carved.root, url)
            assert dest is not None
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*"))
            count += sum(1 for p in dest.iterdir() if p.is_dir())
        return count

    def _check(self, report: CarveReport) -> None:
        """Open the carved deployment on its own and read what it holds."""
        from fyp.access.keys import KeyStore
        from fyp.audit.log import AuditLog, sql_store
        from fyp.regions.deployment import Deployment
        from fyp.storage.postgres_snapshot import RESTORED_KEY

        with Deployment.open(self.out) as d:
            store = d.store(self.region)
            keys = KeyStore(d)
            # a key that reached other regions belongs to the whole deployment's operators,
            # not to the carved cell's (revoked through the region's revocation ledger too,
            # so a restore of an older backup in the copy does not bring it back)
            wider = [
                k.key_id
                for k in keys.rows(self.region)
                if not k.revoked and set(k.regions) != {self.region}
            ]
            for key_id in wider:
                keys.revoke(key_id)
            report.revoked_keys = len(wider)
            log = AuditLog(store)
            log.append(
                "fyp region export",
                "carve_out",
                self.region,
                {"from": self.config.name, "revoked_keys": wider},
            )
            if getattr(store, "restored_by", None) is not None:
                # the carve is done: a rerun to the same directory, after the cell was
                # moved elsewhere to run, must not reload (replace) the store it runs on
                sql_store(store).execute(
                    "UPDATE store_meta SET value = ? WHERE key = ?",
                    (f"{self._load_label()}: done", RESTORED_KEY),
                )
            verified = log.verify()
            report.users = store.count_users()
            report.events = store.count_events()
            report.videos = store.count_videos()
            report.audit_entries = verified.entries
            report.audit_ok = verified.ok

    def _scan(self, report: CarveReport, with_backups: bool) -> None:
        """The residency scan of the copy: it reads every file the carve copied from the
        region's directory, so another region's data left there (a store copied in by
        hand) is not carried into the cell unsaid."""
        from fyp.sovereignty.residency import ResidencyScanner

        found = ResidencyScanner(self.out, scan_backups=with_backups).run()
        report.foreign_records = sum(f.records for f in found.findings)
        if found.findings:
            kinds = sorted({f.kind for f in found.findings})
            report.notes.insert(
                0,
                f"the carved copy holds {report.foreign_records:,} record(s) of users not "
                f"homed in {self.region} ({', '.join(kinds)}), copied from the source's "
                f"regions/{self.region}/: see `fyp residency check {self.out}` (and of the "
                "source)",
            )


def carve_out(
    source: Path, region: str, out: Path, with_backups: bool = True, store: str | None = None
) -> CarveReport:
    """Carve ``region`` of the deployment at ``source`` out to ``out`` (its store at
    ``store``, by default a SQLite file there)."""
    if (out / CONFIG_FILE).exists():
        raise AlreadyExists(f"{out} already holds a deployment", path=str(out))
    return Carver(load_config(source), region, out, store).run(with_backups)
