"""How sure an evaluation's figures are: a 95 % interval per figure, and the engine
against each peer on the same users.

A mean over 1,411 test users moves by about a hundredth between samples of users, and
the engine's lead over popularity is a few hundredths, so a figure without its interval
cannot say whether a difference is real. Every figure that is a mean over users (NDCG,
recall, diversity, novelty; a session's reward and length) gets a percentile bootstrap
interval over the test users (``RESAMPLES`` resamples, seeded by ``fyp eval --seed``;
:func:`scipy.stats.bootstrap`); reward per step, a ratio of sums over sessions, is
resampled by session the same way. Catalogue coverage and the top category's share are
properties of all lists together and get none.

The engine and a peer rank the same users, so they are compared per user (paired):
the mean difference (engine minus peer), its bootstrap interval, and the paired t-test's
two-sided p-value (:func:`scipy.stats.ttest_rel`; None for the ratio, whose interval
says it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RESAMPLES = 2_000
LEVEL = 0.95
ENGINE = "fyp"
_TINY = 1e-12
RATIO = "reward_per_step"  # sum(rewards) / sum(lengths): resampled by session
METHOD = (
    f"percentile bootstrap over test users ({RESAMPLES:,} resamples, the run's seed), "
    f"{LEVEL:.0%} intervals; fyp against each peer per user (paired): the mean difference, "
    "its bootstrap interval and the paired t-test's two-sided p"
)


def interval(values: Sequence[float] | np.ndarray, seed: int) -> dict[str, Any]:
    """The mean of ``values`` and its bootstrap interval."""
    x = np.asarray(values, np.float64)
    return {"mean": _r(float(x.mean())) if len(x) else 0.0, "ci95": _ci((x,), _mean, seed)}


def ratio_interval(num: Sequence[float], den: Sequence[float], seed: int) -> dict[str, Any]:
    """sum(num) / sum(den) and its bootstrap interval, resampling (num, den) pairs."""
    n, d = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return {"mean": _r(float(_ratio(n, d, -1))), "ci95": _ci((n, d), _ratio, seed)}


def compare(engine: Sequence[float], peer: Sequence[float], seed: int) -> dict[str, Any]:
    """The engine against a peer on the same users (the same order): the mean per-user
    difference, its bootstrap interval, and the paired t-test's p."""
    from scipy import stats

    a, b = np.asarray(engine, np.float64), np.asarray(peer, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values of different lengths: {len(a)} and {len(b)}")
    diff = a - b
    if len(diff) < 2:
        p: float | None = None
    elif _flat(diff):  # every user moved by the same amount: no variance to test
        p = 1.0 if abs(diff[0]) <= _TINY else 0.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    return {
        "diff": _r(float(diff.mean())) if len(diff) else 0.0,
        "ci95": _ci((diff,), _mean, seed),
        "p": None if p is None else float(f"{p:.3g}"),
    }


def compare_ratio(
    engine: tuple[Sequence[float], Sequence[float]],
    peer: tuple[Sequence[float], Sequence[float]],
    seed: int,
) -> dict[str, Any]:
    """Difference of two ratios of sums over the same users' sessions, and its interval."""
    a, b, c, d = (np.asarray(v, np.float64) for v in (*engine, *peer))

    def diff(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, axis: int) -> Any:
        return _ratio(a, b, axis) - _ratio(c, d, axis)

    return {
        "diff": _r(float(diff(a, b, c, d, -1))),
        "ci95": _ci((a, b, c, d), diff, seed),
        "p": None,
    }


def figures(
    per_user: Mapping[str, Mapping[str, Sequence[float]]],
    seed: int,
    ratios: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Intervals per method and figure, and the engine against every peer.

    ``per_user``: method -> figure -> one value per user, every method in the same user
    order; ``ratios``: figures that are a ratio of two of those (name -> (num, den))."""
    ratios = ratios or {}
    out: dict[str, Any] = {"intervals": {}, "fyp_vs": {}}
    for method, values in per_user.items():
        row = {k: interval(v, seed) for k, v in values.items()}
        for name, (num, den) in ratios.items():
            row[name] = ratio_interval(values[num], values[den], seed)
        out["intervals"][method] = row
    engine = per_user.get(ENGINE)
    if engine is None:
        return out
    for method, values in per_user.items():
        if method == ENGINE:
            continue
        row = {k: compare(engine[k], v, seed) for k, v in values.items() if k in engine}
        for name, (num, den) in ratios.items():
            row[name] = compare_ratio((engine[num], engine[den]), (values[num], values[den]), seed)
        out["fyp_vs"][method] = row
    return out


def difference_text(f: Mapping[str, Any]) -> str:
    """A comparison of :func:`compare` for people: ``+0.0395 [+0.0348, +0.0442] p=4.6e-55``."""
    low, high = f["ci95"]
    p = "" if f.get("p") is None else f" p={p_text(f['p'])}"
    return f"{f['diff']:+.4f} [{low:+.4f}, {high:+.4f}]{p}"


def p_text(p: float) -> str:
    """A p-value for people: 2 significant digits; one below double precision is said so."""
    return "<1e-300" if p == 0 else f"{p:.2g}"


def _ci(data: tuple[np.ndarray, ...], statistic: Any, seed: int) -> list[float]:
    from scipy import stats

    if len(data[0]) < 2 or all(_flat(x) for x in data):
        value = float(statistic(*data, axis=-1)) if len(data[0]) else 0.0
        return [_r(value), _r(value)]  # nothing to resample: no spread
    res = stats.bootstrap(
        data,
        statistic,
        n_resamples=RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",
        paired=len(data) > 1,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return [_r(float(res.confidence_interval.low)), _r(float(res.confidence_interval.high))]


def _flat(x: np.ndarray) -> bool:
    """No spread beyond float rounding (a difference of two equal lists, less a constant)."""
    return bool(np.ptp(x) <= _TINY * max(1.0, float(np.abs(x).max())))


def _mean(x: np.ndarray, axis: int) -> Any:
    return np.mean(x, axis=axis)


def _ratio(num: np.ndarray, den: np.ndarray, axis: int) -> Any:
    total = np.sum(den, axis=axis)
    return np.divide(np.sum(num, axis=axis), total, out=np.zeros_like(total), where=total != 0)


def _r(value: float) -> float:
    return round(value, 4)
