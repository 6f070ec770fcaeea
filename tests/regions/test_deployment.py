"""Deployments: a directory with a fyp.toml and one store per region, plus the user router."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fyp.catalog.models import UserIn, VideoIn
from fyp.catalog.service import Catalog
from fyp.config import CONFIG_FILE, load_config
from fyp.errors import (
    AlreadyExists,
    ConfigError,
    InvalidRequest,
    NotADeployment,
    StorageError,
    UnknownRegion,
    UnknownUser,
)
from fyp.regions.deployment import Deployment, add_region
from fyp.storage import open_store
from fyp.storage.sqlite import SQLiteStore


def test_init_writes_config_and_one_store_per_region(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    with Deployment.init(root, ["us", "eu"], name="demo") as d:
        assert d.regions == ["us", "eu"]
        assert d.config.name == "demo"
        assert d.config.root == root.resolve()
        raw = tomllib.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
        assert list(raw["regions"]) == ["us", "eu"]
        assert raw["deployment"]["name"] == "demo"
        paths = set()
        for region in ("us", "eu"):
            store = d.store(region)
            assert isinstance(store, SQLiteStore)
            assert store.region == region
            assert store.schema_version() >= 1
            assert Path(store.path).is_file()
            assert Path(store.path).is_relative_to(d.config.region_dir(region).resolve())
            paths.add(store.path)
        assert len(paths) == 2


def test_init_default_name_is_the_directory_name(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "my-app", ["us"]) as d:
        assert d.config.name == "my-app"


def test_open_an_existing_deployment_keeps_its_data(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    with Deployment.init(root, ["us", "eu"]) as d:
        Catalog(d).create_user(UserIn(user_id="u1", home_region="eu"))
        Catalog(d).create_video(VideoIn(video_id="v1", duration_ms=1_000, regions=["us"]))
    with Deployment.open(root) as d:
        assert d.regions == ["us", "eu"]
        assert d.home_region("u1") == "eu"
        assert d.locate_video("v1") == ["us"]
    with Deployment.open(str(root)) as d:  # a str path works too
        assert d.home_region("u1") == "eu"


def test_init_on_an_existing_deployment_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    Deployment.init(root, ["us"]).close()
    before = (root / CONFIG_FILE).read_text(encoding="utf-8")
    with pytest.raises(AlreadyExists):
        Deployment.init(root, ["eu"])
    assert (root / CONFIG_FILE).read_text(encoding="utf-8") == before


def test_init_in_an_existing_empty_directory(tmp_path: Path) -> None:
    with Deployment.init(tmp_path, ["us"]) as d:
        assert d.regions == ["us"]


@pytest.mark.parametrize("regions", [[], ["US"], ["us", "us"], ["../x"]])
def test_init_with_bad_regions_writes_nothing(tmp_path: Path, regions: list[str]) -> None:
    root = tmp_path / "dep"
    with pytest.raises(ConfigError):
        Deployment.init(root, regions)
    assert not (root / CONFIG_FILE).exists()


def test_open_a_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(NotADeployment, match="fyp init"):
        Deployment.open(tmp_path)


def test_store_of_an_undeclared_region(deployment: Deployment) -> None:
    with pytest.raises(UnknownRegion) as info:
        deployment.store("mars")
    assert info.value.details["regions"] == ["eu", "us"]


def test_closed_deployment_has_no_stores(tmp_path: Path) -> None:
    d = Deployment.init(tmp_path / "dep", ["us"])
    d.close()
    with pytest.raises(ConfigError, match="not open"):
        d.store("us")
    d.close()  # closing twice is harmless


# -- routing ----------------------------------------------------------------------------


@pytest.fixture
def users(deployment: Deployment) -> Deployment:
    catalog = Catalog(deployment)
    catalog.create_user(UserIn(user_id="ann", home_region="us"))
    catalog.create_user(UserIn(user_id="ben", home_region="eu"))
    catalog.create_user(UserIn(user_id="cat", home_region="eu"))
    return deployment


def test_locate_users(users: Deployment) -> None:
    assert users.locate_users(["ann", "ben", "nobody", "cat", "ann"]) == {
        "ann": "us",
        "ben": "eu",
        "cat": "eu",
    }
    assert users.locate_users([]) == {}
    assert users.locate_users(iter(["ben"])) == {"ben": "eu"}  # any iterable
    # Cached answers and fresh lookups mix.
    assert users.locate_users(["ben", "nobody"]) == {"ben": "eu"}


def test_home_region(users: Deployment) -> None:
    assert users.home_region("ann") == "us"
    assert users.home_region("ben") == "eu"
    with pytest.raises(UnknownUser) as info:
        users.home_region("nobody")
    assert info.value.details == {"user_id": "nobody"}


def test_unknown_users_are_not_cached(users: Deployment) -> None:
    assert users.locate_users(["dan"]) == {}
    Catalog(users).create_user(UserIn(user_id="dan", home_region="eu"))
    assert users.home_region("dan") == "eu"


def test_forget_route(users: Deployment) -> None:
    assert users.home_region("ann") == "us"
    users.store("us").delete_user("ann")  # behind the router's back
    assert users.home_region("ann") == "us"  # the cached route
    users.forget_route("ann")
    with pytest.raises(UnknownUser):
        users.home_region("ann")
    users.forget_route("never-seen")  # forgetting an unknown route is harmless


def test_a_route_cached_before_another_process_erased_the_user(
    users: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (a second serving host) erases ann and cat, and takes cat's id
    again in us. This process's cached routes are trusted only where the store is read
    anyway: they must not make the id look taken, nor erase or export nobody."""
    from fyp.sovereignty import erasure
    from fyp.sovereignty.export import UserExport
    from fyp.sovereignty.ledger import ErasureLedger

    assert users.locate_users(["ann", "ben", "cat"]) == {"ann": "us", "ben": "eu", "cat": "eu"}
    with Deployment.open(users.config.root) as other, monkeypatch.context() as elsewhere:
        elsewhere.setattr(erasure, "_HOOKS", [])  # another process: no hook of this one runs
        Catalog(other).erase_user("ann")
        Catalog(other).erase_user("cat")
    assert users.home_region("ann") == "us"  # trusted where the store is read anyway
    for act in (
        lambda: UserExport(users, "ann"),
        lambda: Catalog(users).erase_user("ann"),  # no receipt and ledger entry for nobody
        lambda: users.homed_region("ann"),
    ):
        users._routes["ann"] = "us"  # the stale route, each time
        with pytest.raises(UnknownUser):
            act()
        assert "ann" not in users._routes  # forgotten
    assert len(ErasureLedger(users.config, "us").entries()) == 1
    Catalog(users).create_user(UserIn(user_id="cat", home_region="us"))  # not taken
    assert users.homed_region("cat") == "us"
    users.store("eu").delete_user("ben")  # behind the router's back
    assert users.locate_users(["ben"]) == {"ben": "eu"}  # cached
    assert users.locate_users(["ben"], fresh=True) == {}  # asked, and forgotten
    assert users.locate_users(["ben"]) == {}


