"""The README's A/B and holdout example through the console script: ``nurture check`` takes it and reports a bad goal at
its line, ``nurture simulate`` shows a recorded (or given) winner and a held-out lead's path, ``nurture preview``
renders the recorded winner, and reading the recorded winners never creates a database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from nurture.storage.database import make_engine, transaction
from nurture.storage.experiments import record_decision
from nurture.storage.migrate import upgrade

NURTURE = Path(sys.executable).with_name("nurture")
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The YAML block under the README's "A/B tests and holdout groups" heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### A/B tests and holdout groups", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "campaigns" / "welcome.yaml").write_text(readme_example(), encoding="utf-8")
    (tmp_path / "templates" / "welcome.html.j2").write_text("<p>Hi {{ lead.first_name }}</p>\n", encoding="utf-8")
    (tmp_path / "lead.yaml").write_text("id: 7\nemail: dana@example.com\nfirst_name: Dana\n", encoding="utf-8")
    return tmp_path


def nurture(project: Path, *args: str, database: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NURTURE_CAMPAIGNS_DIR": str(project / "campaigns"),
           "NURTURE_TEMPLATES_DIR": str(project / "templates"),
           "NURTURE_DATABASE_URL": database or f"sqlite:///{project / 'absent.db'}"}
    return subprocess.run([str(NURTURE), *args], capture_output=True, text=True, timeout=60, env=env, cwd=project)


def test_check_takes_the_readme_example_and_reports_a_bad_goal_at_its_line(project: Path) -> None:
    assert nurture(project, "check").returncode == 0
    text = readme_example().replace("goal: {sql_within: 14d}", "goal: {sql_within: 14}")
    (project / "campaigns" / "welcome.yaml").write_text(text, encoding="utf-8")
    result = nurture(project, "check")
    line = text.splitlines().index(next(x for x in text.splitlines() if "sql_within" in x)) + 1
    assert result.returncode == 1
    assert f"welcome.yaml:{line}: sql_within: duration must be text such as '2d'" in result.stdout, result.stdout


def test_simulate_shows_a_given_winner_and_a_held_out_path(project: Path) -> None:
    start = ["simulate", "welcome", "--lead", "lead.yaml", "--start", "2026-03-02T09:00Z", "--days", "3"]
    given = nurture(project, *start, "--winner", "hello=b", "--sent")
    assert given.returncode == 0, given.stderr
    assert "A/B winners: hello -> b (A/B winners as given with --winner)" in given.stdout
    assert "email [b]: Your guide is here" in given.stdout
    held = nurture(project, *start, "--held-out")
    assert held.returncode == 0, held.stderr
    assert "held out (holdout 10%): the lead walks the campaign and is sent nothing" in held.stdout
    assert re.search(r"hello\s+held_out\s+\(email not sent\)", held.stdout), held.stdout
    assert "email" not in held.stdout.replace("email not sent", "")
    assert nurture(project, *start, "--winner", "hello").returncode == 1  # not STEP=VARIANT
    assert not (project / "absent.db").exists()  # looking for recorded winners created no database


def test_simulate_and_preview_use_the_winner_recorded_in_the_database(project: Path) -> None:
    url = f"sqlite:///{project / 'nurture.db'}"
    upgrade(url)
    engine = make_engine(url)
    with transaction(engine) as conn:
        record_decision(conn, campaign_id="welcome", step_id="hello", winner="b", metric="SQL within 14d",
                        confidence=0.95, decided_at=datetime(2026, 3, 1, tzinfo=timezone.utc), figures={})
    engine.dispose()
    simulated = nurture(project, "simulate", "welcome", "--lead", "lead.yaml", "--start", "2026-03-02T09:00Z",
                        "--days", "3", "--sent", database=url)
    assert simulated.returncode == 0, simulated.stderr
    assert "A/B winners: hello -> b (A/B winners as recorded in the database)" in simulated.stdout
    assert "email [b]: Your guide is here" in simulated.stdout
    previewed = nurture(project, "preview", "welcome", "hello", "--lead", "lead.yaml", database=url)
    assert previewed.returncode == 0, previewed.stderr
    assert previewed.stdout.startswith("Subject: Your guide is here\n")
    assert "(variant b: the recorded winner, which every later lead gets)" in previewed.stdout
    chosen = nurture(project, "preview", "welcome", "hello", "--variant", "a", database=url)
    assert chosen.stdout.startswith("Subject: Welcome\n") and "recorded winner" not in chosen.stdout
