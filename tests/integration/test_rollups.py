"""The report's daily rollups: what the triggers keep as the real write paths run equals what a rebuild counts from the
rows, on SQLite and PostgreSQL; every trigger is in place at the head revision; ``nurture db rebuild-rollups``."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from db_fixtures import db_url, engine, migrated_url, postgres_available, postgres_template  # noqa: F401  (fixtures)
from replay_world import email, record_history, write_drip_project
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from nurture.application.event_input import EventIn
from nurture.application.import_leads import import_leads_csv
from nurture.application.override_stage import override_stage
from nurture.application.record_events import record_events
from nurture.application.sales_feedback import apply_feedback
from nurture.definitions.loader import load_catalog
from nurture.definitions.sales import load_sales
from nurture.definitions.scoring import load_scoring
from nurture.storage.ab_rollup import trigger_names as ab_triggers
from nurture.storage.batch_rollups import counted_at_once
from nurture.storage.database import make_engine, transaction
from nurture.storage.dialect import trigger_names
from nurture.storage.migrate import alembic_config, upgrade
from nurture.storage.rollups import rebuild, snapshot
from nurture.storage.tables import D, E, L, RD, RE, RL, RM, RS, RX, SC

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from report_data import generate

T = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
TRIGGERS = {"rollup_lead_insert", "rollup_lead_update", "rollup_stage_change_insert", "rollup_delivery_insert",
            "rollup_delivery_update", "rollup_engagement_event_insert", "rollup_enrollment_insert",
            "rollup_enrollment_update", "rollup_step_outcome_insert", "rollup_sql_insert", "rollup_decision_insert",
            "rollup_decision_owner"}
AB_TRIGGERS = {"ab_delivery_insert", "ab_delivery_update", "ab_engagement_event_insert"}  # 0010_abrollup

CSV = """email,first_name,stage,utm_source,utm_medium,utm_campaign
new1@example.com,New,mql,google,cpc,spring
new2@example.com,Newer,lead,linkedin,social,abm
{known},Drip3,mql,newsletter,email,
"""


def maintained_and_rebuilt(engine: Engine, *, lead_steps: bool = True) -> tuple[dict, dict]:
    with transaction(engine) as conn:
        maintained = snapshot(conn, lead_steps=lead_steps)
        rebuild(conn, lead_steps=lead_steps)
        rebuilt = snapshot(conn, lead_steps=lead_steps)
    return maintained, rebuilt


def test_the_rollups_kept_by_the_write_paths_equal_the_rollups_rebuilt(engine: Engine, tmp_path: Path) -> None:
    history = record_history(engine, tmp_path)  # leads saved, events, promotions by demo_request, nine days of sends
    catalog, project = history.catalog, history.project
    rules, _ = load_scoring(project.campaigns_dir)
    sales, _ = load_sales(project.campaigns_dir)
    later = history.now + timedelta(hours=1)
    csv = tmp_path / "leads.csv"
    csv.write_text(CSV.format(known=email(3)), encoding="utf-8")  # two new leads; drip3 gets its source from the file
    report = import_leads_csv(engine, csv, clock=lambda: later, rules=rules, catalog=catalog)  # enrolls new1
    assert (report.inserted, report.updated, report.rejected) == (2, 1, [])
    apply_feedback(engine, catalog, rules, sales, email=email(2), verdict="accept", reason=None, note=None,
                   actor="api", now=later + timedelta(hours=1))
    override_stage(engine, catalog, email=email(6), stage="disqualified", reason="spam trap",
                   now=later + timedelta(hours=2))
    with engine.connect() as conn:  # opens and clicks as the tracking links record them: naming their email
        first, second = conn.execute(select(D.c.id, L.c.email).join(L, L.c.id == D.c.lead_id)
                                     .where(D.c.status == "sent").order_by(D.c.id).limit(2)).all()
    at = later + timedelta(hours=3)
    record_events(engine, catalog, rules, [
        EventIn(first.email, "email_open", occurred_at=at, delivery_id=first.id),
        EventIn(first.email, "email_click", occurred_at=at, delivery_id=first.id),
        EventIn(first.email, "email_open", occurred_at=at + timedelta(minutes=5), delivery_id=first.id),
        EventIn(second.email, "email_click", occurred_at=at, delivery_id=second.id),
    ], now=at, actor="api", sales=sales)

    # a second SQL, promoted while nurtured and rejected by hand with a note; then the accepted lead changes owner
    nurtured = "new1@example.com"  # imported as an MQL above, so enrolled in the drip
    with engine.connect() as conn:
        assert conn.execute(select(E.c.campaign_id).join(L, L.c.id == E.c.lead_id)
                            .where(L.c.email == nurtured, E.c.status == "active")).scalars().all() == ["drip"]
    record_events(engine, catalog, rules, [EventIn(nurtured, "demo_request", occurred_at=at)], now=at, actor="api",
                  sales=sales)
    override_stage(engine, catalog, email=nurtured, stage="recycled", now=at + timedelta(hours=1),
                   reason="rejected by sales: no_budget (No budget); note: call again in May")
    with transaction(engine) as conn:
        conn.execute(update(L).values(owner="dana").where(L.c.email == email(2)))

    maintained, rebuilt = maintained_and_rebuilt(engine)
    assert maintained == rebuilt
    # every rollup counted (this history has no A/B step: tests/integration/test_ab_rollup.py has)
    assert all(rows for name, rows in maintained.items() if name != "ab_lead_step"), \
        {name: len(rows) for name, rows in maintained.items()}
    with engine.connect() as conn:
        decided = conn.execute(select(RX.c.to_stage, RX.c.reason, RX.c.owner, RX.c.rule, RX.c.campaigns, RX.c.n)
                               .where(RX.c.n != 0).order_by(RX.c.to_stage)).all()
        waits = conn.execute(select(RS.c.wait_ms, RS.c.n).where(RS.c.n != 0)).all()
    assert [(d.to_stage, d.owner, d.rule, d.n) for d in decided] == [
        ("opportunity", "dana", "intent:demo_request", 1), ("recycled", "", "intent:demo_request", 1)]
    assert decided[1].reason == "rejected by sales: no_budget (No budget)"  # the note is not a key
    assert decided[1].campaigns == "drip"  # the campaign it was in when promoted
    assert sum(w.n for w in waits) == 2
    with engine.connect() as conn:
        moved = conn.execute(select(RM.c.source, RM.c.n).where(RM.c.to_stage == "mql")).all()
        sent = conn.execute(select(RD.c.n, RD.c.opened, RD.c.clicked).where(RD.c.status == "sent")).all()
    assert ("newsletter", 1) in moved  # drip3's move to mql, counted under the source the import gave it later
    assert (sum(r.opened for r in sent), sum(r.clicked for r in sent)) == (2, 2)  # each email once


def test_a_rollup_changed_by_hand_is_repaired_by_the_rebuild(engine: Engine, tmp_path: Path) -> None:
    record_history(engine, tmp_path)
    with transaction(engine) as conn:
        right = snapshot(conn)
        conn.execute(update(RL).values(n=RL.c.n + 5))  # damage: what a rebuild must undo
        conn.execute(update(D).values(status="failed").where(D.c.id == conn.execute(select(D.c.id)).scalars().first()))
    maintained, rebuilt = maintained_and_rebuilt(engine)
    assert maintained != rebuilt
    assert rebuilt["rollup_lead_day"] == right["rollup_lead_day"]
    assert rebuilt["rollup_delivery_day"] != right["rollup_delivery_day"]  # the failed email moved, in both


def test_every_rollup_trigger_is_in_place_at_the_head_revision(engine: Engine) -> None:
    with engine.connect() as conn:
        assert trigger_names(conn) >= TRIGGERS | AB_TRIGGERS | {name for name, _ in ab_triggers(engine.dialect)}


def test_db_rebuild_rollups_command(engine: Engine, migrated_url: str, tmp_path: Path) -> None:
    with transaction(engine) as conn:
        conn.execute(insert(L), [dict(email="a@example.com", tags=[], fields={}, source="google", stage="lead",
                                      score=0.0, created_at=T, updated_at=T, stage_changed_at=T)])
        conn.execute(update(RL).values(n=9))
    nurture = Path(sys.executable).with_name("nurture")
    done = subprocess.run([str(nurture), "db", "rebuild-rollups"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "NURTURE_DATABASE_URL": migrated_url}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "rollups rebuilt (rollup_lead_day 1," in done.stdout
    assert "ab_lead_step 0 rows)" in done.stdout
    with engine.connect() as conn:
        assert conn.execute(select(RL.c.source, RL.c.n)).all() == [("google", 1)]


def test_the_upgrade_counts_the_rows_already_there(db_url: str) -> None:
    upgrade(db_url, "0005_report")
    engine = make_engine(db_url)
    try:
        generate(engine, leads=400, events=3000, months=2)  # leads, moves, emails, opens, enrollments, outcomes
        upgrade(engine)
        maintained, rebuilt = maintained_and_rebuilt(engine)
    finally:
        engine.dispose()
    assert maintained == rebuilt
    assert all(maintained.values()), {name: len(rows) for name, rows in maintained.items()}


def insert_in_one_statement_each(engine: Engine, first: int) -> None:
    """60 leads over two days and three sources, 40 stage changes and 30 enrollments (10 of them ended): each table's
    rows by one multi-row INSERT, so that a trigger run per statement sees several rows of one key at once."""
    with transaction(engine) as conn:
        insert_rows(conn, first)


def insert_rows(conn: Connection, first: int) -> None:
    """The rows of :func:`insert_in_one_statement_each`, in the caller's transaction."""
    sources = ["google", "linkedin", None]
    conn.execute(insert(L).values([
        dict(email=f"lead{i}@example.com", tags=[], fields={}, source=sources[i % 3], stage="lead", score=0.0,
             created_at=T + timedelta(days=i % 2), updated_at=T, stage_changed_at=T)
        for i in range(first, first + 60)]))
    ids = sorted(conn.execute(select(L.c.id).where(L.c.email.like("lead%@example.com"))).scalars())[-60:]
    conn.execute(insert(SC).values([
        dict(lead_id=lead_id, from_stage="lead" if i % 2 else None, to_stage="mql", at=T + timedelta(hours=i),
             reason="test", actor="import") for i, lead_id in enumerate(ids[:40])]))
    conn.execute(insert(E).values([
        dict(lead_id=lead_id, campaign_id=("a", "b")[i % 2], status="exited" if i < 10 else "active",
             step_id="s", arrived_at=T, state={}, priority=0, enrolled_at=T + timedelta(days=i % 3),
             ended_at=T + timedelta(days=1) if i < 10 else None, end_reason="goal" if i < 10 else None)
        for i, lead_id in enumerate(ids[:30])]))