def test_locate_video_in_config_order(deployment: Deployment) -> None:
    Catalog(deployment).create_video(
        VideoIn(video_id="v1", duration_ms=1_000, regions=["eu", "us"])
    )
    assert deployment.locate_video("v1") == ["us", "eu"]
    assert deployment.locate_video("nope") == []


# -- a store belongs to one region ------------------------------------------------------------


def _rewrite(root: Path, old: str, new: str) -> None:
    path = root / CONFIG_FILE
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_two_regions_sharing_one_store_file_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    with Deployment.init(root, ["us", "eu"]) as d:
        Catalog(d).create_user(UserIn(user_id="u1", home_region="us"))
    _rewrite(root, "regions/eu/store.sqlite", "regions/us/store.sqlite")
    assert load_config(root).region("eu").store == load_config(root).region("us").store
    with pytest.raises(StorageError) as info:
        Deployment.open(root)
    assert info.value.details == {"store_region": "us", "region": "eu"}
    # The refusal changed nothing in the us store.
    store = open_store(f"sqlite:///{root / 'regions' / 'us' / 'store.sqlite'}", "us")
    try:
        assert [u.user_id for u in store.iter_users()] == ["u1"]
    finally:
        store.close()


def test_fresh_deployment_with_a_shared_store_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    Deployment.init(root, ["us", "eu"]).close()
    for f in (root / "regions").rglob("store.sqlite*"):
        f.unlink()
    _rewrite(root, "regions/eu/store.sqlite", "regions/us/store.sqlite")
    with pytest.raises(StorageError):
        Deployment.open(root)


