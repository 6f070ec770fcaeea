"""A self-contained HTML report of one evaluation run.

One file that can be mailed or attached to an issue and still shows everything: the
figures are PNGs embedded as base64 ``data:`` URIs (drawn with matplotlib's Agg
canvas, no display and no global pyplot state), the styling is inline, and nothing is
loaded from the network (no scripts, fonts or images from elsewhere).

Figures: offline metric bars per method; mean reward at each session position (of the
sessions that reached it) with the share of sessions still going; session-length
histograms per method. Tables: offline and interactive metrics, timings, config and
machine.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

OFFLINE_ORDER = (
    "ndcg@10",
    "ndcg@10_graded",
    "recall@10",
    "recall@50",
    "recall@50_of_all",
    "coverage@10",
    "diversity@10",
    "novelty@10",
)
INTERACTIVE_ORDER = ("reward", "length", "reward_per_step", "top_category_share")
COLOURS = {
    "fyp": "#d62728",
    "random": "#7f7f7f",
    "popular": "#ff7f0e",
    "als": "#1f77b4",
    "bpr": "#2ca02c",
    "ease": "#9467bd",
}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; } tr.engine td { font-weight: 600; }
img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
"""


def _colour(method: str, n: int) -> str:
    palette = ("#8c564b", "#e377c2", "#bcbd22", "#17becf")
    return COLOURS.get(method, palette[n % len(palette)])


def _png(fig: Any) -> str:
    """The figure as a base64 PNG drawn by the Agg canvas (no Software/URL metadata)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def offline_figure(
    offline: Mapping[str, Mapping[str, Any]],
    intervals: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """One bar chart per offline metric, one bar per method (with its 95 % interval
    where ``intervals`` has one)."""
    from matplotlib.figure import Figure

    methods = list(offline)
    metrics = [m for m in OFFLINE_ORDER if any(m in offline[x] for x in methods)]
    cols = 4
    rows = max(1, math.ceil(len(metrics) / cols))
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows))
    for n, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, n + 1)
        values = [float(offline[m].get(metric, 0.0)) for m in methods]
        errors = _errors(values, [(intervals or {}).get(m, {}).get(metric) for m in methods])
        bars = ax.bar(
            methods,
            values,
            color=[_colour(m, i) for i, m in enumerate(methods)],
            yerr=errors,
            error_kw={"elinewidth": 0.8, "capsize": 2},
        )
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_title(metric, fontsize=10)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.margins(y=0.15)
    fig.suptitle("Offline metrics (test users, all test videos ranked)")
    fig.tight_layout()
    return _png(fig)


def _errors(values: Sequence[float], found: Sequence[Mapping[str, Any] | None]) -> Any:
    """matplotlib's asymmetric error bars (below, above) from intervals; None if any
    method has none (an older results.json)."""
    if any(f is None for f in found):
        return None
    below = [max(0.0, v - float(f["ci95"][0])) for v, f in zip(values, found, strict=True) if f]
    above = [max(0.0, float(f["ci95"][1]) - v) for v, f in zip(values, found, strict=True) if f]
    return [below, above]


def uncertainty_tables(part: Mapping[str, Any], order: Sequence[str]) -> str:
    """The intervals per method, and fyp against each peer, as two HTML tables."""
    intervals: Mapping[str, Mapping[str, Any]] = part.get("intervals", {})
    versus: Mapping[str, Mapping[str, Any]] = part.get("fyp_vs", {})
    if not intervals:
        return ""
    rows = {m: {k: _interval(f) for k, f in figs.items()} for m, figs in intervals.items()}
    out = [table(rows, _columns(rows, order))]
    if versus:
        from fyp.evaluation.uncertainty import difference_text

        vs = {
            f"fyp − {m}": {k: difference_text(f) for k, f in figs.items()}
            for m, figs in versus.items()
        }
        out += [
            '<p class="note">fyp against each peer on the same users: the mean per-user '
            "difference, its 95 % interval and the paired t-test's p (an interval that "
            "excludes 0 is a difference this sample of users supports).</p>",
            table(vs, _columns(vs, order)),
        ]
    return "\n".join(out)


def _interval(f: Mapping[str, Any]) -> str:
    low, high = f["ci95"]
    return f"{f['mean']:.4f} [{low:.4f}, {high:.4f}]"


def min_sessions(users: int) -> int:
    """Fewest sessions a position needs to be plotted: a mean of 2 sessions is noise."""
    return max(5, users // 100)


def position_figure(details: Mapping[str, Mapping[str, Any]]) -> str:
    """Mean reward at step k of the sessions that reached it (positions reached by at
    least :func:`min_sessions` sessions), and the share of sessions still going."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4))
    reward_ax = fig.add_subplot(1, 2, 1)
    alive_ax = fig.add_subplot(1, 2, 2)
    for n, (method, d) in enumerate(details.items()):
        users = max(int(d["users"]), 1)
        enough = min_sessions(users)
        curve = [
            math.nan if v is None or reached < enough else float(v)
            for v, reached in zip(d["reward_by_position"], d["sessions_by_position"], strict=True)
        ]
        steps = list(range(1, len(curve) + 1))
        alive = [c / users for c in d["sessions_by_position"]]
        reward_ax.plot(steps, curve, marker=".", label=method, color=_colour(method, n))
        alive_ax.plot(steps, alive, marker=".", label=method, color=_colour(method, n))
    reward_ax.set(title="Mean reward at session position", xlabel="step", ylabel="P(positive)")
    alive_ax.set(title="Sessions still going", xlabel="step", ylabel="share of users")
    for ax in (reward_ax, alive_ax):
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def length_figure(details: Mapping[str, Mapping[str, Any]]) -> str:
    """Histogram of session lengths, one panel per method on shared axes."""
    from matplotlib.figure import Figure

    methods = list(details)
    cols = 3
    rows = max(1, math.ceil(len(methods) / cols))
    fig = Figure(figsize=(4 * cols, 2.6 * rows))
    first = None
    for n, method in enumerate(methods):
        ax = fig.add_subplot(rows, cols, n + 1, sharex=first, sharey=first)
        first = first or ax
        hist = list(details[method]["length_histogram"])
        ax.bar(range(1, len(hist)), hist[1:], color=_colour(method, n), width=0.9)
        ax.set_title(f"{method} (mean {_mean_length(hist):.1f})", fontsize=10)
        ax.set_xlabel("videos in session", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.suptitle("Session length distribution")
    fig.tight_layout()
    return _png(fig)


def _mean_length(hist: Sequence[int]) -> float:
    total = sum(hist)
    return sum(k * c for k, c in enumerate(hist)) / total if total else 0.0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    if value is None:
        return "-"
    return str(value)


def table(
    rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], first: str = "method"
) -> str:
    """An HTML table: one row per method (the engine row in bold), one column per key."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (first, *columns))
    body = []
    for method, values in rows.items():
        cls = ' class="engine"' if method == "fyp" else ""
        cells = "".join(f"<td>{html.escape(_fmt(values.get(c)))}</td>" for c in columns)
        body.append(f"<tr{cls}><td>{html.escape(method)}</td>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pairs(values: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table><tbody>{rows}</tbody></table>"


def _columns(rows: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> list[str]:
    keys = {k for values in rows.values() for k in values}
    return [k for k in order if k in keys] + sorted(keys - set(order))


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _head(title: str) -> list[str]:
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>fyp evaluation: {html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>fyp evaluation — {html.escape(title)}</h1>",
    ]


def _figures_available(parts: list[str]) -> bool:
    """Whether matplotlib can draw the figures (a note in ``parts`` if not)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parts.append(
            '<p class="note">matplotlib is not installed (pip install "fyp[report]"): '
            "tables only.</p>"
        )
        return False
    return True