def test_rows_inserted_by_one_statement_are_each_counted(engine: Engine) -> None:
    insert_in_one_statement_each(engine, 0)
    maintained, rebuilt = maintained_and_rebuilt(engine)
    assert maintained == rebuilt
    assert sum(row[-1] for row in maintained["rollup_lead_day"]) == 60
    assert len(maintained["rollup_lead_day"]) == 6  # two days, three sources
    assert sum(row[-1] for row in maintained["rollup_move_day"]) == 40
    with engine.connect() as conn:
        started = conn.execute(select(RE.c.n).where(RE.c.kind == "started")).scalars().all()
        ended = conn.execute(select(RE.c.n).where(RE.c.kind == "ended")).scalars().all()
    assert (sum(started), len(started), sum(ended)) == (30, 6, 10)



def trigger_texts(engine: Engine) -> dict[str, str]:
    """Each trigger's DDL as the database holds it (SQLite), or its name (PostgreSQL)."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            return dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").all())
        return {name: name for name in trigger_names(conn)}


def test_rows_inserted_in_a_block_counted_at_once_are_each_counted_and_the_triggers_kept(engine: Engine) -> None:
    triggers = trigger_texts(engine)
    with transaction(engine) as conn, counted_at_once(conn):
        insert_rows(conn, 0)
    insert_in_one_statement_each(engine, 60)  # and after it, by the triggers again
    maintained, rebuilt = maintained_and_rebuilt(engine)
    assert maintained == rebuilt
    assert sum(row[-1] for row in maintained["rollup_lead_day"]) == 120
    assert sum(row[-1] for row in maintained["rollup_move_day"]) == 80
    with engine.connect() as conn:
        ended = conn.execute(select(RE.c.n).where(RE.c.kind == "ended")).scalars().all()
    assert sum(ended) == 20
    assert trigger_texts(engine) == triggers and set(triggers) >= TRIGGERS


def test_a_block_counted_at_once_that_fails_leaves_the_triggers_and_counts_nothing(engine: Engine) -> None:
    triggers = trigger_texts(engine)
    with pytest.raises(RuntimeError), transaction(engine) as conn, counted_at_once(conn):
        insert_rows(conn, 0)
        raise RuntimeError("the batch fails")
    assert trigger_texts(engine) == triggers
    insert_in_one_statement_each(engine, 60)
    maintained, rebuilt = maintained_and_rebuilt(engine)
    assert maintained == rebuilt and sum(row[-1] for row in maintained["rollup_lead_day"]) == 60


def test_an_import_in_batches_keeps_the_rollups_as_a_rebuild_counts_them(engine: Engine, tmp_path: Path) -> None:
    project = write_drip_project(tmp_path)
    catalog = load_catalog(project.campaigns_dir, project.templates_dir).raise_for_problems()
    triggers = trigger_texts(engine)
    first = tmp_path / "first.csv"
    first.write_text("email,stage,utm_source,utm_medium\n" + "".join(
        f"lead{i}@example.com,{('mql', 'lead', 'sql')[i % 3]},{('google', '', 'partner')[i % 3]},cpc\n"
        for i in range(11)), encoding="utf-8")
    report = import_leads_csv(engine, first, clock=lambda: T, catalog=catalog, batch_size=4)
    assert (report.inserted, report.enrolled) == (11, 4)  # the mql leads enter the drip
    second = tmp_path / "second.csv"  # later: sources given to leads that had none, stages moved on, new leads
    second.write_text("email,stage,utm_source\n" + "".join(
        f"lead{i}@example.com,{('sql', 'mql', 'customer')[i % 3]},{('', 'newsletter', '')[i % 3]}\n"
        for i in range(5, 16)), encoding="utf-8")
    report = import_leads_csv(engine, second, clock=lambda: T + timedelta(days=1), catalog=catalog, batch_size=3)
    assert (report.inserted, report.updated) == (5, 6)
    maintained, rebuilt = maintained_and_rebuilt(engine)
    assert maintained == rebuilt
    assert sum(row[-1] for row in maintained["rollup_lead_day"]) == 16
    assert ("newsletter", 2) in {(row[4], row[-1]) for row in maintained["rollup_move_day"] if row[2] == "mql"}
    assert sum(row[-1] for row in maintained["rollup_enrollment_day"] if row[2] == "started") == report.enrolled + 4
    assert trigger_texts(engine) == triggers

def test_the_downgrade_to_0007_puts_back_the_triggers_per_row(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0007_sales_rollup")  # the row triggers of 0006, and the sales rollups
        insert_in_one_statement_each(engine, 0)
        with engine.connect() as conn:
            assert trigger_names(conn) >= TRIGGERS and not trigger_names(conn) & AB_TRIGGERS
        maintained, rebuilt = maintained_and_rebuilt(engine, lead_steps=False)  # no ab_lead_step before 0010
        assert maintained == rebuilt and sum(row[-1] for row in maintained["rollup_lead_day"]) == 60
        upgrade(engine)
        insert_in_one_statement_each(engine, 60)
        maintained, rebuilt = maintained_and_rebuilt(engine)
        assert maintained == rebuilt and sum(row[-1] for row in maintained["rollup_lead_day"]) == 120
    finally:
        engine.dispose()


def test_on_postgresql_the_insert_triggers_of_leads_moves_and_enrollments_run_once_per_statement(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        return  # SQLite's triggers run per row (it updates a rollup row in place)
    with engine.connect() as conn:
        per_row = dict(conn.exec_driver_sql("SELECT tgname, (tgtype & 1) = 1 FROM pg_trigger WHERE NOT tgisinternal").all())
    assert {name: per_row[name] for name in ("rollup_lead_insert", "rollup_stage_change_insert",
                                             "rollup_enrollment_insert", "rollup_lead_update")} == {
        "rollup_lead_insert": False, "rollup_stage_change_insert": False, "rollup_enrollment_insert": False,
        "rollup_lead_update": True}
