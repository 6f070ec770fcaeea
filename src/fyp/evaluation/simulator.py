"""Interactive evaluation: simulated users scroll a feed one video at a time.

Offline metrics judge a ranked list once; a feed is a loop in which every reaction
changes what comes next. The fully observed test matrix (every test user's reaction to
every test video is known) lets a simulated user react to *any* video, so the loop
can be run for real:

- **Reaction**: a video in the user's test positives is watched to twice its duration
  and liked (reward 1); any other video is skipped after 1 s (reward 0).
- **Leaving**: the user watches (or skips) the video, then leaves if it shares a
  KuaiRec tag (``Video.tags``) with any of the previous ``leave_window`` (4) videos of
  the session, a run of look-alikes being the classic reason to close a feed app;
  otherwise they leave after ``max_length`` (30) videos. The video that triggers
  leaving counts (its reward and its step), as in the KuaiRec authors' KuaiEnv.
- **No repeats**: a video shown twice in a session is a violation of the feed's
  contract; it earns nothing and is counted (``repeats``), never hidden.

Policies:

- :class:`EnginePolicy` is fyp itself through its real serving path: each step is
  ``FeedService.feed(user, n=1, universe=test videos, record=True)`` (the served log
  is what rules out repeats) and the reaction goes back through ``Ingestor.ingest``
  as events (ids ``sim:{seed}:{user}:{step}:{type}``), so the next video already
  reflects it. **This writes events and served rows into the deployment it is given**:
  simulate only on an evaluation's own deployment, after its offline part.
- :class:`PeerPolicy` is a fitted peer recommender (per region, as offline): it shows
  its highest-scoring test video not yet shown, from scores computed once per session
  (peers do not learn from the session). Peers never touch the deployment.

Everything is seeded: the engine's feed cursor carries a per-user session seed, the
peers get the run's seed, and users are simulated in a fixed order.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fyp.errors import AlreadyExists, FypError, InvalidRequest, StorageError
from fyp.evaluation.baselines import PEERS, Recommender
from fyp.evaluation.offline import Protocol
from fyp.events.ingest import Ingestor
from fyp.feed.service import FeedService, encode_cursor
from fyp.feed.settings import RerankParams
from fyp.regions.deployment import Deployment

Log = Callable[[str], None]


@dataclass(frozen=True)
class SimParams:
    """The simulated user's behaviour; defaults are the protocol's."""

    seed: int = 0
    max_length: int = 30
    leave_window: int = 4
    watch_multiple: float = 2.0  # a positive is watched to this multiple of its duration
    skip_watch_ms: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Environment:
    """What simulated users react to: the test positives, and each video's tags,
    first-level category and duration. The catalogue is the same in every region
    (imports publish every video everywhere), so any region's store describes it."""

    universe: list[str]
    truth: dict[str, set[str]]
    tags: dict[str, frozenset[str]]
    category: dict[str, str]
    durations: dict[str, int]

    @classmethod
    def from_protocol(cls, protocol: Protocol) -> Environment:
        tags: dict[str, frozenset[str]] = {}
        durations: dict[str, int] = {}
        for store in protocol.deployment.stores.values():
            for v in store.iter_videos():
                tags.setdefault(v.video_id, frozenset(v.tags))
                durations.setdefault(v.video_id, v.duration_ms)
        truth = {u: set(rel) for r in protocol.regions for u, rel in r.test.items()}
        return cls(list(protocol.universe), truth, tags, dict(protocol.category), durations)

    def leaves(self, previous: Sequence[str], video: str, window: int) -> bool:
        """True if ``video`` shares a tag with one of the last ``window`` of ``previous``."""
        mine = self.tags.get(video, frozenset())
        if not mine or window <= 0:
            return False
        return any(mine & self.tags.get(p, frozenset()) for p in previous[-window:])


@dataclass
class Session:
    """One user's session: what was shown, what it earned, why it ended."""

    user_id: str
    videos: list[str] = field(default_factory=list)
    rewards: list[int] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    end: str = ""  # "tag_repeat", "max_length" or "exhausted" (nothing left to show)
    repeats: int = 0

    @property
    def length(self) -> int:
        return len(self.videos)

    @property
    def reward(self) -> int:
        return sum(self.rewards)


