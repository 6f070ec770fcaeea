"""report.html is one self-contained file with the figures and tables in it."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from fyp.evaluation.report import min_sessions, render_html, write_report

METHODS = ("fyp", "random", "popular", "als", "bpr", "ease")
PNG = b"\x89PNG\r\n\x1a\n"


def fake_results(interactive: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    offline = {
        m: {
            "ndcg@10": 0.1 * (n + 1),
            "recall@10": 0.05 * (n + 1),
            "recall@50": 0.3,
            "coverage@10": 0.2,
            "diversity@10": 0.9,
            "novelty@10": 5.5,
            "users": 10,
        }
        for n, m in enumerate(METHODS)
    }
    summaries: dict[str, Any] = {}
    details: dict[str, Any] = {}
    if interactive:
        for n, m in enumerate(METHODS):
            summaries[m] = {
                "reward": 1.0 + n,
                "length": 3.0 + n,
                "reward_per_step": 0.25,
                "top_category_share": 0.4,
            }
            reached = [10] * (3 + n) + [0] * (27 - n)
            details[m] = {
                "users": 10,
                "reward_by_position": [0.5 if r else None for r in reached],
                "sessions_by_position": reached,
                "length_histogram": [0] * (3 + n) + [10] + [0] * (27 - n),
                "ends": {"tag_repeat": 10},
                "repeats": 0,
            }
    results = {
        "protocol": "kuairec-ear",
        "offline": offline,
        "interactive": summaries,
        "seconds": {"import": 1.5, "total": 9.0, "offline_methods": {"fyp": 2.0}},
        "machine": {"cpu": "test cpu <b>", "cores": 2},
        "config": {"seed": 0, "regions": ["global"], "users": None},
    }
    return results, details


def images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_is_self_contained_with_three_figures(tmp_path: Path) -> None:
    results, details = fake_results()
    path = write_report(results, details, tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    pngs = images(page)
    assert len(pngs) == 3 and all(p.startswith(PNG) for p in pngs)
    # every src is an embedded image: nothing is fetched
    assert re.findall(r'src="([^"]{0,22})', page) == ["data:image/png;base64,"] * 3
    for method in METHODS:
        assert f"<td>{method}</td>" in page
    assert "<td>0.6000</td>" in page  # ease's ndcg@10 in the offline table
    assert "reward_per_step" in page and "top_category_share" in page
    assert "test cpu &lt;b&gt;" in page  # escaped
    assert not (tmp_path / "report.html.partial").exists()


def test_report_without_interactive_has_only_the_offline_figure() -> None:
    results, details = fake_results(interactive=False)
    page = render_html(results, details)
    assert len(images(page)) == 1
    assert "not run" in page


def test_sparse_positions_are_not_plotted() -> None:
    assert min_sessions(10) == 5 and min_sessions(1411) == 14


def test_the_report_shows_intervals_and_fyp_against_each_peer() -> None:
    from fyp.evaluation.uncertainty import figures

    results, details = fake_results()
    per_user = {
        m: {"ndcg@10": [0.1 * (n + 1) + 0.01 * k for k in range(-2, 3)]}
        for n, m in enumerate(METHODS)
    }
    results["uncertainty"] = {"offline": figures(per_user, seed=0), "interactive": {}}
    page = render_html(results, details)
    fyp = results["uncertainty"]["offline"]["intervals"]["fyp"]["ndcg@10"]
    low, high = fyp["ci95"]
    assert f"0.1000 [{low:.4f}, {high:.4f}]" in page
    versus = results["uncertainty"]["offline"]["fyp_vs"]["popular"]["ndcg@10"]
    assert versus["diff"] == -0.2 and "fyp − popular" in page
    assert f"{versus['diff']:+.4f} [" in page and "p=" in page
    assert len(images(page)) == 3  # the offline figure drew its error bars
