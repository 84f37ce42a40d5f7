"""The README is a guide: short, every command in it real and every command of zoo in it, its links alive."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from zoo_cli.main import build_parser

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands() -> set[str]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def test_the_readme_is_a_guide_of_at_most_250_lines() -> None:
    assert len(README.splitlines()) <= 250


def test_the_readme_gives_every_command_one_line_and_an_example() -> None:
    rows = [line for line in README.splitlines() if re.match(r"\| `zoo [a-z-]+` \|", line)]
    listed = [re.match(r"\| `zoo ([a-z-]+)`", row).group(1) for row in rows]  # type: ignore[union-attr]
    assert sorted(listed) == sorted(_commands())
    for name, row in zip(listed, rows, strict=True):
        assert f"`zoo {name} " in row.rsplit("|", 2)[-2], f"no example for zoo {name}"


def test_every_link_of_the_readme_and_docs_leads_to_a_file() -> None:
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", document.read_text(encoding="utf-8")):
            if not target.startswith("http"):
                assert (document.parent / target).exists(), f"{document.name} links to a missing {target}"


def test_the_readme_shows_the_cpu_only_install_and_the_browser_switch() -> None:
    assert 'pip install -e ".[dev]"' in README
    assert "--index-url https://download.pytorch.org/whl/cpu" in README
    assert "python -m pytest --run-slow" in README
    assert "ZOO_REQUIRE_BROWSER=1" in README
    assert "ZOO_REQUIRE_BROWSER=1" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_layout_names_every_package_folder() -> None:
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    folders = sorted(str(init.parent.relative_to(ROOT)) for package in ("zoo", "finetune", "zoo_cli")
                     for init in (ROOT / package).rglob("__init__.py"))
    # A nested folder may be named from its parent's line (``serve/`` under shipping).
    unnamed = [folder for folder in folders if f"`{folder}/`" not in layout and f"`{Path(folder).name}/`" not in layout]
    assert not unnamed, f"README's Layout section does not name {unnamed}"
