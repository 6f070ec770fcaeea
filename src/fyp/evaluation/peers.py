"""Peers a user brings: ``fyp eval ... --peer MODULE:NAME``.

A researcher with a recommender of their own wants it measured exactly as fyp and the
built-in peers are: the same test users, the same protocol, the simulator, the paired
differences. ``NAME`` in ``MODULE`` is either a :class:`~fyp.evaluation.Recommender`
subclass (built with ``seed=`` when its constructor takes one, else with no argument)
or a function of the seed that returns a new recommender. ``MODULE`` is imported as
Python imports it, with the current directory first on the path (as ``uvicorn`` finds an
app), so a ``mypeers.py`` next to where the command runs is found.

Before any data is read, the peer is built and put through the evaluation's contract
(:mod:`fyp.evaluation.contract`) on small matrices: a peer that cannot serve a cold
user, or scores differently for one seed, is refused with what it did wrong, instead
of minutes later or never. Its ``name`` is its method name in ``results.json`` and the
report, and may not be one the evaluation already uses.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fyp.errors import InvalidRequest
from fyp.evaluation.baselines import PEERS, Recommender
from fyp.evaluation.contract import Make, check_recommender

PEER_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class Peer:
    name: str
    spec: str  # MODULE:NAME, as given
    make: Make
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeerSet:
    """The built-in peers and the ones a user brought, in the order they run."""

    extra: tuple[Peer, ...] = ()

    @property
    def factories(self) -> dict[str, Make]:
        """Name -> factory of the seed: the built-in peers, then the brought ones."""
        return {**PEERS, **{p.name: p.make for p in self.extra}}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.factories)

    def announce(self, log: Callable[[str], None]) -> None:
        """Say which brought peers passed the contract, and their warnings."""
        for peer in self.extra:
            log(f"  peer {peer.name} ({peer.spec}) passed the contract")
            for warning in peer.warnings:
                log(f"  WARNING: peer {peer.name}: {warning}")

    def specs(self) -> dict[str, str]:
        """What ``results.json`` records of the brought peers: name -> MODULE:NAME."""
        return {p.name: p.spec for p in self.extra}


BUILT_IN = PeerSet()
"""The built-in peers only (no ``--peer``)."""


def load_peers(specs: Sequence[str], reserved: Sequence[str] = ()) -> PeerSet:
    """Load and check each ``MODULE:NAME`` (InvalidRequest, naming it, on any problem);
    ``reserved``: more method names the run uses (e.g. ``fyp:multi_objective``)."""
    taken = {"fyp", *PEERS, *reserved}
    peers: list[Peer] = []
    for spec in specs:
        peer = load_peer(spec)
        if peer.name in taken:
            raise InvalidRequest(
                f"--peer {spec}: its name {peer.name!r} is already a method of this run; "
                "give the class another `name`",
                field="peer",
            )
        taken.add(peer.name)
        peers.append(peer)
    return PeerSet(tuple(peers))


def load_peer(spec: str) -> Peer:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise InvalidRequest(
            f"--peer {spec!r}: expected MODULE:NAME, e.g. mypeers:MyRecommender", field="peer"
        )
    try:
        with _cwd_first():
            found: object = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except Exception as exc:  # any failure of the user's module is theirs
        raise InvalidRequest(f"--peer {spec}: cannot load it: {exc!r}", field="peer") from None
    make = _factory(spec, found)
    report = check_recommender(make)
    if not report.ok:
        raise InvalidRequest(
            f"--peer {spec}: it breaks the Recommender contract (fyp.evaluation.contract): "
            + "; ".join(report.problems[:5]),
            field="peer",
        )
    name = make(0).name
    if not PEER_NAME.fullmatch(name):
        raise InvalidRequest(
            f"--peer {spec}: its name {name!r} must be 1-32 lowercase letters, digits, "
            "'_', '.' or '-', starting with a letter",
            field="peer",
        )
    return Peer(name, spec, make, tuple(report.warnings))


def _factory(spec: str, found: object) -> Make:
    """A seed -> a new recommender, from a Recommender class or a function of the seed."""
    if isinstance(found, type):
        if not issubclass(found, Recommender):
            raise InvalidRequest(
                f"--peer {spec}: {found.__name__} is not a fyp.evaluation.Recommender "
                "subclass (nor a function of the seed returning one)",
                field="peer",
            )
        cls: type[Recommender] = found
        takes_seed = "seed" in inspect.signature(cls).parameters
        return lambda seed: cls(seed=seed) if takes_seed else cls()  # type: ignore[call-arg]
    if callable(found):
        fn = found
        return lambda seed: fn(seed)
    raise InvalidRequest(
        f"--peer {spec}: a {type(found).__name__}, not a Recommender class or a function",
        field="peer",
    )


@contextmanager
def _cwd_first() -> Iterator[None]:
    here = str(Path.cwd())
    sys.path.insert(0, here)
    try:
        yield
    finally:
        if here in sys.path:
            sys.path.remove(here)
