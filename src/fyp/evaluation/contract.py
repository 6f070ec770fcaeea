"""What the evaluation needs of a recommender, checked in milliseconds before a run.

A peer ranks for minutes next to fyp (``fyp eval ... --peer``). If it scores a cold user
with NaN, changes the matrix it was given or gives other scores for the same seed, the
figures it earns mean nothing, and the run would only say so at the end, if at all (one
fit serves both parts of a run, so scores must not change when asked again either). So
each check here fits the recommender on small random users x items matrices of positives
(user 0 has none, nor has the last item) and returns what it found wrong, as sentences.
The project's own peers pass the same checks in its test suite
(``tests/contracts/recommender_contract.py``).

Problems make a peer unusable; a *warning* (a user's scores depend on the order of the
other users' rows) is reported and the run goes on: stochastic fits such as BPR's do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from fyp.evaluation.baselines import Recommender

Make = Callable[[int], Recommender]
"""A seed -> a new, unfitted recommender (what ``PEERS`` holds)."""
SEED = 7


def matrix(seed: int, users: int = 30, items: int = 40) -> sp.csr_matrix:
    """Positives at ~15 % density (1.0 each); user 0 has none, nor has the last item."""
    x = sp.random(users, items, density=0.15, random_state=seed, format="lil")
    x[0, :] = 0
    x[:, items - 1] = 0
    out = sp.csr_matrix(x)
    out.data[:] = 1.0
    out.eliminate_zeros()
    return out


def matrices() -> list[sp.csr_matrix]:
    """The matrices every check runs on (new copies: a check may find one changed)."""
    return [matrix(0), matrix(1, users=12, items=25)]


def all_scores(r: Recommender, x: sp.csr_matrix, users: list[int]) -> np.ndarray:
    items = np.arange(x.shape[1])
    return np.stack([np.asarray(r.scores(u, items), np.float64) for u in users])


def built_problems(make: Make) -> list[str]:
    r = make(SEED)
    if not isinstance(r, Recommender):
        return [f"builds a {type(r).__name__}, not a fyp.evaluation.Recommender"]
    if not isinstance(r.name, str) or not r.name or r.name == Recommender.name:
        return ["has no name of its own (set the class attribute `name`)"]
    return []


def fit_problems(make: Make, x: sp.csr_matrix) -> list[str]:
    before = x.copy()
    r = make(SEED)
    problems = [] if r.fit(x) is r else ["fit does not return the recommender itself"]
    if (x != before).nnz or x.dtype != before.dtype or x.format != "csr":
        problems.append("fit changed the matrix it was given")
    return problems


def score_problems(make: Make, x: sp.csr_matrix) -> list[str]:
    """One finite float score per item asked for, any items in any order (none too),
    for every user, the cold one included; ``items`` left as it was."""
    r = make(SEED).fit(x)
    n_users, n_items = x.shape
    rng = np.random.default_rng(0)
    asked = [
        np.arange(n_items),
        rng.permutation(n_items)[: n_items // 3],  # some, in any order
        np.asarray([n_items - 1, 0, n_items - 1]),  # an item nobody liked, and again
        np.zeros(0, np.int64),
    ]
    for user in range(n_users):  # user 0: cold
        for items in asked:
            kept = items.copy()
            scores = np.asarray(r.scores(user, items))
            what = f"user {user}{' (no positives)' if user == 0 else ''}, {len(items)} items"
            if scores.shape != items.shape:
                return [f"{what}: {scores.shape[0] if scores.ndim else 0} scores, not one per item"]
            if scores.dtype.kind != "f":
                return [f"{what}: scores of dtype {scores.dtype}, not floats"]
            if not np.isfinite(scores).all():
                return [f"{what}: scores that are not finite ({scores[~np.isfinite(scores)][:3]})"]
            if not (items == kept).all():
                return [f"{what}: scores changed the items array it was given"]
    return []


def determinism_problems(make: Make, x: sp.csr_matrix) -> list[str]:
    users = list(range(x.shape[0]))
    first = all_scores(make(SEED).fit(x), x, users)
    again = all_scores(make(SEED).fit(x.copy()), x, users)
    if first.tolist() != again.tolist():
        return ["the same seed and data gave other scores: figures would not repeat"]
    return []


def repeat_problems(make: Make, x: sp.csr_matrix) -> list[str]:
    """A user's scores are the same when asked again after the other users': one fit
    serves the offline ranking and the simulator (fyp.evaluation.baselines.SharedFits)."""
    r = make(SEED).fit(x)
    users = list(range(x.shape[0]))
    first = all_scores(r, x, users)
    if first.tolist() != all_scores(r, x, users[::-1])[::-1].tolist():
        return ["a user's scores changed when asked again: scores must not depend on earlier calls"]
    return []


def row_order_problems(make: Make, x: sp.csr_matrix) -> list[str]:
    """A user's scores do not depend on the order of the matrix's rows (row ``j`` of the
    shuffled matrix is user ``order[j]`` of the original)."""
    order = np.random.default_rng(1).permutation(x.shape[0])
    before = all_scores(make(SEED).fit(x), x, order.tolist())
    after = all_scores(make(SEED).fit(sp.csr_matrix(x[order])), x, list(range(x.shape[0])))
    # iterative fits start each row from its own random draw: equal to ~1e-4 of scale
    scale = max(1.0, float(np.abs(before).max()))
    if not np.allclose(after, before, rtol=0, atol=1e-3 * scale):
        return ["a user's scores depend on the order of the other users' rows"]
    return []


CHECKS: tuple[Callable[[Make, sp.csr_matrix], list[str]], ...] = (
    fit_problems,
    score_problems,
    determinism_problems,
    repeat_problems,
)


@dataclass
class ContractReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_recommender(make: Make) -> ContractReport:
    """Run every check; an exception a recommender raises is a problem, not a crash."""
    report = ContractReport()

    def run(check: Callable[..., list[str]], *args: object) -> list[str]:
        try:
            return check(*args)
        except Exception as exc:  # whatever a peer raises is its problem
            return [f"{check.__name__.removesuffix('_problems')}: raised {exc!r}"]

    report.problems += run(built_problems, make)
    if report.problems:
        return report
    for k, x in enumerate(matrices()):
        for check in CHECKS:
            report.problems += [f"matrix {k}: {p}" for p in run(check, make, x)]
        report.warnings += [f"matrix {k}: {p}" for p in run(row_order_problems, make, x)]
    return report