def test_a_store_file_moved_to_another_region_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    Deployment.init(root, ["us", "eu"]).close()
    # Swap the two regions' store URLs: each region would open the other's file.
    _rewrite(root, "regions/eu/store.sqlite", "@@")
    _rewrite(root, "regions/us/store.sqlite", "regions/eu/store.sqlite")
    _rewrite(root, "@@", "regions/us/store.sqlite")
    with pytest.raises(StorageError):
        Deployment.open(root)


@pytest.mark.parametrize("how", ["moved", "typo"])
def test_a_missing_store_file_is_an_error_not_a_new_empty_store(tmp_path: Path, how: str) -> None:
    """A store moved away (or on a volume not mounted, or a misspelt URL) came back as a
    new empty file: `fyp status` showed the region with 0 users, `fyp serve` served it."""
    root = tmp_path / "dep"
    with Deployment.init(root, ["us", "eu"]) as d:
        Catalog(d).create_user(UserIn(user_id="u1", home_region="us"))
    store = root / "regions" / "us" / "store.sqlite"
    if how == "moved":
        store.rename(tmp_path / "elsewhere.sqlite")
        missing = store
    else:
        _rewrite(root, "regions/us/store.sqlite", "regions/us/stor.sqlite")
        missing = store.with_name("stor.sqlite")
    with pytest.raises(StorageError, match="store of region 'us' is missing") as info:
        Deployment.open(root)
    assert info.value.details == {"region": "us", "path": str(missing)}
    assert str(missing) in info.value.message
    assert not missing.exists()


def test_region_add_creates_the_store_of_a_new_region(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    Deployment.init(root, ["us"]).close()
    text = (root / CONFIG_FILE).read_text(encoding="utf-8")
    (root / CONFIG_FILE).write_text("# ours\n" + text, encoding="utf-8")
    config = add_region(root, "eu")
    assert config.region_names == ["us", "eu"]
    assert (root / CONFIG_FILE).read_text(encoding="utf-8").startswith("# ours\n")
    with Deployment.open(root) as d:
        assert d.regions == ["us", "eu"]
        assert d.store("eu").count_users() == 0
        assert d.config.region("eu").backup_targets == ("file://backups/eu",)
    with pytest.raises(AlreadyExists, match="region 'eu' already has a store"):
        add_region(root, "eu")


def test_region_add_creates_the_store_an_operator_declared(tmp_path: Path) -> None:
    root = tmp_path / "dep"
    Deployment.init(root, ["us"]).close()
    with (root / CONFIG_FILE).open("a", encoding="utf-8") as out:
        out.write('\n[regions.asia]\nstore = "sqlite:///cells/asia.sqlite"\n')
    with pytest.raises(StorageError, match="store of region 'asia' is missing"):
        Deployment.open(root)
    add_region(root, "asia")
    assert (root / "cells" / "asia.sqlite").is_file()
    with Deployment.open(root) as d:
        assert d.regions == ["us", "asia"]


def test_init_on_a_file_is_a_client_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidRequest, match="is a file, not a directory"):
        Deployment.init(tmp_path / "f", ["us"])
    with pytest.raises(InvalidRequest, match="cannot create a deployment"):
        Deployment.init(tmp_path / "f" / "dep", ["us"])


def test_a_failed_init_leaves_nothing_behind_and_can_be_retried(tmp_path: Path) -> None:
    """A store that could not be opened left fyp.toml and the region folders behind (no
    admin key, unusable), and the retry was refused: already_exists."""
    root = tmp_path / "a" / "dep"
    # eu's store under a file: us's store file is made first, then eu's open fails
    (tmp_path / "eu").write_text("x")
    with pytest.raises(StorageError, match="cannot open SQLite store"):
        Deployment.init(root, ["us", "eu"], store=f"sqlite:///{tmp_path}/{{region}}/s.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eu"]  # a/, us/ removed too
    # in a directory that was there: only what init made goes
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("mine")
    (root / "regions").mkdir()
    (root / "regions" / "README").write_text("mine")
    with pytest.raises(StorageError):
        Deployment.init(root, ["us"], store=f"sqlite:///{tmp_path}/eu/{{region}}.db")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "notes.txt",
        "regions",
        "regions/README",
    ]
    with Deployment.init(root, ["us"]) as d:  # the retry
        assert d.regions == ["us"]


def test_init_with_a_store_scheme_no_backend_opens_is_a_client_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="no store backend for URL scheme 'mysql'"):
        Deployment.init(tmp_path / "dep", ["us"], store="mysql://x/{region}")
    assert not (tmp_path / "dep").exists()
