"""Docs stay in sync with the code: README commands, set-up, architecture references."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from fyp.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _commands() -> set[str]:
    group = typer.main.get_command(app)
    names: set[str] = set()
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        sub = getattr(command, "commands", None)
        if sub:
            names |= {f"{name} {s}" for s in sub}
        else:
            names.add(name)
    return names


def test_every_command_is_in_the_readme_table_and_back() -> None:
    commands = _commands()
    groups = {c.split()[0] for c in commands if " " in c}
    documented = set(re.findall(r"^\| `fyp ([a-z-]+(?: [a-z-]+)?)", README, re.M))
    documented = {d if d.split()[0] in groups else d.split()[0] for d in documented}
    assert commands == documented


def test_readme_setup_is_two_commands() -> None:
    block = README.split("## Set-up: two commands", 1)[1].split("```")[1]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()[1:]]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_architecture_names_real_modules() -> None:
    for dotted in set(re.findall(r"`(fyp(?:\.[a-z_]+)+)", ARCHITECTURE)) - {"fyp.toml"}:
        parts = dotted.split(".")
        # the longest importable prefix must exist as a module file or package
        for cut in range(len(parts), 1, -1):
            path = ROOT / "src" / Path(*parts[:cut])
            if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
                break
        else:
            raise AssertionError(f"docs/architecture.md names {dotted}, which does not exist")


def _options() -> dict[str, list[tuple[str, ...]]]:
    """Each command's long options (``--help`` aside), a flag with its ``--no-`` twin as
    one entry (naming either documents it)."""
    group = typer.main.get_command(app)
    out: dict[str, list[tuple[str, ...]]] = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(command, "commands", None) or {None: command}
        for sub_name, sub in subs.items():
            out[name if sub_name is None else f"{name} {sub_name}"] = [
                names
                for p in sub.params
                if (names := tuple(o for o in (*p.opts, *p.secondary_opts) if o.startswith("--")))
                and "--help" not in names
            ]
    return out


def test_every_option_is_in_its_commands_readme_row() -> None:
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `fyp ([a-z-]+(?: [a-z-]+)?).*$", README, re.M)
    }
    missing = {
        command: [names for names in options if not any(n in rows[command] for n in names)]
        for command, options in _options().items()
    }
    assert not {c: m for c, m in missing.items() if m}


def test_every_table_of_a_store_is_in_the_where_data_lives_table(tmp_path: Path) -> None:
    """docs/architecture.md's table of where each region's data lives names every table a
    region's store holds (with every migration applied), as `name` followed by a backtick,
    colon or bracket: a table added without saying where it lives and why fails here."""
    from fyp.audit.log import sql_store
    from fyp.regions.deployment import Deployment

    start = ARCHITECTURE.index("| data | where | why |")
    table = ARCHITECTURE[start : ARCHITECTURE.index("\n\n", start)]
    with Deployment.init(tmp_path / "d", ["us"]) as d:
        tables = sql_store(d.store("us")).table_names()
    assert "block_mirrors_owed" in tables and "users" in tables
    missing = [t for t in tables if not re.search(rf"`{t}[`:(]", table)]
    assert missing == [], f"tables not in docs/architecture.md's data table: {missing}"
