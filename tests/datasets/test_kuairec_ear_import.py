"""The KuaiRec-EAR importer on the bundled real sample, into fresh deployments."""

from __future__ import annotations

import csv
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from fyp.catalog.models import UserIn
from fyp.catalog.service import Catalog
from fyp.datasets.bulk import can_fork
from fyp.datasets.demo import sample_dir
from fyp.datasets.kuairec import PLACEHOLDER_DURATION_MS
from fyp.datasets.kuairec_ear import (
    DATASET,
    WATCH_MS,
    ImportReport,
    import_kuairec_ear,
    read_interactions,
)
from fyp.errors import InvalidRequest, ValidationFailed
from fyp.regions.deployment import Deployment

SAMPLE = sample_dir()
REGIONS = ["us", "eu", "apac"]


def _rows() -> list[tuple[str, str, str]]:
    with (SAMPLE / "interactions.csv").open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [(s, u, v) for s, u, v in reader]


ROWS = _rows()
SPLITS = Counter(s for s, _, _ in ROWS)


def _home(user_id: str) -> str:
    return REGIONS[int(user_id) % len(REGIONS)]


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, ImportReport]]:
    with Deployment.init(tmp_path_factory.mktemp("ear") / "dep", REGIONS) as d:
        yield d, import_kuairec_ear(d, SAMPLE, parallel=False)


def test_counts_follow_the_home_rule(imported: tuple[Deployment, ImportReport]) -> None:
    d, report = imported
    assert report.rows == len(ROWS) == 28_146
    users = {r: {u.user_id for u in d.store(r).iter_users()} for r in REGIONS}
    assert sum(len(u) for u in users.values()) == 1000
    for region, ids in users.items():
        assert ids and all(_home(u) == region for u in ids)
    events = Counter(_home(u) for s, u, _ in ROWS if s != "test")
    labels = Counter(_home(u) for s, u, _ in ROWS if s == "test")
    for region in REGIONS:
        s = d.store(region)
        assert s.count_events() == events[region] == report.written[region].events
        assert s.count_labels(DATASET) == labels[region] == report.written[region].labels
        assert s.count_videos() == 1348
    assert sum(report.written[r].events for r in REGIONS) == SPLITS["train"] + SPLITS["valid"]
    assert sum(report.written[r].labels for r in REGIONS) == SPLITS["test"] == 21_274


def test_test_rows_are_labels_never_events(imported: tuple[Deployment, ImportReport]) -> None:
    d, _ = imported
    test_pairs = {(u, v) for s, u, v in ROWS if s == "test"}
    for region in REGIONS:
        store = d.store(region)
        for e in store.iter_events():
            assert (e.user_id, e.video_id) not in test_pairs
            assert e.event_id.split(":")[1] in {"train", "valid"}
        labels = {(lab.user_id, lab.video_id) for lab in store.iter_labels(DATASET, "test")}
        assert labels == {(u, v) for u, v in test_pairs if _home(u) == region}


def test_events_live_only_in_their_users_home(imported: tuple[Deployment, ImportReport]) -> None:
    d, _ = imported
    for region in REGIONS:
        for e in d.store(region).iter_events():
            assert _home(e.user_id) == region
    user = next(u for s, u, _ in ROWS if s == "train")
    for region in REGIONS:
        found = d.store(region).user_events(user, limit=1000)
        assert bool(found) == (region == _home(user))


def test_event_and_video_fields(imported: tuple[Deployment, ImportReport]) -> None:
    d, _ = imported
    split, user, video = ROWS[0]
    event = d.store(_home(user)).get_event(f"{DATASET}:{split}:{user}:{video}")
    assert event is not None
    assert (event.type, event.watch_ms) == ("play", WATCH_MS)
    base = event.ts_ms  # the first train row; the last event is a second before the import
    played = sum(1 for s, _, _ in ROWS if s != "test")
    newest = max(e.ts_ms for r in REGIONS for e in d.store(r).iter_events())
    assert newest == base + 1000 * (played - 1)
    assert 0 < time.time() * 1000 - newest < 600_000
    assert (event.watch_ratio, event.valid_play, event.long_play, event.short_play) == (
        2.0,
        True,
        True,
        False,
    )
    first_valid = next(i for i, r in enumerate(ROWS) if r[0] == "valid")
    _, user, video = ROWS[first_valid]
    later = d.store(_home(user)).get_event(f"{DATASET}:valid:{user}:{video}")
    assert later is not None and later.ts_ms == base + SPLITS["train"] * 1000
    for region in REGIONS:
        v = d.store(region).get_video("1378")
        assert v is not None
        assert v.regions == REGIONS and v.duration_ms == PLACEHOLDER_DURATION_MS
        assert v.caption == "张凯教练：“我希望我们能开启一段王朝\r！”"
        assert v.attributes["duration_known"] is False and v.creator_id is None


