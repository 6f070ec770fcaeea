"""``fyp demo`` and ``fyp import`` through the real Typer app."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fyp.cli.app import app
from fyp.datasets.demo import build_demo, sample_dir
from fyp.errors import InvalidRequest
from fyp.regions.deployment import Deployment

runner = CliRunner()


def test_demo_builds_prints_and_can_be_rerun(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--no-serve", "--dir", str(target)])
    assert result.exit_code == 0, result.output
    assert "curl -s -X POST http://127.0.0.1:8000/v1/users" in result.output
    assert "/v1/events" in result.output and "rows/s" in result.output
    assert "CC BY-SA 4.0" in result.output
    with Deployment.open(target) as d:
        counts = {
            r: (s.count_users(), s.count_events(), s.count_labels()) for r, s in d.stores.items()
        }
    assert sum(c[0] for c in counts.values()) == 1000
    assert sum(c[2] for c in counts.values()) == 21_274

    again = runner.invoke(app, ["demo", "--no-serve", "--dir", str(target), "--port", "9001"])
    assert again.exit_code == 0, again.output
    assert "http://127.0.0.1:9001/v1/users/alice" in again.output
    with Deployment.open(target) as d:
        assert {
            r: (s.count_users(), s.count_events(), s.count_labels()) for r, s in d.stores.items()
        } == counts


@pytest.mark.parametrize("port", ["70000", "-1", "0"])
def test_demo_refuses_a_bad_port_before_building(tmp_path: Path, port: str) -> None:
    """It built (imported, trained) the whole demo, then bind() raised a traceback."""
    target = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--dir", str(target), "--port", port])
    assert result.exit_code == 2, result.output
    assert "--port" in result.output and "Traceback" not in result.output
    assert not target.exists()


def test_build_demo_reuses_an_existing_deployment(tmp_path: Path) -> None:
    with Deployment.init(tmp_path / "d", ["eu"]):
        pass
    demo = build_demo(tmp_path / "d", ("us", "eu"))
    assert demo.regions == ["eu"]
    assert demo.report.totals["eu"].users == 1000
    with Deployment.open(tmp_path / "d") as d:
        assert d.store("eu").get_user(demo.example_user) is not None
        assert d.store("eu").get_video(demo.example_video) is not None


def test_import_commands(tmp_path: Path) -> None:
    target = tmp_path / "dep"
    assert runner.invoke(app, ["init", str(target), "--regions", "us,eu"]).exit_code == 0
    result = runner.invoke(app, ["import", "kuairec-ear", str(target), "--data", str(sample_dir())])
    assert result.exit_code == 0, result.output
    assert "28,146 interaction rows" in result.output
    assert "regions[user_id % 2]" in result.output
    fixture = Path(__file__).parent / "fixtures" / "kuairec_official"
    result = runner.invoke(
        app, ["import", "kuairec", str(target), "--data", str(fixture), "--split-protocol"]
    )
    assert result.exit_code == 0, result.output
    assert "kuairec-small.csv" in result.output

    missing = runner.invoke(app, ["import", "kuairec-ear", str(target), "--data", str(tmp_path)])
    assert isinstance(missing.exception, InvalidRequest)  # main() turns it into exit code 2
    assert "import" in runner.invoke(app, ["import", "--help"]).output
    help_text = runner.invoke(app, ["import", "kuairec-ear", "--help"]).output
    assert "len(regions)" in help_text
