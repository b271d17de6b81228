"""How the README says to run the tests is how the project is configured to run them: the one command, the parallel
default and how to leave it, the markers that select or leave out suites, and CI calling the same command."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PYTEST = PYPROJECT["tool"]["pytest"]["ini_options"]
COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/pytest"


def addopts() -> list[str]:
    return shlex.split(PYTEST["addopts"])


def test_the_readme_command_is_the_one_ci_runs_and_ci_runs_the_slow_suites_too() -> None:
    assert f"\n{COMMAND}\n" in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"\n{COMMAND}\n" in ci
    assert "\n.venv/bin/pytest -m slow -n 0 " in ci


def test_the_default_run_leaves_out_the_slow_suites_which_are_marked() -> None:
    options = addopts()
    assert options[options.index("-m") + 1] == "not slow"
    assert any(marker.startswith("slow:") for marker in PYTEST["markers"])
    assert "`.venv/bin/pytest -m slow -n 0` runs them, in one process" in README


def test_the_default_run_is_spread_over_one_process_per_core_by_whole_files_and_the_readme_says_so() -> None:
    options = addopts()
    assert options[options.index("-n") + 1] == "auto"
    assert options[options.index("--dist") + 1] == "loadfile"
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(re.match(r"pytest-xdist>=\d", requirement) for requirement in dev)
    assert "one process per core" in README and "`-n 0`" in README


@pytest.mark.parametrize(("selection", "marker"), [("-m unit", "unit"), ("-m architecture", "architecture"),
                                                   ('-m "not postgres"', "postgres"), ("-m slow -n 0", "slow")])
def test_every_selection_the_readme_names_is_a_declared_marker(selection: str, marker: str) -> None:
    assert f"{selection}`" in README
    assert any(line.startswith(f"{marker}:") for line in PYTEST["markers"])