def test_reimport_is_idempotent(imported: tuple[Deployment, ImportReport]) -> None:
    d, first = imported
    again = import_kuairec_ear(d, SAMPLE, parallel=False)
    assert all(c.users == c.videos == c.events == c.labels == 0 for c in again.written.values())
    assert again.totals == first.totals


@pytest.mark.skipif(not can_fork(), reason="parallel writers need fork and 2+ CPUs")
def test_parallel_writers_store_the_same(
    tmp_path: Path, imported: tuple[Deployment, ImportReport]
) -> None:
    _, sequential = imported
    with Deployment.init(tmp_path / "par", REGIONS) as d:
        report = import_kuairec_ear(d, SAMPLE, parallel=True)
        assert report.written == sequential.written
        assert report.totals == sequential.totals
        again = import_kuairec_ear(d, SAMPLE, parallel=True)
        assert sum(c.events + c.labels for c in again.written.values()) == 0
        d.store("us").count_events()  # the parent's own connections still work


def test_existing_user_keeps_their_home(tmp_path: Path) -> None:
    user = next(u for s, u, _ in ROWS if s == "train" and _home(u) != "us")
    with Deployment.init(tmp_path / "dep", REGIONS) as d:
        Catalog(d).create_user(UserIn(user_id=user, home_region="us"))
        import_kuairec_ear(d, SAMPLE, parallel=False)
        assert d.locate_users([user]) == {user: "us"}
        assert d.store("us").user_events(user)
        assert not d.store(_home(user)).user_events(user)
        assert d.store(_home(user)).get_user(user) is None