class Policy:
    """Chooses the next video of a session and hears the user's reaction.

    ``begin`` and ``react`` do nothing by default: a static policy needs neither."""

    name: str = "policy"

    def begin(self, user_id: str) -> None:
        """A new session of ``user_id`` starts."""

    def next_video(self, user_id: str, step: int) -> str | None:
        """The video to show at ``step`` (0-based); None when there is nothing left."""
        raise NotImplementedError

    def react(self, user_id: str, step: int, video_id: str, positive: bool) -> None:
        """The user's reaction to the video shown at ``step``."""


def session_seed(seed: int, user_id: str) -> int:
    """A stable per-user feed session id (the cursor's seed), independent of run order."""
    return zlib.crc32(f"{seed}:{user_id}".encode()) & 0x7FFFFFFF


class EnginePolicy(Policy):
    """fyp through ``FeedService.feed`` and ``Ingestor.ingest``: mutates ``deployment``."""

    name = "fyp"

    def __init__(self, deployment: Deployment, env: Environment, params: SimParams) -> None:
        self.deployment = deployment
        self.env = env
        self.params = params
        self.service = FeedService(deployment)
        self.ingestor = Ingestor(deployment)
        self.max_watch_ms = deployment.config.limits.max_watch_ms
        self.events_stored = 0
        self._cursor: str | None = None

    def begin(self, user_id: str) -> None:
        prefix = f"sim:{self.params.seed}:{user_id}:0"
        store = self.deployment.store(self.deployment.home_region(user_id))
        done = store.existing_event_ids([f"{prefix}:play", f"{prefix}:skip"])
        if done:
            raise AlreadyExists(
                f"user {user_id!r} was already simulated with seed {self.params.seed} in this "
                "deployment (its served log and events would skew a second run); simulate "
                "on a fresh evaluation deployment",
                user_id=user_id,
                seed=self.params.seed,
            )
        self._cursor = encode_cursor(0, session_seed(self.params.seed, user_id))

    def next_video(self, user_id: str, step: int) -> str | None:
        page = self.service.feed(
            user_id, n=1, cursor=self._cursor, record=True, universe=self.env.universe
        )
        self._cursor = page.cursor
        return page.items[0].video_id if page.items else None

    def react(self, user_id: str, step: int, video_id: str, positive: bool) -> None:
        prefix = f"sim:{self.params.seed}:{user_id}:{step}"
        base = {"user_id": user_id, "video_id": video_id}
        if positive:
            duration = self.env.durations.get(video_id, 15_000)
            watch = min(round(duration * self.params.watch_multiple), self.max_watch_ms)
            events = [
                {**base, "event_id": f"{prefix}:play", "type": "play", "watch_ms": watch},
                {**base, "event_id": f"{prefix}:like", "type": "like"},
            ]
        else:
            events = [
                {
                    **base,
                    "event_id": f"{prefix}:skip",
                    "type": "skip",
                    "watch_ms": self.params.skip_watch_ms,
                }
            ]
        result = self.ingestor.ingest(events)
        if result.counts["stored"] != len(events):
            _raise_unstored(result.results, prefix)
        self.events_stored += len(events)


def _raise_unstored(results: Sequence[Any], prefix: str) -> None:
    for r in results:
        if r.status == "duplicate":
            raise AlreadyExists(
                f"event {r.event_id} is already stored: this deployment was already "
                "simulated with this seed; simulate on a fresh evaluation deployment",
                event_id=r.event_id,
            )
        if r.error is not None:
            assert isinstance(r.error, FypError)
            raise r.error
    raise StorageError(f"simulated events {prefix}:* were not stored")


