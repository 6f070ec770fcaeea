"""``fyp eval ... --peer MODULE:NAME``: a recommender of the user's own, loaded from the
current directory, checked against the contract, then measured as the built-in peers are."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from test_eval_cli import check_schema, flat, tiny_sample
from typer.testing import CliRunner

from fyp.cli.app import app
from fyp.errors import InvalidRequest
from fyp.evaluation import Recommender, check_recommender
from fyp.evaluation.baselines import PopularityRecommender
from fyp.evaluation.peers import load_peer, load_peers

runner = CliRunner()

HEADER = """\
import numpy as np
from fyp.evaluation import Recommender
from fyp.evaluation.baselines import PopularityRecommender
"""


def write_module(where: Path, body: str) -> str:
    """A module of peers in ``where`` under a fresh name (imports are cached per name)."""
    name = f"peers_{uuid.uuid4().hex[:10]}"
    (where / f"{name}.py").write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return name


GOOD = """
class Mine(PopularityRecommender):
    name = "mine"


class Seeded(Recommender):
    name = "seeded"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, x):
        self._noise = np.random.default_rng(self.seed).random(x.shape[1])
        return self

    def scores(self, user, items):
        return self._noise[items]


def built(seed):
    return Seeded(seed=seed + 1)
"""


def test_a_class_or_a_function_of_the_seed_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    module = write_module(tmp_path, GOOD)
    mine = load_peer(f"{module}:Mine")
    assert mine.name == "mine" and mine.warnings == ()
    assert isinstance(mine.make(3), PopularityRecommender)
    seeded = load_peer(f"{module}:Seeded")
    assert seeded.make(5).seed == 5  # type: ignore[attr-defined]  # the class takes the seed
    assert load_peer(f"{module}:built").make(5).seed == 6  # type: ignore[attr-defined]
    peers = load_peers([f"{module}:Mine", f"{module}:Seeded"])
    assert peers.names == ("random", "popular", "als", "bpr", "ease", "mine", "seeded")
    assert peers.specs() == {"mine": f"{module}:Mine", "seeded": f"{module}:Seeded"}


BROKEN = """
class ColdNaN(PopularityRecommender):
    name = "coldnan"

    def scores(self, user, items):
        s = super().scores(user, items)
        return s * np.nan if user == 0 else s


class Moody(PopularityRecommender):
    name = "moody"

    def scores(self, user, items):
        return np.random.random(len(items))


class Streams(PopularityRecommender):
    name = "streams"

    def fit(self, x):
        self._rng = np.random.default_rng(0)  # the same draws for the same seed...
        return super().fit(x)

    def scores(self, user, items):
        return self._rng.random(len(items))  # ...but each call takes the next ones


class Mutates(PopularityRecommender):
    name = "mutates"

    def fit(self, x):
        x.data[:] = 2.0
        return super().fit(x)


class Raises(PopularityRecommender):
    name = "raises"

    def fit(self, x):
        raise RuntimeError("no GPU here")


class NotAPeer:
    name = "nope"


class Popular(PopularityRecommender):
    name = "popular"


class Shouting(PopularityRecommender):
    name = "SHOUTING"


def wrong_kind(seed):
    return 42


NUMBER = 7
"""


@pytest.mark.parametrize(
    ("attr", "said"),
    [
        ("ColdNaN", "user 0 (no positives), 40 items: scores that are not finite"),
        ("Moody", "the same seed and data gave other scores"),
        ("Streams", "a user's scores changed when asked again"),
        ("Mutates", "fit changed the matrix it was given"),
        ("Raises", "fit: raised RuntimeError('no GPU here')"),
        ("NotAPeer", "NotAPeer is not a fyp.evaluation.Recommender subclass"),
        ("Popular", "its name 'popular' is already a method of this run"),
        ("Shouting", "its name 'SHOUTING' must be 1-32 lowercase letters"),
        ("wrong_kind", "builds a int, not a fyp.evaluation.Recommender"),
        ("NUMBER", "a int, not a Recommender class or a function"),
        ("Missing", "cannot load it: AttributeError"),
    ],
)
def test_a_peer_that_cannot_be_trusted_is_refused_with_what_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attr: str, said: str
) -> None:
    monkeypatch.chdir(tmp_path)
    module = write_module(tmp_path, BROKEN)
    with pytest.raises(InvalidRequest) as refused:
        load_peers([f"{module}:{attr}"])
    assert said in str(refused.value)


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("no_colon", "expected MODULE:NAME"),
        (":Thing", "expected MODULE:NAME"),
        ("no_such_module_here:Thing", "cannot load it: ModuleNotFoundError"),
    ],
)
def test_a_spec_that_names_nothing_is_refused(spec: str, said: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        load_peer(spec)
    assert said in str(refused.value)


def test_the_shipped_check_passes_the_built_in_peers_and_catches_a_broken_one() -> None:
    assert check_recommender(lambda seed: PopularityRecommender()).ok

    class Short(PopularityRecommender):
        name = "short"

        def scores(self, user: int, items: np.ndarray) -> np.ndarray:
            return super().scores(user, items)[:-1]

    report = check_recommender(lambda seed: Short())
    assert not report.ok and "scores, not one per item" in report.problems[0]
    assert issubclass(Short, Recommender)


def test_a_brought_peer_is_measured_exactly_as_the_built_in_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Mine`` is popularity under another name: every figure must equal popular's,
    offline and in the simulator, and it is compared with fyp like any peer."""
    data = tiny_sample(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    module = write_module(tmp_path, GOOD)
    out = tmp_path / "out"
    args = ["eval", "kuairec-ear", "--data", str(data), "--out", str(out), "--users", "10"]
    result = runner.invoke(app, [*args, "--peer", f"{module}:Mine"])
    assert result.exit_code == 0, result.output
    assert "peer mine" in flat(result.output) and "passed the contract" in flat(result.output)

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results["offline"])[-1] == list(results["interactive"])[-1] == "mine"
    assert results["offline"]["mine"] == results["offline"]["popular"]
    assert results["interactive"]["mine"] == results["interactive"]["popular"]
    assert results["config"]["peers"] == {"mine": f"{module}:Mine"}
    assert "mine" in results["uncertainty"]["offline"]["fyp_vs"]
    assert "mine" in results["uncertainty"]["interactive"]["fyp_vs"]
    assert ">mine<" in (out / "report.html").read_text(encoding="utf-8")
    # the built-in methods' schema is unchanged around it
    for kind in ("offline", "interactive"):
        del results[kind]["mine"]
        for part in ("intervals", "fyp_vs"):
            del results["uncertainty"][kind][part]["mine"]
    check_schema(results, "kuairec-ear", interactive=True)


def test_the_cli_refuses_a_broken_peer_before_reading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    module = write_module(tmp_path, BROKEN)
    out = tmp_path / "out"
    for protocol in ("kuairec-ear", "kuairec"):
        args = ["eval", protocol, "--data", str(tmp_path), "--out", str(out)]
        result = runner.invoke(app, [*args, "--peer", f"{module}:ColdNaN"])
        assert result.exit_code == 2, result.output
        assert "breaks the Recommender contract" in flat(result.output)
        assert not out.exists()


def test_the_shipped_example_passes_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """``examples/itemknn_peer.py``, which the docs show researchers, stays loadable."""
    monkeypatch.chdir(Path(__file__).parents[2] / "examples")
    peer = load_peer("itemknn_peer:ItemKNN")
    assert peer.name == "itemknn" and peer.warnings == ()
