"""The structure guard: the layout's rules that a reviewer would otherwise have to remember, checked with the suite.

The import contracts live in ``pyproject.toml`` (``[tool.importlinter]``) and run through ``lint-imports``; what
import-linter cannot say is grepped here: only ``storage/dialect.py`` looks at which database it talks to, and no module
grows past 500 lines. ``ruff check`` and ``mypy`` run with the project's own configuration, so CI (the README's test
command) runs them too. Each failure prints the offenders or the tool's output.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.architecture

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "nurture"
BIN = Path(sys.executable).parent  # the venv's scripts, next to its interpreter

MAX_LINES = 500
DIALECT_NAME = re.compile(r"\bdialect\.name\b")
# Only these may ask which back-end a connection talks to: the dialect module owns every SQLite/PostgreSQL
# difference, and Alembic's environment picks batch mode for SQLite before any of nurture's code runs.
MAY_INSPECT_DIALECT = {"storage/dialect.py", "migrations/env.py"}


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def passes(*args: str | Path, timeout: float = 600) -> None:
    """Run the tool from the repository root (its configuration is pyproject.toml); fail with all it printed."""
    result = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{Path(args[0]).name} {' '.join(map(str, args[1:]))} exited {result.returncode}:\n"
                    f"{result.stdout}{result.stderr}", pytrace=False)


def test_only_the_dialect_module_inspects_the_dialect_name() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources()
        if path.relative_to(PACKAGE).as_posix() not in MAY_INSPECT_DIALECT
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if DIALECT_NAME.search(line)
    ]
    assert not offenders, "dialect.name outside storage/dialect.py (call its helpers instead):\n" + "\n".join(offenders)


SQL_IMPORT = re.compile(r"^\s*(?:from|import)\s+(sqlalchemy|sqlmodel)(\.\w+)*", re.MULTILINE)
# The application passes connections along and catches what storage raises; it builds no SQL.
APPLICATION_MAY_IMPORT = {"sqlalchemy.engine", "sqlalchemy.exc", "sqlmodel"}


def test_the_application_builds_no_sql() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for path in sorted((PACKAGE / "application").rglob("*.py"))
        for match in SQL_IMPORT.finditer(path.read_text(encoding="utf-8"))
        if match.group(0).split()[1] not in APPLICATION_MAY_IMPORT
    ]
    assert not offenders, "SQL in the application (call a storage function instead):\n" + "\n".join(offenders)


def test_no_module_is_over_500_lines() -> None:
    sizes = {path.relative_to(ROOT): len(path.read_bytes().splitlines()) for path in sources()}
    offenders = [f"{path}: {lines} lines" for path, lines in sorted(sizes.items()) if lines > MAX_LINES]
    assert not offenders, f"modules over {MAX_LINES} lines (one module per concept):\n" + "\n".join(offenders)


def test_the_import_contracts_are_kept() -> None:
    passes(BIN / "lint-imports", "--no-cache", "--no-logo")


def test_ruff_finds_nothing() -> None:
    passes(sys.executable, "-m", "ruff", "check", "src", "tests", "bench")


def test_mypy_finds_nothing() -> None:
    """``mypy`` on the files its configuration names, or on the package when it names none."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {}).get("mypy", {})
    targets = [] if config.get("files") else ["src/nurture"]
    passes(sys.executable, "-m", "mypy", *targets)
