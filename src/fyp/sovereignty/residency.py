"""The residency scan: every record of a user found outside the user's home region.

For each region R it reads every place R's files can name a user and checks each
name against where users actually live (each region's ``users`` table):

- **store**: every table and every column whose name says it holds a person
  (:data:`USER_COLUMN`: ``user_id``, ``*_user_id``, ...; :data:`PERSON_COLUMN`:
  ``actor``, ``appellant``, ``*_by``, ... which may also name staff), found from the
  schema, so a table a later capability adds is covered without being listed; so are
  the fields of JSON objects kept in other columns, by the same names, at any depth
  (``users.attributes`` holds what the app sends: ``{"invited_by": ...}``); columns
  named ``subject`` are matched against the keyed pseudonyms (``user_pseudonym``) of
  other regions' users, as the audit log names users that way;
- **served log**: when the region keeps it on a Redis server of its own
  (``served_log``), the user every key names (``fyp:served:<region>:{<user>}:…``); a
  server that does not answer is ``unreadable``;
- **artifacts**: every string array of every model version whose name mentions users;
- **backups**: every backup in R's targets, decrypted with R's key and scanned the same
  way (one that does not open with R's key is itself a finding);
- **files**: anything else under ``regions/R/`` (caches, logs, exports, data sets):
  SQLite files as stores, ``.npz``/``.npy`` as artifacts, CSV by a user column, other
  text by ``user_id=…`` / ``"user_id": …`` style pairs; and files of the deployment
  directory that belong to no region at all. Damaged stores a restore moved aside
  (``regions/R/.quarantine/``, :mod:`fyp.sovereignty.quarantine`) are read the same
  way, as source **quarantine**: in their own region they are no residency problem, but
  an erased user or a file that cannot be read there is a finding like anywhere else.

A name homed in another region is **foreign**; a name homed nowhere in a user column is
an **orphan**, and an orphan the erasure ledger recognises is an **erased** remnant.
Erased users inside backups older than their erasure are counted, not findings: a
restore erases them again, and they leave when the backup expires.
Regions whose store is absent (a carved-out deployment) are simply not homes: then
every name not homed in R is an orphan. ``creator_id`` in the public catalogue is the
documented exception: a video published in several regions names its creator.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fyp.audit.log import sql_store
from fyp.catalog.models import ELSEWHERE_NAME, ERASED_NAME
from fyp.config import CONFIG_FILE, DeploymentConfig, backup_target_path, load_config
from fyp.errors import ConfigError, FypError, NotFound, StorageError
from fyp.models.artifacts import ARRAYS, LEFTOVER_FIX, leftovers, list_versions, models_dir
from fyp.sovereignty.backup import (
    STORE_PART,
    Backup,
    allowed_target_dirs,
    iter_region_backups,
    read_backup,
    unpack_backup,
)
from fyp.sovereignty.ledger import ERASURE, LEDGER_FILE, MOVE, ErasureLedger, moved_into
from fyp.sovereignty.move_journal import JOURNAL_DIR, pending_moves
from fyp.sovereignty.quarantine import in_quarantine
from fyp.sovereignty.region_data import read_only, store_companions, store_file
from fyp.sovereignty.residency_readers import (
    Names,
    file_names,
    npz_names,
    server_names,
    sqlite_names,
    store_region,
)
from fyp.sovereignty.served_data import SOURCE as SERVED_SOURCE
from fyp.sovereignty.served_data import open_data, residency_names
from fyp.sovereignty.staging import Staging, is_live
from fyp.storage import Store, open_store
from fyp.storage.postgres_dialect import redact

ERASED_NAMES = {ERASED_NAME, ELSEWHERE_NAME, ""}
SKIPPED_IN_REGION = {LEDGER_FILE}  # pseudonymous by design
SECRETS_DIR = "secrets"  # only its keys (NAME.key) are skipped: anything else is scanned
SCAN_STAGING = ".scan-"
EXCEPTIONS = (  # (column, RegionScan field, what its records are): counted, not findings
    (
        "creator_id",
        "exempt_creators",
        "catalogue records name a creator homed in another region or nowhere (creator_id "
        "of the public catalogue: a video published in several regions names its creator; "
        "documented exception, not a finding)",
    ),
    (
        "backups",
        "erased_in_backups",
        "records of erased users in backups taken before their erasure (a restore erases "
        "them again from the ledger; they leave when the backup expires)",
    ),
    (
        "moved_away",
        "moved_away",
        "records of users who moved their home away from it, in its append-only audit log "
        "(by pseudonym) or in backups taken before the move (a restore removes them again: "
        "the ledger records it)",
    ),
)


@dataclass(frozen=True)
class Finding:
    region: str  # the region whose files hold the record ("-" if none)
    # foreign | orphan | erased | unreadable (a file the scan cannot read) |
    # several_homes (a user in the users table of more than one region) |
    # unreadable_backup | wrong_region_store
    kind: str
    source: str  # store | served_log | artifact | backup | file | quarantine
    location: str
    user_id: str
    home_region: str | None
    records: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RegionScan:
    region: str
    scanned: dict[str, int] = field(
        default_factory=lambda: {
            "store_tables": 0,
            "store_columns": 0,
            "artifacts": 0,
            "backups": 0,
            "files": 0,
        }
    )
    exempt_creators: int = 0
    erased_in_backups: int = 0
    moved_away: int = 0  # pseudonymous audit records and older backups of users who moved


@dataclass
class ResidencyReport:
    deployment: str
    regions: list[RegionScan]
    absent_regions: list[str]
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not self.findings

    def count(self, *kinds: str) -> int:
        return sum(f.records for f in self.findings if f.kind in kinds)

    def to_dict(self) -> dict[str, Any]:
        exceptions = [
            {
                "region": r.region,
                "column": column,
                "records": n,
                "message": f"{r.region}: {n:,} {what}",
            }
            for column, attr, what in EXCEPTIONS
            for r in self.regions
            if (n := getattr(r, attr))
        ]
        return {
            "deployment": self.deployment,
            "ok": self.ok,
            "foreign_records": self.count("foreign"),
            "orphan_records": self.count("orphan", "erased"),
            "erased_remnants": self.count("erased"),
            # unreadable files and backups, a user several stores call their own, a store
            # of another region: each a finding of its own
            "other_findings": sum(
                1 for f in self.findings if f.kind not in {"foreign", "orphan", "erased"}
            ),
            "other_problems": self.count("unreadable_backup", "wrong_region_store"),
            "absent_regions": self.absent_regions,
            "regions": [
                {
                    "region": r.region,
                    "scanned": r.scanned,
                    "exempt_creators": r.exempt_creators,
                    "erased_in_backups": r.erased_in_backups,
                    "moved_away": r.moved_away,
                }
                for r in self.regions
            ],
            "findings": [f.to_dict() for f in self.findings],
            "exceptions": exceptions,
        }


# -- the scanner ---------------------------------------------------------------------
class ResidencyScanner:
    """Scans one deployment directory; works region-local when other stores are absent."""

    def __init__(self, root: Path, scan_backups: bool = True) -> None:
        self.root = Path(root)
        self.scan_backups = scan_backups
        self.config: DeploymentConfig = load_config(self.root)
        self.homes: dict[str, str] = {}
        self.twice: dict[str, list[str]] = {}  # users whom several stores call their own
        self.present: list[str] = []
        self._pseudonyms: dict[str, dict[str, str]] = {}
        self._ledgers: dict[str, ErasureLedger] = {}
        self._servers: dict[str, Store] = {}  # stores on database servers, opened by run

    def run(self, regions: list[str] | None = None) -> ResidencyReport:
        try:
            return self._run(regions)
        finally:
            for store in self._servers.values():
                store.close()
            self._servers = {}

    def _run(self, regions: list[str] | None) -> ResidencyReport:
        cfg = self.config
        absent: list[str] = []
        for name in cfg.region_names:
            users = self._homed_users(name)
            if users is None:
                absent.append(name)
                continue
            self.present.append(name)
            for uid in users:  # a row homed elsewhere is a finding, not a home
                first = self.homes.setdefault(uid, name)
                if first != name:
                    self.twice.setdefault(uid, [first]).append(name)
        targets = [cfg.region(r).name for r in regions] if regions else self.present
        missing = [r for r in targets if r in absent]
        if missing:
            raise NotFound(f"region {missing[0]!r} has no store here", region=missing[0])
        unfinished = {j.user_id: j for j in pending_moves(cfg)}
        findings: list[Finding] = [
            # which copy is the planted one cannot be told from here: both are named
            Finding(region, "several_homes", "store", "users", uid, "|".join(homes), 1)
            for uid, homes in self.twice.items()
            for region in homes
            if region in targets and uid not in unfinished
        ]
        findings += [  # the user may have two homes until it is finished
            Finding(
                j.source,
                "unfinished_move",
                "move_journal",
                f"move {j.move_id} from {j.source} to {j.dest} stopped at its {j.step} step: "
                f"finish it with `{j.finish_command(cfg)}` (or any open of the deployment)",
                j.user_id,
                "|".join(self.twice.get(j.user_id, [self.homes.get(j.user_id, "-")])),
                1,
            )
            for j in unfinished.values()
            if j.source in targets
        ]
        scans: list[RegionScan] = []
        for name in targets:
            scan = RegionScan(name)
            findings.extend(self._scan_region(scan))
            scans.append(scan)
        if regions is None:
            findings.extend(self._scan_unowned())
        findings.sort(key=lambda f: (f.region, f.kind, f.location, f.user_id))
        return ResidencyReport(cfg.name, scans, absent, findings)

    def _homed_users(self, region: str) -> list[str] | None:
        """The users the region's store homes there; None if the store is absent here
        (a SQLite file not in this directory, a database server that does not answer)."""
        url = self.config.resolve_url(self.config.region(region).store)
        if not url.startswith("sqlite:"):
            try:
                store = self._servers.get(region) or open_store(url, region, migrate=False)
            except StorageError:
                return None
            self._servers[region] = store
            rows = sql_store(store).query(
                "SELECT user_id FROM users WHERE home_region = ?", (region,)
            )
            return [str(r[0]) for r in rows]
        path = store_file(self.config, region)
        if not path.is_file():
            return None
        conn = read_only(path)
        try:
            return [
                str(r[0])
                for r in conn.execute("SELECT user_id FROM users WHERE home_region = ?", (region,))
            ]
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot read the users of region {region!r}: {exc}") from exc
        finally:
            conn.close()

    # -- classification ------------------------------------------------------------
    def _pseudonyms_of(self, region: str) -> dict[str, str]:
        """Pseudonym → user of every user homed elsewhere, keyed as ``region`` keys them."""
        if region not in self._pseudonyms:
            from fyp.sovereignty.ledger import user_pseudonym
            from fyp.sovereignty.region_keys import region_secret

            out: dict[str, str] = {}
            try:
                region_secret(self.config, region, "ledger", create=False)
            except ConfigError:  # no key yet: nothing here was ever named by pseudonym
                self._pseudonyms[region] = out
                return out
            for uid, home in self.homes.items():
                if home != region:
                    out[user_pseudonym(self.config, region, uid)] = uid
            self._pseudonyms[region] = out
        return self._pseudonyms[region]

    def _moved_away(self, region: str, user_id: str) -> bool:
        """Whether ``region``'s ledger records the user moving away (not back since)."""
        ledger = self._ledgers.setdefault(region, ErasureLedger(self.config, region))
        if not ledger.path.is_file():
            return False
        entry = ledger.find(user_id, MOVE)
        return entry is not None and not moved_into(
            self.config, user_id, region, entry.erased_at_ms
        )

    def _erased(self, user_ids: set[str]) -> set[str]:
        erased: set[str] = set()
        for name in self.present:
            ledger = self._ledgers.setdefault(name, ErasureLedger(self.config, name))
            if ledger.path.is_file():
                erased |= ledger.matching(user_ids, ERASURE)
        return erased

    def classify(
        self, region: str, source: str, prefix: str, names: Iterable[Names], scan: RegionScan
    ) -> list[Finding]:
        """Findings among named users: ``region`` is where the names were found."""
        out: list[Finding] = []
        orphans: list[tuple[str, str, int]] = []
        for location, cls, counts in names:
            where = f"{prefix}{location}"
            if cls == "unreadable":  # what cannot be read cannot be vouched for
                out.append(Finding(region, "unreadable", source, where, "-", None, 1))
                continue
            if cls in {"pseudonym", "person"}:  # append-only records name users by pseudonym
                table = self._pseudonyms_of(region) if region != "-" else {}
                for value, n in counts.items():
                    uid = table.get(value)
                    if uid is not None and self._moved_away(region, uid):
                        scan.moved_away += n  # the log is append-only: it keeps their history
                    elif uid is not None:
                        out.append(
                            Finding(region, "foreign", source, where, uid, self.homes[uid], n)
                        )
                if cls == "pseudonym":
                    continue
            for value, n in counts.items():
                if value in ERASED_NAMES:
                    continue
                home = self.homes.get(value)
                if home == region or region in self.twice.get(value, ()):
                    continue  # (a user of several homes is one finding: several_homes)
                if cls == "creator":
                    if source == "store":  # the live catalogue; copies elsewhere not again
                        scan.exempt_creators += n
                elif home is not None and source == "backup" and self._moved_away(region, value):
                    scan.moved_away += n  # older than the move: a restore removes them again
                elif home is not None:
                    out.append(Finding(region, "foreign", source, where, value, home, n))
                elif cls == "user":
                    orphans.append((where, value, n))
        erased = self._erased({v for _, v, _ in orphans}) if orphans else set()
        for where, value, n in orphans:
            if value in erased and source == "backup":
                # a backup older than the erasure: a restore erases them again (the
                # ledger is never rolled back) and they leave when the backup expires
                scan.erased_in_backups += n
                continue
            kind = "erased" if value in erased else "orphan"
            out.append(Finding(region, kind, source, where, value, None, n))
        return out

    # -- places ----------------------------------------------------------------------
    def _scan_region(self, scan: RegionScan) -> list[Finding]:
        region = scan.region
        cfg = self.config
        found: list[Finding] = []
        server = self._servers.get(region)
        if server is not None:  # a store on a database server, read through the store
            sql = sql_store(server)
            rows = sql.query("SELECT value FROM store_meta WHERE key = 'region'")
            owner = str(rows[0][0]) if rows else None
            where, names, live_files = redact(server.url), server_names(sql, scan.scanned), set()
        else:
            live = store_file(cfg, region)
            owner = store_region(live)
            where, names = str(live), sqlite_names(live, scan.scanned)
            live_files = {p.resolve() for p in store_companions(live)}
        if owner != region:
            found.append(Finding(region, "wrong_region_store", "store", where, "-", owner, 1))
        found += self.classify(region, "store", "", names, scan)
        found += self._scan_served_log(region, scan)
        region_dir = cfg.region_dir(region)
        found += self._scan_artifacts(region, region_dir, "", scan)
        found += self._scan_files(region, region_dir, live_files, "", scan)
        if self.scan_backups:
            found += self._scan_backups(scan)
        return found

    def _scan_served_log(self, region: str, scan: RegionScan) -> list[Finding]:
        """The region's served log on a server of its own (Redis): every key's user."""
        log = open_data(self.config, region)
        if log is None:
            return []
        try:
            scan.scanned["served_log_servers"] = 1
            return self.classify(region, SERVED_SOURCE, "", residency_names(log), scan)
        finally:
            log.close()

    def _scan_artifacts(
        self, region: str, region_dir: Path, prefix: str, scan: RegionScan, source: str = "artifact"
    ) -> list[Finding]:
        found: list[Finding] = []
        for version in list_versions(region_dir):
            if source == "artifact":  # what a backup holds is counted as the backup
                scan.scanned["artifacts"] += 1
            path = models_dir(region_dir) / version / ARRAYS
            where = f"{prefix}models/{version}/{ARRAYS}:"
            found += self.classify(region, source, where, npz_names(path), scan)
        return found

    def _scan_files(
        self,
        region: str,
        region_dir: Path,
        skip: set[Path],
        prefix: str,
        scan: RegionScan,
        source: str = "file",
    ) -> list[Finding]:
        """Every file of the region's directory that is not the store, an artifact,
        a secret or the (pseudonymous) erasure ledger."""
        found: list[Finding] = []
        artifacts = {(models_dir(region_dir) / v).resolve() for v in list_versions(region_dir)}
        killed = leftovers(region_dir) if source == "file" else []  # killed artifact writes'
        for dirpath, dirs, files in os.walk(region_dir):
            here = Path(dirpath)
            dirs[:] = sorted(
                d
                for d in dirs
                if not (d.startswith(SCAN_STAGING) and is_live(here / d))  # another scan's
                and not (here == region_dir and d in SKIPPED_IN_REGION)
                and not (here == region_dir and d == JOURNAL_DIR)  # reported as unfinished moves
                and (here / d).resolve() not in artifacts
            )
            for name in sorted(files):
                path = here / name
                if (here == region_dir and name in SKIPPED_IN_REGION) or path.resolve() in skip:
                    continue
                if here == region_dir / SECRETS_DIR and name.endswith(".key"):
                    continue
                if here == models_dir(region_dir) and name == "current":
                    continue
                if source == "file":
                    scan.scanned["files"] += 1
                where = f"{prefix}{path.relative_to(region_dir).as_posix()}: "
                kind = "quarantine" if in_quarantine(region_dir, path) else source
                names = self.classify(region, kind, where, file_names(path), scan)
                if any(path.is_relative_to(d) for d in killed):
                    names = [replace(f, location=f"{f.location}: {LEFTOVER_FIX}") for f in names]
                found += names
        return found

    def _scan_backups(self, scan: RegionScan) -> list[Finding]:
        region = scan.region
        found: list[Finding] = []
        try:
            located = list(iter_region_backups(self.config, region))
        except FypError as exc:
            return [Finding(region, "unreadable_backup", "backup", exc.message, "-", None, 1)]
        for _, path in located:
            scan.scanned["backups"] += 1
            name = f"{SCAN_STAGING}{path.name}-{secrets.token_hex(3)}"
            with Staging(self.config.region_dir(region) / name) as stage:
                staging = stage.path / "backup"
                try:
                    backup: Backup = read_backup(path)
                    unpack_backup(self.config, region, backup, staging)
                except FypError as exc:
                    found.append(
                        Finding(
                            region,
                            "unreadable_backup",
                            "backup",
                            f"{path}: {exc.message}",
                            "-",
                            None,
                            1,
                        )
                    )
                    continue
                prefix = f"backup {path.name}: "
                found += self.classify(
                    region, "backup", prefix, sqlite_names(staging / STORE_PART), scan
                )
                files = staging / "files"
                if files.is_dir():
                    found += self._scan_artifacts(region, files, prefix, scan, "backup")
                    found += self._scan_files(region, files, set(), prefix, scan, "backup")
        for url, directory in allowed_target_dirs(self.config, region):
            # a backup is a directory; a file dropped beside them is read as it is
            loose = (
                sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []
            )
            for path in loose:
                scan.scanned["files"] += 1
                where = f"{url}/{path.name}: "
                found += self.classify(region, "file", where, file_names(path), scan)
        return found

    def _scan_unowned(self) -> list[Finding]:
        """Files of the deployment directory that belong to no region: any user there
        is outside their home region."""
        found: list[Finding] = []
        scan = RegionScan("-")
        for path in unowned_files(self.config):
            where = f"{path.relative_to(self.config.root).as_posix()}: "
            found += self.classify("-", "file", where, file_names(path), scan)
        return found


def unowned_files(cfg: DeploymentConfig) -> Iterator[Path]:
    """Files of the deployment directory that belong to no region (not its config, a
    region's directory, a region's SQLite store file, or a backup target): a store
    copied to the root, an export left there."""
    root = cfg.root.resolve()
    # declared regions own their directories; anything else under regions/ (a
    # directory of a region the config no longer declares) is unowned
    owned: set[Path] = {(root / CONFIG_FILE).resolve()}
    for name in cfg.region_names:
        owned.add(cfg.region_dir(name).resolve())
        with contextlib.suppress(ConfigError):  # on a database server: no file here
            owned |= {p.resolve() for p in store_companions(store_file(cfg, name))}
        for url in cfg.region(name).backup_targets:
            path = backup_target_path(root, url)
            if path is not None:
                owned.add(path)
    for dirpath, dirs, files in os.walk(cfg.root):
        here = Path(dirpath)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() not in owned)
        for name in sorted(files):
            path = here / name
            if path.resolve() not in owned:
                yield path
