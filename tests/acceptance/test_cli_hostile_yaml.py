"""Hostile YAML through the installed console script: ``nurture check`` and ``nurture run`` refuse an alias bomb in a
campaign file with its ``path:line`` and exit 1 within seconds, in a process allowed 2 GiB of memory (before the
limits, ``check`` grew to about 10 GB and ``run`` hung at start-up)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nurture.definitions.yamlsource import MAX_VALUES

NURTURE = Path(sys.executable).with_name("nurture")
SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
TOO_MANY = f"the file holds more than {MAX_VALUES:,} values once its aliases are expanded: refusing to read it"


def alias_bomb() -> str:
    """Nine levels of nine aliases: 9**9 values from ten short lines."""
    lines = ["lol0: &lol0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"lol{n}: &lol{n} [" + ", ".join([f"*lol{n - 1}"] * 9) + "]" for n in range(1, 9)]
    return "\n".join(lines) + "\nid: bomb\nname: Bomb\nsteps: *lol8\n"


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "campaigns" / "bomb.yaml").write_text(alias_bomb(), encoding="utf-8")
    shutil.copytree(SHIPPED_TEMPLATES, tmp_path / "templates")
    return tmp_path


def nurture(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    environment["NURTURE_DATABASE_URL"] = f"sqlite:///{cwd / 'nurture.db'}"
    started = time.monotonic()
    result = subprocess.run([str(NURTURE), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                            timeout=60, preexec_fn=_cap_memory)
    return result, time.monotonic() - started


def test_check_refuses_an_alias_bomb_with_its_line_and_exit_1(project: Path) -> None:
    result, elapsed = nurture(project, "check")
    assert (result.returncode, result.stdout) == (1, f"campaigns/bomb.yaml:6: {TOO_MANY}\n"), result.stderr
    assert elapsed < 20


def test_run_refuses_an_alias_bomb_at_start_up_with_its_line_and_exit_1(project: Path) -> None:
    assert nurture(project, "db", "upgrade")[0].returncode == 0
    result, elapsed = nurture(project, "run", "--once", "--no-http")
    assert result.returncode == 1
    assert f"campaigns/bomb.yaml:6: {TOO_MANY}" in result.stderr
    assert elapsed < 20