def _source(results: Mapping[str, Any]) -> str:
    if results.get("protocol") == "deployment":
        source = "the deployment's own events (fyp eval deployment)"
    else:
        source = "KuaiRec (Gao et al., CIKM 2022), CC BY-SA 4.0"
    return f'<p class="note">Data: {html.escape(source)}.</p></body></html>'


def render_html(results: Mapping[str, Any], details: Mapping[str, Mapping[str, Any]]) -> str:
    """The report as one HTML string (figures embedded)."""
    parts = _head(str(results.get("protocol", "")))
    figures = _figures_available(parts)
    parts += _sections(results, details, figures)
    parts.append(_source(results))
    return "\n".join(parts)


def render_regions_html(results: Mapping[str, Any]) -> str:
    """The report of ``fyp eval deployment`` over every region: a summary, then each
    region's sections (or why it could not be evaluated)."""
    regions: Mapping[str, Mapping[str, Any]] = results.get("regions", {})
    parts = _head(f"{results.get('protocol', '')}, every region")
    figures = _figures_available(parts)
    summary: dict[str, dict[str, Any]] = {}
    for name, part in regions.items():
        config, offline = part.get("config", {}), part.get("offline", {})
        best = max(
            (m for m in offline if not m.startswith("fyp")),
            key=lambda m: offline[m].get("ndcg@10", 0.0),
            default=None,
        )
        summary[name] = {
            "test users": config.get("test_users"),
            "newcomers": config.get("newcomers"),
            "fyp ndcg@10": offline.get("fyp", {}).get("ndcg@10"),
            "best peer": best,
            "its ndcg@10": None if best is None else offline[best].get("ndcg@10"),
            "error": part.get("error", {}).get("message"),
        }
    parts += [
        "<h2>Regions</h2>",
        '<p class="note">Each region evaluated in its own copy, from its own events and '
        "catalogue: figures do not mix regions.</p>",
        table(
            summary,
            ["test users", "newcomers", "fyp ndcg@10", "best peer", "its ndcg@10", "error"],
            "region",
        ),
    ]
    for name, part in regions.items():
        parts.append(f'<h1 id="region-{html.escape(name)}">Region {html.escape(name)}</h1>')
        if "error" in part:
            message = str(part["error"].get("message", ""))
            parts.append(f'<p class="note">not evaluated: {html.escape(message)}</p>')
            continue
        parts += _sections(part, {}, figures)
    parts += ["<h2>Run</h2>", _pairs(_flatten(results.get("config", {})))]
    parts += [_pairs(_flatten({"seconds": results.get("seconds", {})}))]
    parts += ["<h2>Machine</h2>", _pairs(results.get("machine", {}))]
    parts.append(_source(results))
    return "\n".join(parts)


