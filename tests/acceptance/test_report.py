"""Funnel and campaign metrics on real databases: the figures a marketing and sales review rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401  (fixtures)
from experiment_data import CAMPAIGN as WELCOME
from experiment_data import seed_experiments
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from nurture.application.report import build_report
from nurture.application.variant_decisions import decide_winners
from nurture.definitions.loader import load_catalog
from nurture.storage.database import transaction
from nurture.storage.models import Delivery, EngagementEvent, Enrollment, Lead, StageChange

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def seed(engine: Engine) -> None:
    """Ten MQLs this month (four last month), four SQLs, one accepted, one rejected; A/B deliveries with engagement."""
    with transaction(engine) as conn:
        conn.execute(insert(Lead.__table__), [
            dict(id=i, email=f"l{i}@example.com", stage="mql", tags=[], fields={}, score=0.0, created_at=NOW,
                 updated_at=NOW, stage_changed_at=NOW) for i in range(1, 15)
        ])
        changes = [dict(lead_id=i, from_stage="lead", to_stage="mql", at=NOW - (20 - i) * DAY, reason="score",
                        actor="rule") for i in range(1, 11)]
        changes += [dict(lead_id=i, from_stage="lead", to_stage="mql", at=NOW - 40 * DAY, reason="score",
                         actor="rule") for i in range(11, 15)]
        # SQLs 2 days (48 h), 3 days, 4 days and 5 days after their MQL
        changes += [dict(lead_id=i, from_stage="mql", to_stage="sql", at=NOW - (20 - i) * DAY + (i + 1) * DAY,
                         reason="demo_request", actor="rule") for i in (1, 2, 3, 4)]
        changes += [dict(lead_id=1, from_stage="sql", to_stage="opportunity", at=NOW - DAY, reason="accepted",
                         actor="sales"),
                    dict(lead_id=2, from_stage="sql", to_stage="recycled", at=NOW - DAY, reason="no_budget",
                         actor="sales")]
        conn.execute(insert(StageChange.__table__), changes)
        conn.execute(insert(Enrollment.__table__), [
            dict(id=i, lead_id=i, campaign_id="ebook", status="active" if i > 2 else "exited", step_id="welcome",
                 arrived_at=NOW, next_due_at=NOW, state={}, priority=0, enrolled_at=NOW - 10 * DAY,
                 ended_at=None if i > 2 else NOW - DAY, end_reason=None if i > 2 else "stage:sql")
            for i in range(1, 11)
        ])
        conn.execute(insert(Delivery.__table__), [
            dict(id=i, enrollment_id=i, lead_id=i, campaign_id="ebook", step_id="welcome", step_key="welcome",
                 variant="a" if i % 2 else "b", channel="email", status="sent" if i != 10 else "failed", attempts=1,
                 created_at=NOW - 5 * DAY, sent_at=NOW - 5 * DAY)
            for i in range(1, 11)
        ])
        # variant a (1,3,5,7,9): opens by 1, 3, 5 and a click by 1; variant b (2,4,6,8; 10 failed): a click by 2 only
        events = [(1, "email_open"), (3, "email_open"), (5, "email_open"), (1, "email_click"), (2, "email_click"),
                  (1, "email_open")]
        conn.execute(insert(EngagementEvent.__table__), [
            dict(lead_id=lead, type=kind, occurred_at=NOW - 4 * DAY, recorded_at=NOW - 4 * DAY, campaign_id="ebook",
                 step_key="welcome", delivery_id=lead, properties={}, points=0.0)
            for lead, kind in events
        ])


def test_funnel_and_ab_figures(engine: Engine) -> None:
    seed(engine)
    report = build_report(engine, since=NOW - 30 * DAY, until=NOW, now=NOW)
    f = report.section("funnel")
    assert (f.new_mqls, f.new_sqls, f.accepted, f.rejected) == (10, 4, 1, 1)
    assert f.mql_to_sql_rate == 0.4
    assert f.sql_acceptance_rate == 0.5
    assert f.median_hours_mql_to_sql == 84.0  # 48, 72, 96, 120 h
    steps = {s["variant"]: s for s in report.section("steps").emails}
    assert (steps["a"]["sent"], steps["a"]["opened"], steps["a"]["clicked"]) == (5, 3, 1)
    assert (steps["b"]["sent"], steps["b"]["failed"], steps["b"]["opened"], steps["b"]["clicked"]) == (4, 1, 1, 1)
    assert steps["a"]["open_rate"] == 0.6 and steps["b"]["click_rate"] == 0.25
    [campaign] = report.section("steps").campaigns
    assert (campaign["active"], campaign["exited"], campaign["sent"]) == (8, 2, 9)
    assert campaign["open_rate"] == round(4 / 9, 4)
    assert report.section("steps").exits == [{"campaign": "ebook", "reason": "became an SQL", "code": "stage:sql",
                                              "leads": 2}]


def test_report_command_prints_json(tmp_path: Path, engine: Engine, migrated_url: str) -> None:
    seed(engine)
    nurture = Path(sys.executable).with_name("nurture")
    result = subprocess.run(
        [str(nurture), "report", "--since", (NOW - 30 * DAY).isoformat(), "--json"], capture_output=True, text=True,
        env={**os.environ, "NURTURE_DATABASE_URL": migrated_url}, cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["funnel"]["new_sqls"] == 4
    assert {s["variant"] for s in data["steps"]["email_steps"]} == {"a", "b"}


def nurture_report(tmp_path: Path, url: str, *args: str, campaigns: Path | None = None) -> subprocess.CompletedProcess:
    nurture = Path(sys.executable).with_name("nurture")
    env = {**os.environ, "NURTURE_DATABASE_URL": url, "NURTURE_CAMPAIGNS_DIR": str(campaigns or tmp_path / "none")}
    return subprocess.run([str(nurture), "report", *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=60)


def test_report_formats_and_filters_as_the_readme_shows(tmp_path: Path, engine: Engine, migrated_url: str) -> None:
    seed(engine)
    period = ["--since", (NOW - 30 * DAY).isoformat(), "--until", NOW.isoformat()]
    table = nurture_report(tmp_path, migrated_url, *period)
    assert table.returncode == 0, table.stderr
    assert "MQL→SQL" in table.stdout and "40.0%" in table.stdout and "became an SQL" in table.stdout
    assert "Lead velocity rate: (MQLs of a month - MQLs of the month before)" in table.stdout
    assert "Decoding the Key Differences for Brands" in table.stdout  # where the definitions come from
    lines = nurture_report(tmp_path, migrated_url, *period, "--format", "csv").stdout.splitlines()
    assert lines[0] == "section,table,period,item,metric,value"
    assert "funnel,figures,,,new_sqls,4" in lines
    assert "steps,email_steps,,ebook / welcome / a,open_rate,0.6" in lines
    narrowed = json.loads(nurture_report(tmp_path, migrated_url, *period, "--campaign", "ebook", "--format",
                                         "json").stdout)
    assert narrowed["period"]["campaign"] == "ebook"
    assert narrowed["funnel"]["new_mqls"] == 10  # the ten leads enrolled in ebook; the four of last month are not
    other = json.loads(nurture_report(tmp_path, migrated_url, *period, "--campaign", "other", "--json").stdout)
    assert other["funnel"]["new_mqls"] == 0 and other["steps"]["email_steps"] == []


def test_spend_in_two_currencies_is_an_error_not_a_sum(tmp_path: Path, engine: Engine, migrated_url: str) -> None:
    seed(engine)
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "spend.yaml").write_text("spend:\n  - {period: 2026-03, source: google, amount: 10, currency: EUR}\n"
                                          "  - {period: 2026-03, source: bing, amount: 10, currency: USD}\n")
    result = nurture_report(tmp_path, migrated_url, "--until", NOW.isoformat(), "--json", campaigns=campaigns)
    assert result.returncode == 1
    assert "2 currencies (EUR, USD)" in result.stderr
    assert json.loads(result.stdout)["money"]["error"].startswith("the spend of this period is in 2 currencies")


def test_ab_tests_and_holdouts_in_every_format_and_narrowed_by_campaign(tmp_path: Path, engine: Engine,
                                                                         migrated_url: str) -> None:
    seed(engine)  # ebook: an A/B step without a call
    truth = seed_experiments(engine, start=NOW - 28 * DAY, days=20)  # welcome: a call and a 10 % holdout
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "welcome.yaml").write_text(WELCOME)
    assert truth.second_wave is not None
    [call] = decide_winners(engine, load_catalog(campaigns).raise_for_problems(), truth.second_wave - timedelta(minutes=1))
    period = ["--since", (NOW - 30 * DAY).isoformat(), "--until", NOW.isoformat()]

    data = json.loads(nurture_report(tmp_path, migrated_url, *period, "--json", campaigns=campaigns).stdout)
    assert [(t["campaign"], t["step"]) for t in data["ab_tests"]] == [("ebook", "welcome"), ("welcome", "hello")]
    [welcome] = [t for t in data["ab_tests"] if t["campaign"] == "welcome"]
    assert {v["variant"]: [v["sends"], v["conversions"]] for v in welcome["variants"]} == truth.variants
    assert welcome["verdict"] == "b beats a on clicks, 95% confidence"
    assert welcome["winner"]["decided_at"] == call.decided_at.isoformat()
    [holdout] = data["holdouts"]
    assert {g: [holdout[g]["leads"], holdout[g]["sql"]] for g in ("sent", "held_out")} == truth.groups
    assert holdout["verdict"].startswith("the campaign lifts MQL→SQL conversion by +")
    terms = {d["term"] for d in data["definitions"]["ab_tests"]} | {d["term"] for d in data["definitions"]["holdouts"]}
    assert {"Interval", "p-value (two-proportion z-test)", "Probability to beat", "Lift"} <= terms

    # CSV: the long rows the README shows
    lines = nurture_report(tmp_path, migrated_url, *period, "--format", "csv", campaigns=campaigns).stdout.splitlines()
    (sends_b, clicks_b), rate_b = truth.variants["b"], welcome["variants"][1]["rate"]
    assert f"ab_tests,variants,,welcome / hello / b,conversions,{clicks_b}" in lines
    assert 'ab_tests,tests,,welcome / hello,verdict,"b beats a on clicks, 95% confidence"' in lines
    assert "ab_tests,tests,,welcome / hello,winner,b" in lines
    assert f"ab_tests,variants,,welcome / hello / b,sends,{sends_b}" in lines
    assert f"ab_tests,variants,,welcome / hello / b,rate,{rate_b}" in lines
    difference = welcome["comparisons"][0]["difference"]
    assert f"ab_tests,comparisons,,welcome / hello / b / a,difference,{difference}" in lines
    assert f"holdouts,groups,,welcome / held out,leads,{truth.groups['held_out'][0]}" in lines
    assert f"holdouts,lift,,welcome,lift,{holdout['lift']}" in lines
    assert "holdouts,lift,,welcome,holdout,0.1" in lines

    # the tables: a block per step and per campaign, with the definitions
    table = nurture_report(tmp_path, migrated_url, *period, campaigns=campaigns).stdout
    assert "    verdict: b beats a on clicks, 95% confidence" in table
    assert f"    winner recorded: b at {call.decided_at.isoformat()}" in table
    assert "  welcome (holdout 10%)" in table and f"    verdict: {holdout['verdict']}" in table
    assert "    Probability to beat: the chance that the leader's true rate is above the other's" in table

    # --campaign: that campaign's steps and holdout only
    narrowed = json.loads(nurture_report(tmp_path, migrated_url, *period, "--campaign", "welcome", "--json",
                                         campaigns=campaigns).stdout)
    assert [t["step"] for t in narrowed["ab_tests"]] == ["hello"] and narrowed["ab_tests"][0] == welcome
    assert narrowed["holdouts"] == [holdout]
    other = json.loads(nurture_report(tmp_path, migrated_url, *period, "--campaign", "ebook", "--json").stdout)
    assert [(t["campaign"], t["step"]) for t in other["ab_tests"]] == [("ebook", "welcome")]
    assert other["holdouts"] == []  # welcome's held-out leads are not ebook's

    # --until five days after the call: the same test, and only the winner's sends of those days
    until = (truth.second_wave + 5 * DAY).isoformat()
    early = json.loads(nurture_report(tmp_path, migrated_url, period[0], period[1], "--until", until, "--json",
                                      campaigns=campaigns).stdout)
    [before] = [t for t in early["ab_tests"] if t["campaign"] == "welcome"]
    assert {v["variant"]: v["sends"] for v in before["variants"]} == {v: n for v, (n, _c) in truth.variants.items()}
    assert 0 < before["sent_after_call"] < truth.sent_after_call
    assert early["holdouts"][0]["sent"]["leads"] < truth.groups["sent"][0]
