"""The official-layout KuaiRec importer on a hand-made fixture (see fixtures/.../README.md)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from fyp.datasets.official import DATASET, TEST_FILE, import_kuairec, ts_ms
from fyp.errors import InvalidRequest, ValidationFailed
from fyp.events.schema import StoredEvent, play_labels
from fyp.regions.deployment import Deployment

FIXTURE = Path(__file__).parent / "fixtures" / "kuairec_official"


def _event(d: Deployment, region: str, user: str, video: str, ts: int) -> StoredEvent:
    e = d.store(region).get_event(f"{DATASET}:{user}:{video}:{ts}")
    assert e is not None, (user, video, ts)
    return e


def test_every_row_is_a_labelled_play(deployment: Deployment) -> None:
    report = import_kuairec(deployment, FIXTURE)
    assert report.rows == 32 and report.skipped == 1
    # 21 big rows with a time + 10 small rows, one of which repeats a big-matrix play.
    assert {r: c.events for r, c in report.written.items()} == {"us": 15, "eu": 15}
    assert {r: c.users for r, c in report.written.items()} == {"us": 3, "eu": 3}
    assert {r: c.videos for r, c in report.written.items()} == {"us": 7, "eu": 7}
    assert report.totals["us"].labels == report.totals["eu"].labels == 0

    # Hand-computed: 2000 ms of a 5000 ms video is a short play, not a valid one.
    e = _event(deployment, "us", "0", "14", 1593900060000)
    assert (e.watch_ms, e.watch_ratio) == (2000, 0.4)
    assert (e.valid_play, e.long_play, e.short_play) == (False, False, True)
    # 5200 ms of a 5000 ms video: the whole video, so valid and long despite < 7 s.
    e = _event(deployment, "eu", "1", "14", 1593903780000)
    assert e.watch_ratio == pytest.approx(1.04)
    assert (e.valid_play, e.long_play, e.short_play) == (True, True, False)
    # 18 s of a 10 s video; 7 s of a 20 s video (valid, not long); 3 s of 6 s (neither).
    e = _event(deployment, "us", "2", "10", 1593907200000)
    assert (e.watch_ratio, e.valid_play, e.long_play) == (1.8, True, True)
    e = _event(deployment, "us", "2", "13", 1593907320000)
    assert (e.watch_ratio, e.valid_play, e.long_play, e.short_play) == (0.35, True, False, False)
    e = _event(deployment, "eu", "3", "11", 1593910860000)
    assert (e.valid_play, e.long_play, e.short_play) == (False, False, False)
    assert play_labels(3000, 6000) == play_labels(e.watch_ms, 6000)
    # The fractional timestamp is kept to the millisecond.
    assert _event(deployment, "us", "0", "10", 1593898068378).watch_ms == 4381


def test_time_fallbacks_and_durations(deployment: Deployment) -> None:
    import_kuairec(deployment, FIXTURE)
    # no timestamp: `time` is Beijing time; only `date`: Beijing midnight
    assert _event(deployment, "eu", "3", "14", 1593910980000).watch_ratio == 1.2
    assert _event(deployment, "eu", "3", "13", 1593878400000).long_play
    store = deployment.store("us")
    videos = {v: store.get_video(v) for v in ("10", "12", "15", "16")}
    durations = {v: video.duration_ms for v, video in videos.items() if video is not None}
    assert durations == {"10": 10000, "12": 8000, "15": 40000, "16": 7500}  # 16: a tie
    video = store.get_video("10")
    assert video is not None and video.attributes["duration_known"] is True
    assert video.regions == ["us", "eu"]
    user = deployment.store("eu").get_user("1")
    assert user is not None and user.attributes["follow_user_num"] == 300
    assert deployment.store("eu").get_user("5") is not None  # only in the small matrix


def test_ts_ms_fallbacks() -> None:
    row = ["1", "2", "3", "4", "2020-07-05 05:27:48.378", "20200705.0", "1593898068.378", "1"]
    assert ts_ms(row) == 1593898068378
    assert ts_ms([*row[:6], "", "1"]) == 1593898068378
    assert ts_ms([*row[:4], "", "20200705.0", "nan", "1"]) == 1593878400000
    assert ts_ms([*row[:4], "", "", "", "1"]) is None


def test_split_protocol(deployment: Deployment) -> None:
    report = import_kuairec(deployment, FIXTURE, split_protocol=True)
    # big minus the three pairs also in small (1,10), (1,11), (1,12); one row has no time.
    assert {r: c.events for r, c in report.written.items()} == {"us": 11, "eu": 7}
    events = [e for r in ("us", "eu") for e in deployment.store(r).iter_events()]
    assert not {(e.user_id, e.video_id) for e in events} & {("1", "10"), ("1", "11"), ("1", "12")}
    assert not {e.user_id for e in events} & {"4", "5"}  # small-matrix-only users: no events

    root = deployment.config.root
    tests = {}
    for region in ("us", "eu"):
        with (root / "regions" / region / "datasets" / TEST_FILE).open(newline="") as f:
            tests[region] = list(csv.DictReader(f))
    assert [(r["user_id"], r["video_id"], r["watch_ratio"]) for r in tests["us"]] == [
        ("4", "10", "2"),
        ("4", "11", "0.666667"),
        ("4", "12", "2"),
        ("4", "15", "0.75"),
    ]
    assert len(tests["eu"]) == 6 and {r["user_id"] for r in tests["eu"]} == {"1", "5"}
    positives = {
        r: {(lab.user_id, lab.video_id) for lab in deployment.store(r).iter_labels(DATASET, "test")}
        for r in ("us", "eu")
    }
    assert positives == {
        "us": {("4", "10"), ("4", "12")},
        "eu": {("1", "10"), ("1", "15"), ("5", "15")},
    }

    again = import_kuairec(deployment, FIXTURE, split_protocol=True)
    assert sum(c.events + c.labels + c.users + c.videos for c in again.written.values()) == 0
    assert len((root / "regions" / "us" / "datasets" / TEST_FILE).read_text().splitlines()) == 5


def test_bad_layouts(deployment: Deployment, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"neither big_matrix\.csv nor small_matrix\.csv"):
        import_kuairec(deployment, tmp_path)
    shutil.copy(FIXTURE / "big_matrix.csv", tmp_path / "big_matrix.csv")
    with pytest.raises(InvalidRequest, match=r"--split-protocol needs small_matrix\.csv"):
        import_kuairec(deployment, tmp_path, split_protocol=True)
    (tmp_path / "big_matrix.csv").write_text("user_id,video_id,watch\n1,2,3\n")
    with pytest.raises(ValidationFailed, match="expected columns user_id,video_id,play_duration"):
        import_kuairec(deployment, tmp_path)


def test_a_reimport_never_brings_back_an_erased_user(deployment: Deployment) -> None:
    from fyp.catalog.service import Catalog

    import_kuairec(deployment, FIXTURE, split_protocol=True)
    Catalog(deployment).erase_user("1")  # in both matrices, homed in eu
    report = import_kuairec(deployment, FIXTURE, split_protocol=True)
    assert "1 users skipped with all their rows" in " ".join(report.notes)
    assert deployment.locate_users(["1"]) == {}
    assert not [e for e in deployment.store("eu").iter_events() if e.user_id == "1"]
    labels = deployment.store("eu").iter_labels(DATASET, "test")
    assert not [lab for lab in labels if lab.user_id == "1"]
    test_file = deployment.config.root / "regions" / "eu" / "datasets" / TEST_FILE
    assert not [r for r in csv.DictReader(test_file.open(newline="")) if r["user_id"] == "1"]