def _sections(
    results: Mapping[str, Any], details: Mapping[str, Mapping[str, Any]], figures: bool
) -> list[str]:
    """One run's sections: offline, newcomers, interactive, timings, config, machine."""
    offline: Mapping[str, Mapping[str, Any]] = results.get("offline", {})
    interactive: Mapping[str, Mapping[str, Any]] = results.get("interactive", {})
    parts: list[str] = []
    uncertainty: Mapping[str, Any] = results.get("uncertainty", {})
    parts.append("<h2>Offline</h2>")
    parts += _offline(offline, uncertainty.get("offline", {}), figures)
    newcomers: Mapping[str, Mapping[str, Any]] = results.get("offline_newcomers", {})
    if newcomers:
        parts.append(
            "<h2>Offline, newcomers</h2>"
            '<p class="note">Users with no event before the cut: the feed saw their first '
            "events after it (no model learned them; the peers fitted on them) and ranked "
            "for what they liked next.</p>"
        )
        parts += _offline(newcomers, uncertainty.get("offline_newcomers", {}), figures)
    parts.append("<h2>Interactive</h2>")
    if interactive:
        parts.append(
            '<p class="note">Each test user scrolls one video at a time; reward 1 for a '
            "test positive; the user leaves when a video shares a tag with one of the "
            "previous 4, or after 30 videos. Mean reward at a position is over the sessions "
            "that reached it (plotted where at least 1 % of sessions, and 5, did).</p>"
        )
        rows = {
            m: {
                **interactive[m],
                "repeats": details.get(m, {}).get("repeats"),
                "users": details.get(m, {}).get("users"),
            }
            for m in interactive
        }
        parts.append(table(rows, [*INTERACTIVE_ORDER, "repeats", "users"]))
        found = uncertainty.get("interactive", {})
        if found:
            parts += ["<h3>95 % intervals</h3>", uncertainty_tables(found, INTERACTIVE_ORDER)]
        shown = {m: d for m, d in details.items() if m in interactive}
        if figures and shown:
            parts.append(_img(position_figure(shown), "reward by session position"))
            parts.append(_img(length_figure(shown), "session length distribution"))
        ablations: Mapping[str, Mapping[str, Any]] = results.get("interactive_ablations", {})
        if ablations:
            parts.append(
                "<h3>Ablation</h3>"
                "<p class=\"note\">A peer's ranking shown under fyp's look-alike rule (its "
                "best unshown video that shares no tag with the last 4 shown): how much of "
                "fyp's interactive lead the rule alone explains.</p>"
            )
            parts.append(table(ablations, list(INTERACTIVE_ORDER)))
    else:
        parts.append('<p class="note">not run</p>')
    seconds = results.get("seconds", {})
    flat = {k: v for k, v in seconds.items() if not isinstance(v, Mapping)}
    parts += ["<h2>Timings (seconds)</h2>", _pairs(flat)]
    for key, value in seconds.items():
        if isinstance(value, Mapping):
            parts += [f"<p>{html.escape(key)}</p>", _pairs(value)]
    parts += ["<h2>Config</h2>", _pairs(_flatten(results.get("config", {})))]
    parts += ["<h2>Machine</h2>", _pairs(results.get("machine", {}))]
    return parts


def _offline(
    rows: Mapping[str, Mapping[str, Any]], found: Mapping[str, Any], figures: bool
) -> list[str]:
    """One offline section: the bars, the table and the intervals."""
    if not rows:
        return ['<p class="note">not run</p>']
    parts = []
    if figures:
        parts.append(
            _img(offline_figure(rows, found.get("intervals")), "offline metrics per method")
        )
    parts.append(table(rows, _columns(rows, OFFLINE_ORDER)))
    if found:
        parts += ["<h3>95 % intervals</h3>", uncertainty_tables(found, OFFLINE_ORDER)]
    return parts


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = ", ".join(map(str, v)) if isinstance(v, list | tuple) else v
    return out


def write_regions_report(results: Mapping[str, Any], path: Path) -> Path:
    """Write ``render_regions_html`` to ``path``, as :func:`write_report` does."""
    return _write(Path(path), render_regions_html(results))


def write_report(
    results: Mapping[str, Any], details: Mapping[str, Mapping[str, Any]], path: Path
) -> Path:
    """Write ``render_html`` to ``path`` (atomically: a half-written report never shows)."""
    return _write(Path(path), render_html(results, details))


def _write(path: Path, text: str) -> Path:
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
