"""Versioned model artifacts with a manifest of exactly what they learned from.

An artifact is a directory ``regions/<region>/models/<version>/`` holding arrays
(``arrays.npz``) and ``manifest.json``. The manifest records the region, the data
snapshot (event count, seq range, a content hash of the events), a hash of the set of
user ids the models learned from (lineage), parameters and metrics, and the sha256 of
the arrays file as written (``arrays_sha256``), so a damaged file is told from a good
one without trusting numpy to notice (:func:`artifact_problem`). ``current`` — a
small file naming the live version — is replaced atomically, so a server can switch
to a new artifact without downtime and a half-written artifact is never live; both
files are on disk (fsync) before the version takes its name.

A writer killed mid-way leaves its working directory: ``models/.<version>.tmp/`` (a
write) or ``models/.<version>.deleting/`` (a removal), whose arrays name users. Never
live, they are :func:`leftovers`, removed (:func:`remove_leftovers`) by the next
training's publish and by ``fyp erasure process``, under the region's models lock
(``fyp.sovereignty.erasure.region_models_lock``), which every artifact writer holds
while it writes: so none of them is a live writer's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fyp.durable import fsync_path
from fyp.errors import ModelError

MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
CURRENT = "current"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Snapshot:
    """Which events a training run read: enough to say exactly what a model learned from."""

    event_count: int
    min_seq: int
    max_seq: int
    events_sha256: str
    users_sha256: str
    user_count: int


@dataclass
class Manifest:
    region: str
    version: str
    created_at: str
    snapshot: Snapshot
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION
    # provenance beyond the snapshot: when the training read began ("read_started_ms"),
    # and for an artifact rewritten by an erasure, its parent and the receipts applied
    lineage: dict[str, Any] = field(default_factory=dict)
    # sha256 of arrays.npz, set by write_artifact (None in manifests written before it)
    arrays_sha256: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        raw["snapshot"] = Snapshot(**raw["snapshot"])
        return cls(**raw)


def hash_ids(ids: Iterable[str]) -> str:
    """Order-independent hash of a set of ids (sorted, newline-joined, sha256)."""
    h = hashlib.sha256()
    for uid in sorted(set(ids)):
        h.update(uid.encode())
        h.update(b"\n")
    return h.hexdigest()


class EventHasher:
    """Incremental content hash over events in seq order (what was learned, byte for byte)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.users: set[str] = set()  # everyone whose events were read: the lineage
        self.count = 0
        self.min_seq = 0
        self.max_seq = 0
        self.oldest_ms: int | None = None  # the oldest event's time (a retention limit's check)

    def add(
        self, seq: int, event_id: str, user_id: str, video_id: str, type_: str, ts_ms: int
    ) -> None:
        if self.count == 0:
            self.min_seq = seq
        self.max_seq = seq
        if self.oldest_ms is None or ts_ms < self.oldest_ms:
            self.oldest_ms = ts_ms
        self.count += 1
        self.users.add(user_id)
        self._h.update(f"{seq}\t{event_id}\t{user_id}\t{video_id}\t{type_}\t{ts_ms}\n".encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def models_dir(region_dir: Path) -> Path:
    return region_dir / "models"


def new_version() -> str:
    """Sortable, unique enough for one writer per region: UTC time plus nanoseconds."""
    ns = time.time_ns()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns / 1e9)) + f"-{ns % 1_000_000_000:09d}"