class PeerPolicy(Policy):
    """A fitted peer: its static ranking of the test videos, best not-yet-shown first."""

    def __init__(
        self,
        name: str,
        protocol: Protocol,
        env: Environment,
        make: Callable[[int], Recommender],
        seed: int,
    ) -> None:
        """Stores what to fit; :meth:`fit` fits (the constructor does no work)."""
        self.name = name
        self.protocol = protocol
        self.env = env
        self.make = make
        self.seed = seed
        self.models: dict[str, Recommender] = {}
        self.home: dict[str, int] = {}
        self.universe: np.ndarray = np.zeros(0, np.int64)
        self._order: np.ndarray = np.zeros(0, np.int64)
        self._next = 0

    def fit(self) -> PeerPolicy:
        """Fit the peer on each region's training data (per region, like
        ``offline.rank_peer``: peers respect residency too)."""
        self.universe = np.asarray(
            [self.protocol.video_index[v] for v in self.env.universe], np.int64
        )
        for n, region in enumerate(self.protocol.regions):
            self.models[region.region] = self.make(self.seed).fit(region.x)
            for user in region.test:
                self.home[user] = n
        return self

    def begin(self, user_id: str) -> None:
        region = self.protocol.regions[self.home[user_id]]
        scores = self.models[region.region].scores(region.user_index[user_id], self.universe)
        self._order = np.argsort(-np.asarray(scores), kind="stable")
        self._next = 0

    def next_video(self, user_id: str, step: int) -> str | None:
        if self._next >= len(self._order):
            return None
        video = self.env.universe[int(self._order[self._next])]
        self._next += 1
        return video


class LookAlikeAvoidingPeer(PeerPolicy):
    """A peer's static ranking shown under the engine's look-alike rule: at each step its
    best unshown video that shares no tag with the last ``window`` shown (the best
    unshown one if every one does). An ablation, not a peer: how much of the engine's
    interactive lead the rule alone explains, and how much its learning adds."""

    window = RerankParams().tag_window  # the engine's rule, not the simulated user's
    _shown: list[str]
    _taken: np.ndarray

    def begin(self, user_id: str) -> None:
        super().begin(user_id)
        self._shown = []
        self._taken = np.zeros(len(self._order), bool)

    def next_video(self, user_id: str, step: int) -> str | None:
        unshown = np.flatnonzero(~self._taken).tolist()
        if not unshown:
            return None
        pos = next(
            (
                p
                for p in unshown
                if not self.env.leaves(
                    self._shown, self.env.universe[int(self._order[p])], self.window
                )
            ),
            unshown[0],  # every unshown video looks like a recent one: the best of them
        )
        self._taken[pos] = True
        video = self.env.universe[int(self._order[pos])]
        self._shown.append(video)
        return video


ABLATIONS: dict[str, str] = {"popular_lookalike": "popular"}
"""Interactive ablations and the peer each starts from (``LookAlikeAvoidingPeer``)."""


@dataclass
class SimResult:
    """Every session of one policy, and the summaries the report shows."""

    method: str
    sessions: list[Session]
    seconds: float
    params: SimParams
    events_stored: int = 0

    def summary(self) -> dict[str, float]:
        """reward: mean cumulative reward; length: mean videos per session;
        reward_per_step: total reward / total videos; top_category_share: share of all
        shown videos in the most-shown first-level category."""
        n = len(self.sessions)
        steps = sum(s.length for s in self.sessions)
        total = sum(s.reward for s in self.sessions)
        counts = Counter(c for s in self.sessions for c in s.categories)
        top = max((k for k in counts if k), key=lambda k: (counts[k], k), default=None)
        return {
            "reward": round(total / n, 4) if n else 0.0,
            "length": round(steps / n, 4) if n else 0.0,
            "reward_per_step": round(total / steps, 4) if steps else 0.0,
            "top_category_share": round(counts[top] / steps, 4) if steps and top else 0.0,
        }

    def details(self) -> dict[str, Any]:
        """Curves and counts for the report: mean reward at step k of the sessions that
        reached step k, how many reached it, the length histogram, how sessions ended."""
        cap = self.params.max_length
        reached = [0] * cap
        rewarded = [0] * cap
        lengths = [0] * (cap + 1)
        for s in self.sessions:
            lengths[min(s.length, cap)] += 1
            for k, r in enumerate(s.rewards[:cap]):
                reached[k] += 1
                rewarded[k] += r
        counts = Counter(c for s in self.sessions for c in s.categories)
        top = max((k for k in counts if k), key=lambda k: (counts[k], k), default="")
        return {
            "users": len(self.sessions),
            "reward_by_position": [
                round(rewarded[k] / reached[k], 4) if reached[k] else None for k in range(cap)
            ],
            "sessions_by_position": reached,
            "length_histogram": lengths,  # index = session length
            "ends": dict(Counter(s.end for s in self.sessions)),
            "repeats": sum(s.repeats for s in self.sessions),
            "top_category": top,
            "events_stored": self.events_stored,
            "seconds": round(self.seconds, 2),
        }