def test_data_layouts_and_bad_input(tmp_path: Path) -> None:
    ear, side = tmp_path / "kuairec-ear", tmp_path / "kuairec"
    ear.mkdir()
    side.mkdir()
    lines = (SAMPLE / "interactions.csv").read_text(encoding="utf-8").splitlines()[:50]
    (ear / "interactions.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    with Deployment.init(tmp_path / "dep", ["us", "eu"]) as d:
        with pytest.raises(InvalidRequest, match="side info not found"):
            import_kuairec_ear(d, tmp_path)
        for name in ("user_features.csv", "item_categories.csv", "kuairec_caption_category.csv"):
            shutil.copy(SAMPLE / name, side / name)
        by_parent = import_kuairec_ear(d, tmp_path)  # ../shared/data style
        by_ear = import_kuairec_ear(d, ear)  # kuairec-ear itself, sibling kuairec/
        assert by_parent.rows == by_ear.rows == 49
        assert sum(c.events + c.labels for c in by_ear.written.values()) == 0

        with pytest.raises(InvalidRequest, match=r"no interactions\.csv"):
            import_kuairec_ear(d, tmp_path / "nowhere")
        (ear / "interactions.csv").write_text("split,user_id,video_id\nholdout,1,2\n")
        with pytest.raises(ValidationFailed, match="split 'holdout'"):
            import_kuairec_ear(d, tmp_path)
        (ear / "interactions.csv").write_text("split,user_id,video_id\ntrain,alice,2\n")
        with pytest.raises(ValidationFailed, match="not a non-negative integer"):
            import_kuairec_ear(d, tmp_path)
        (ear / "interactions.csv").write_text("user,video\n1,2\n")
        with pytest.raises(ValidationFailed, match="missing column"):
            import_kuairec_ear(d, tmp_path)


@pytest.mark.parametrize("parallel", [False, True])
def test_a_failed_import_writes_nothing(tmp_path: Path, parallel: bool) -> None:
    if parallel and not can_fork():
        pytest.skip("parallel writers need fork and 2+ CPUs")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("user_features.csv", "item_categories.csv", "kuairec_caption_category.csv"):
        shutil.copy(SAMPLE / name, data / name)
    good = (SAMPLE / "interactions.csv").read_text(encoding="utf-8").splitlines()[:100]
    (data / "interactions.csv").write_text("\n".join([*good, "train,12,"]) + "\n")
    with Deployment.init(tmp_path / "dep", REGIONS) as d:
        with pytest.raises(ValidationFailed, match="not a valid id"):
            import_kuairec_ear(d, data, parallel=parallel)
        for store in d.stores.values():
            assert (store.count_users(), store.count_videos(), store.count_events()) == (0, 0, 0)


@pytest.mark.parametrize("parallel", [False, True])
def test_ids_missing_from_the_side_tables(tmp_path: Path, parallel: bool) -> None:
    if parallel and not can_fork():
        pytest.skip("parallel writers need fork and 2+ CPUs")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("user_features.csv", "item_categories.csv", "kuairec_caption_category.csv"):
        shutil.copy(SAMPLE / name, data / name)
    rows = ["split,user_id,video_id", "train,999999,99999", "test,999999,100", "valid,3,99999"]
    (data / "interactions.csv").write_text("\n".join(rows) + "\n")
    with Deployment.init(tmp_path / "dep", REGIONS) as d:
        report = import_kuairec_ear(d, data, parallel=parallel)
        assert report.rows == 3
        home = _home("999999")
        user = d.store(home).get_user("999999")
        assert user is not None and user.attributes == {}
        assert [e.video_id for e in d.store(home).user_events("999999")] == ["99999"]
        assert [lab.video_id for lab in d.store(home).iter_labels(DATASET, "test")] == ["100"]
        for store in d.stores.values():
            video = store.get_video("99999")
            assert video is not None and video.caption == "" and video.regions == REGIONS
        assert sum(c.users for c in report.totals.values()) == 1001


def test_every_layout_reads_the_same_rows(tmp_path: Path) -> None:
    """The fast reader (pyarrow) and the general one agree: LF, CRLF, BOM, quoting."""
    lines = (SAMPLE / "interactions.csv").read_text(encoding="utf-8").splitlines()[:200]
    quoted = [lines[0], *(f'"{s}",{u},{v}' for s, u, v in (ln.split(",") for ln in lines[1:]))]
    layouts = {
        "lf": "\n".join(lines) + "\n",
        "crlf": "\r\n".join(lines),
        "bom": "\ufeff" + "\n".join(lines) + "\n\n",
        "quoted": "\n".join(quoted) + "\n",
    }
    tables = {}
    for name, text in layouts.items():
        (tmp_path / name).write_bytes(text.encode("utf-8"))
        tables[name] = read_interactions(tmp_path / name).to_pydict()
    assert all(t == tables["lf"] for t in tables.values())
    assert tables["lf"]["split"] == [s for s, _, _ in ROWS[:199]]
    assert tables["lf"]["video_id"] == [v for _, _, v in ROWS[:199]]

    (tmp_path / "bad").write_text("split,user_id,video_id\ntrain,1,2\ntrain,3,4,5\n")
    with pytest.raises(ValidationFailed, match="record 2 has 4 fields"):
        read_interactions(tmp_path / "bad")
    # a bare CR is inside a field, not a line end (pyarrow would see two good rows)
    (tmp_path / "cr").write_bytes(b"split,user_id,video_id\ntrain,1,2\rtrain,3,4\n")
    with pytest.raises(ValidationFailed, match="record 1 has 5 fields"):
        read_interactions(tmp_path / "cr")


@pytest.mark.parametrize("parallel", [False, True])
def test_a_reimport_never_brings_back_an_erased_user(tmp_path: Path, parallel: bool) -> None:
    if parallel and not can_fork():
        pytest.skip("no fork here")
    from fyp.sovereignty.erasure_verify import verify_erasure

    train_user = next(u for s, u, _ in ROWS if s == "train")
    test_user = next(u for s, u, _ in ROWS if s == "test")
    with Deployment.init(tmp_path / "dep", REGIONS) as d:
        import_kuairec_ear(d, SAMPLE, parallel=parallel)
        for user in (train_user, test_user):
            Catalog(d).erase_user(user)
        report = import_kuairec_ear(d, SAMPLE, parallel=parallel)
        assert "2 users skipped with all their rows" in " ".join(report.notes)
        for user in (train_user, test_user):
            assert d.locate_users([user]) == {}
            home = d.store(_home(user))
            assert home.user_events(user) == []
            assert not [
                lab for lab in home.iter_labels("kuairec-ear", "test") if lab.user_id == user
            ]
            assert not verify_erasure(d, user).remnants