def write_artifact(
    region_dir: Path, manifest: Manifest, arrays: dict[str, np.ndarray], make_current: bool = True
) -> Path:
    """Write arrays and manifest (which gets the arrays' sha256) to a new version
    directory, durably, then (optionally) go live."""
    root = models_dir(region_dir)
    target = root / manifest.version
    tmp = root / f".{manifest.version}.tmp"
    tmp.mkdir(parents=True, exist_ok=False)
    np.savez(tmp / ARRAYS, **arrays)  # type: ignore[arg-type]
    manifest.arrays_sha256 = file_sha256(tmp / ARRAYS)
    (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    for name in (ARRAYS, MANIFEST):
        fsync_path(tmp / name)
    os.replace(tmp, target)
    fsync_path(root)
    if make_current:
        set_current(region_dir, manifest.version)
    return target


LEFTOVER_SUFFIXES = (".tmp", ".deleting")
LEFTOVER_FIX = (
    "left by an artifact write that was killed; the region's next `fyp train` or "
    "`fyp erasure process` removes it"
)
"""What the residency scan and ``fyp erasure verify`` say of a leftover."""


def leftovers(region_dir: Path) -> list[Path]:
    """The working directories of artifact writes and removals under ``models/``
    (``.<version>.tmp``, ``.<version>.deleting``): a killed writer's, unless a writer
    holding the region's models lock is using one now."""
    root = models_dir(region_dir)
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.name.startswith(".")
        and p.name.endswith(LEFTOVER_SUFFIXES)
        and p.is_dir()
        and not p.is_symlink()
    )


def remove_leftovers(region_dir: Path) -> list[str]:
    """Delete what killed artifact writers left (:func:`leftovers`); returns their names.
    Only while holding the region's models lock: then no writer is using one."""
    removed: list[str] = []
    for path in leftovers(region_dir):
        shutil.rmtree(path)
        removed.append(path.name)
    if removed:
        fsync_path(models_dir(region_dir))
    return removed


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def artifact_problem(region_dir: Path, version: str, manifest: Manifest) -> str | None:
    """Why a version's arrays cannot be used (None: they can): not the bytes its
    manifest's sha256 names, or, for a manifest without one, arrays that do not load."""
    path = models_dir(region_dir) / version / ARRAYS
    if manifest.arrays_sha256 is not None:
        try:
            digest = file_sha256(path)
        except OSError as exc:
            return f"cannot read {ARRAYS}: {exc}"
        if digest != manifest.arrays_sha256:
            return f"{ARRAYS} does not match its manifest's sha256 (damaged or changed)"
        return None
    try:
        read_arrays(region_dir, version)
    except ModelError as exc:
        return exc.message
    return None


def set_current(region_dir: Path, version: str) -> None:
    root = models_dir(region_dir)
    if not (root / version / MANIFEST).is_file():
        raise ModelError(f"no artifact {version!r} in {root}")
    tmp = root / f".{CURRENT}.tmp"
    tmp.write_text(version, encoding="utf-8")
    os.replace(tmp, root / CURRENT)  # atomic: readers see the old or the new version


def current_version(region_dir: Path) -> str | None:
    path = models_dir(region_dir) / CURRENT
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def list_versions(region_dir: Path) -> list[str]:
    root = models_dir(region_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


def read_manifest(region_dir: Path, version: str) -> Manifest:
    path = models_dir(region_dir) / version / MANIFEST
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelError(f"cannot read manifest {path}: {exc}") from exc


def read_arrays(region_dir: Path, version: str) -> dict[str, np.ndarray]:
    path = models_dir(region_dir) / version / ARRAYS
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:  # a damaged file fails in zipfile, zlib or numpy
        raise ModelError(
            f"cannot read model arrays {path}: {type(exc).__name__}: {exc}", version=version
        ) from exc


def remove_version(region_dir: Path, version: str) -> None:
    """Delete an artifact version: renamed away first, so it vanishes atomically."""
    root = models_dir(region_dir)
    doomed = root / f".{version}.deleting"
    os.replace(root / version, doomed)
    shutil.rmtree(doomed)


def prune_versions(region_dir: Path, keep: int) -> list[str]:
    """Delete every version but the newest ``keep`` (never the live one): old artifacts
    hold old users' vectors and lineage, so they should not outlive their use."""
    if keep < 1:
        raise ValueError("keep at least one version")
    live = current_version(region_dir)
    doomed = [v for v in list_versions(region_dir)[:-keep] if v != live]
    for version in doomed:
        remove_version(region_dir, version)
    return doomed