def play_session(policy: Policy, env: Environment, user_id: str, params: SimParams) -> Session:
    """Run one session of ``user_id`` under ``policy`` (see the module docstring)."""
    positives = env.truth.get(user_id, set())
    session = Session(user_id)
    shown: set[str] = set()
    policy.begin(user_id)
    for step in range(params.max_length):
        video = policy.next_video(user_id, step)
        if video is None:
            session.end = "exhausted"
            return session
        repeat = video in shown
        session.repeats += repeat
        positive = video in positives and not repeat
        leave = env.leaves(session.videos, video, params.leave_window)
        session.videos.append(video)
        session.rewards.append(int(positive))
        session.categories.append(env.category.get(video, ""))
        shown.add(video)
        policy.react(user_id, step, video, positive)
        if leave:
            session.end = "tag_repeat"
            return session
    session.end = "max_length"
    return session


def simulate(
    policy: Policy,
    env: Environment,
    users: Sequence[str],
    params: SimParams,
    log: Log = print,
    progress_s: float = 30.0,
) -> SimResult:
    """One session per user, in the given order; says how far it got every ``progress_s``."""
    started = last = time.perf_counter()
    sessions: list[Session] = []
    for n, user in enumerate(users, 1):
        sessions.append(play_session(policy, env, user, params))
        if n < len(users) and time.perf_counter() - last >= progress_s:
            last = time.perf_counter()
            log(f"{policy.name}: {n:,}/{len(users):,} users ({last - started:.0f} s)")
    seconds = time.perf_counter() - started
    stored = policy.events_stored if isinstance(policy, EnginePolicy) else 0
    return SimResult(policy.name, sessions, seconds, params, stored)


@contextmanager
def serving_threads(engine: bool) -> Iterator[None]:
    """One BLAS thread while the engine serves, as ``fyp serve`` pins it: the feed's
    small mat-vecs are ~8x slower when OpenBLAS wakes a second thread for each."""
    if not engine:
        yield
        return
    with threadpool_limits(1, "blas"):
        yield


def run_interactive(
    protocol: Protocol,
    params: SimParams,
    methods: Sequence[str] | None = None,
    log: Log = print,
    ablations: Sequence[str] = (),
    peers: Mapping[str, Callable[[int], Recommender]] = PEERS,
) -> dict[str, SimResult]:
    """Simulate every method (then every ablation, ``ABLATIONS``) on the protocol's
    test users.

    The engine (``"fyp"``) writes events and served rows into ``protocol.deployment``:
    run this after the offline part, on the evaluation's own deployment only."""
    env = Environment.from_protocol(protocol)
    users = sorted(env.truth, key=lambda u: (len(u), u))
    wanted = list(methods) if methods is not None else ["fyp", *peers]
    unknown = [m for m in wanted if m != "fyp" and m not in peers]
    unknown += [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise InvalidRequest(
            f"unknown methods {unknown}; known: fyp, {', '.join([*peers, *ABLATIONS])}"
        )
    out: dict[str, SimResult] = {}
    for name in [*wanted, *ablations]:
        started = time.perf_counter()
        policy: Policy
        if name == "fyp":
            policy = EnginePolicy(protocol.deployment, env, params)
        elif name in ABLATIONS:
            peer = ABLATIONS[name]
            make = peers.get(peer, PEERS[peer])  # fitted once with the peer, if shared
            policy = LookAlikeAvoidingPeer(name, protocol, env, make, params.seed).fit()
        else:
            policy = PeerPolicy(name, protocol, env, peers[name], params.seed).fit()
        with serving_threads(name == "fyp"):
            result = simulate(policy, env, users, params, log)
        result.seconds = time.perf_counter() - started  # peers: fitting included
        out[name] = result
        s = result.summary()
        log(
            f"interactive {name}: reward {s['reward']:.3f}, length {s['length']:.2f}, "
            f"reward/step {s['reward_per_step']:.3f} ({result.seconds:.1f} s)"
        )
    return out
