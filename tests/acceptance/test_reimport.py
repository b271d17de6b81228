"""The issue's "done when", with the real console script on a SQLite file and the shipped campaigns and rules: import
examples/leads.csv, move leads through scoring, promotion and sales (accept, reject to recycled, reject to
disqualified, a customer), import the same file again: every stage stays where it was, nobody enters nurture again,
and the import's summary names each stage value it did not apply. Then an admin's override, shown in the history."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NURTURE = Path(sys.executable).with_name("nurture")
EXAMPLE = ROOT / "examples" / "leads.csv"

DANA = "dana.whitfield@northwind-logistics.example"
MARCO = "marco.rossi@fabbrica-blu.example"
AIKO = "aiko.tanaka@sakura-retail.example"
LIAM = "liam.obrien@harbourfreight.example"
OLIVER = "oliver.smith@tidewater.example"
CHLOE = "chloe.martin@atelier-nord.example"


@pytest.fixture
def nurture(tmp_path: Path):
    """Run ``nurture`` against a fresh SQLite file, the repository's campaigns and templates, no mail sent."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(NURTURE_DATABASE_URL=f"sqlite:///{tmp_path / 'nurture.db'}", NURTURE_CAMPAIGNS_DIR=str(ROOT / "campaigns"),
               NURTURE_TEMPLATES_DIR=str(ROOT / "templates"), NURTURE_MAIL_URL=f"file://{tmp_path / 'mail'}")

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(NURTURE), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        if ok:
            assert done.returncode == 0, f"nurture {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done

    run.database = tmp_path / "nurture.db"  # type: ignore[attr-defined]
    run("db", "upgrade")
    return run


def snapshot(database: Path) -> dict[str, list[tuple]]:
    """The leads' stages, every stage change and every enrollment, read from the SQLite file itself."""
    with closing(sqlite3.connect(database)) as connection:
        return {
            "leads": connection.execute("SELECT email, stage, updated_at FROM lead ORDER BY id").fetchall(),
            "stage_changes": connection.execute("SELECT * FROM stage_change ORDER BY id").fetchall(),
            "enrollments": connection.execute(
                "SELECT id, lead_id, campaign_id, status, end_reason FROM enrollment ORDER BY id").fetchall(),
        }


def show(nurture, email: str) -> dict:
    return json.loads(nurture("leads", "show", email, "--json").stdout)


def test_reimporting_the_example_file_after_the_sales_flow_moves_no_lead(nurture) -> None:
    first = nurture("leads", "import", str(EXAMPLE))
    assert f"{EXAMPLE}: 12 new, 0 updated, 0 rejected" in first.stdout

    for email in (DANA, MARCO, AIKO, LIAM, OLIVER):  # hand-raises: promotion to sql, the handoff queued
        assert "stage sql (changed)" in nurture("event", email, "demo_request").stdout
    for kind in ("webinar_attended", "content_download", "pricing_page_view"):  # scoring makes Chloé an MQL
        nurture("event", CHLOE, kind)
    assert "stage sql -> opportunity" in nurture("sales", "accept", DANA).stdout
    assert "stage sql -> opportunity" in nurture("sales", "accept", MARCO).stdout
    assert "stage sql -> recycled" in nurture("sales", "reject", AIKO, "--reason", "no_budget").stdout
    assert "stage sql -> disqualified" in nurture("sales", "reject", LIAM, "--reason", "not_a_fit").stdout
    assert f"updated lead {DANA} (id 1, stage customer)" in nurture("leads", "add", DANA, "--stage", "customer").stdout

    before = snapshot(nurture.database)
    stages = {email: stage for email, stage, _updated in before["leads"]}
    assert len(stages) == 12
    assert {email: stages[email] for email in (DANA, MARCO, AIKO, LIAM, OLIVER, CHLOE)} == {
        DANA: "customer", MARCO: "opportunity", AIKO: "recycled", LIAM: "disqualified", OLIVER: "sql", CHLOE: "mql"}

    again = nurture("leads", "import", str(EXAMPLE))
    after = snapshot(nurture.database)
    assert {email: stage for email, stage, _updated in after["leads"]} == stages
    # no stage change written, no enrollment started or ended: nobody demoted, nobody back in nurture
    assert (after["stage_changes"], after["enrollments"]) == (before["stage_changes"], before["enrollments"])
    assert "enrollment(s) started" not in again.stdout

    lines = again.stdout.splitlines()
    assert f"{EXAMPLE}: 0 new, 12 updated, 0 rejected" in lines
    at = lines.index("6 stage value(s) not applied, the leads keep their stage (`nurture leads stage` sets one by hand):")
    assert lines[at + 1:] == [  # the most frequent first, then by reason (README.md, "Leads", shows this output)
        "  1 set by rules or sales: disqualified; given mql (line 5)",
        "  1 set by rules or sales: recycled; given mql (line 4)",
        "  1 would move backwards: customer → mql (line 2)",
        "  1 would move backwards: mql → lead (line 10)",
        "  1 would move backwards: opportunity → mql (line 3)",
        "  1 would move backwards: sql → lead (line 11)",
    ]

    # an admin moves Oliver back by hand: recorded with the reason, and the next import keeps it too
    override = nurture("leads", "stage", OLIVER, "mql", "--reason", "demo booked by mistake")
    assert f"{OLIVER} (id 10): stage sql -> mql, set by admin: demo booked by mistake" in override.stdout
    history = show(nurture, OLIVER)["stage_history"]
    assert (history[-1]["from_stage"], history[-1]["to_stage"], history[-1]["actor"], history[-1]["reason"]) == (
        "sql", "mql", "admin", "demo booked by mistake")
    shown = nurture("leads", "show", OLIVER).stdout.splitlines()
    assert any(line.split()[-7:] == ["sql", "mql", "admin", "demo", "booked", "by", "mistake"] for line in shown)
    third = nurture("leads", "import", str(EXAMPLE))
    assert "  2 would move backwards: mql → lead (lines 10 and 11)" in third.stdout
    assert show(nurture, OLIVER)["lead"]["stage"] == "mql"
