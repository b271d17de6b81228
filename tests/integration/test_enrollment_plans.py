"""PostgreSQL plans of enrollment that cannot go quadratic: on a database filled within the test and never analyzed
(autovacuum off for its tables), every statement the enrollment paths run is explained (``EXPLAIN (FORMAT JSON)``,
at the moment it runs) and none may join leads to enrollments or events, nor hold a nested loop, which is what
rescanned the enrollment table once per lead. The range reads of a sweep over every lead read by index.
After an import the touched tables have statistics."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from db_fixtures import create_postgres_database, drop_postgres_database, postgres_available, postgres_template  # noqa: F401
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from worker_world import T0, write_project

from nurture.application.enroll import active_campaigns, enroll_every_lead, enroll_imported, enroll_in_transaction
from nurture.application.enroll_sweep import _waits_ended
from nurture.application.import_leads import import_leads_csv
from nurture.clock import FixedClock
from nurture.definitions.loader import load_catalog
from nurture.storage.database import make_engine, transaction

pytestmark = pytest.mark.postgres

LEADS = 60_000
WATCHED = {"lead", "enrollment", "engagement_event"}
STEP = "\nsteps:\n  - id: hello\n    wait: 1d\n    email: {template: welcome.html.j2, subject: Hello}\n"
CAMPAIGNS = {
    "tagged": "id: tagged\nname: t\nentry: {stage: [lead, mql], where: {tags: [vip]}}\nreentry: {after: 7d}" + STEP,
    "attended": "id: attended\nname: a\nentry: {stage: mql, where: {had_event: [webinar_attended]}}" + STEP,
    "recycled": "id: recycled\nname: r\nentry: {stage: recycled, where: {fields: {reason: no_budget}}}" + STEP,
}


@pytest.fixture
def fresh(postgres_template: str) -> Iterator[Engine]:
    url = create_postgres_database(template=postgres_template)
    engine = make_engine(url)
    with transaction(engine) as conn:
        for table in sorted(WATCHED):
            conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        conn.execute(text(f"""
            INSERT INTO lead (email, stage, tags, fields, score, created_at, updated_at, stage_changed_at)
            SELECT 'lead' || g || '@example.com',
                   CASE WHEN mod(g, 10) < 3 THEN 'mql' WHEN mod(g, 10) = 3 THEN 'recycled' ELSE 'lead' END,
                   CASE WHEN mod(g, 7) = 0 THEN '["vip"]' ELSE '["other"]' END::json,
                   CASE WHEN mod(g, 10) = 3 THEN '{{"reason": "no_budget"}}' ELSE '{{}}' END::json,
                   0, now(), now(), now()
            FROM generate_series(1, {LEADS}) AS g"""))
        conn.execute(text(f"""
            INSERT INTO enrollment (lead_id, campaign_id, status, step_id, arrived_at, next_due_at, state, priority,
                                    enrolled_at, ended_at)
            SELECT g, 'tagged', CASE WHEN mod(g, 2) = 0 THEN 'active' ELSE 'exited' END, 'hello', now(), now(),
                   '{{}}'::json, 0, now() - interval '30 days', CASE WHEN mod(g, 2) = 0 THEN NULL ELSE now() END
            FROM generate_series(1, {LEADS}, 7) AS g"""))
        conn.execute(text(f"""
            INSERT INTO engagement_event (lead_id, type, occurred_at, recorded_at, properties, points)
            SELECT mod(g, {LEADS}) + 1, CASE WHEN mod(g, 5) = 0 THEN 'webinar_attended' ELSE 'page_view' END,
                   now(), now(), '{{}}'::json, 0
            FROM generate_series(1, {2 * LEADS}) AS g"""))
    yield engine
    engine.dispose()
    drop_postgres_database(url)


def never_analyzed(engine: Engine) -> bool:
    with transaction(engine) as conn:
        rows = conn.execute(text("SELECT relname, reltuples, last_analyze, last_autoanalyze FROM pg_class "
                                 "JOIN pg_stat_user_tables USING (relname) WHERE relname IN ('lead', 'enrollment')"))
        return all(r.reltuples < 0 and r.last_analyze is None and r.last_autoanalyze is None for r in rows)


def explained(engine: Engine) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    """A list that fills with (statement, plan) of each SELECT on the watched tables, explained as it runs."""
    plans: list[tuple[str, dict[str, Any]]] = []

    def explain(_conn: Any, cursor: Any, statement: str, parameters: Any, _context: Any, executemany: bool) -> None:
        if executemany or not statement.lstrip().upper().startswith("SELECT"):
            return
        if not any(f"FROM {table}" in statement or f"JOIN {table}" in statement for table in WATCHED):
            return
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        plans.append((statement, cursor.fetchone()[0][0]["Plan"]))

    event.listen(engine, "before_cursor_execute", explain)
    return plans, explain


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def check(plans: list[tuple[str, dict[str, Any]]]) -> None:
    assert plans
    for statement, plan in plans:
        tables = {node["Relation Name"] for node in nodes(plan) if "Relation Name" in node} & WATCHED
        assert len(tables) == 1, (tables, statement)
        loops = [node["Node Type"] for node in nodes(plan) if node["Node Type"] == "Nested Loop"]
        assert not loops, statement


def test_no_enrollment_statement_can_rescan_a_table_per_lead_on_a_never_analyzed_database(fresh: Engine,
                                                                                         tmp_path: Path) -> None:
    project = write_project(tmp_path / "project", CAMPAIGNS)
    catalog = load_catalog(project.campaigns_dir, project.templates_dir).raise_for_problems()
    assert never_analyzed(fresh)
    plans, hook = explained(fresh)
    now = T0
    with transaction(fresh) as conn:  # given leads: the intake's, a dispatcher's batch, the safety net's
        enroll_in_transaction(conn, catalog, list(range(1, LEADS, 29))[:2000], now)
        enroll_in_transaction(conn, catalog, list(range(20_001, 22_001)), now)
        enroll_imported(conn, catalog, list(range(30_001, 32_001, 3)), (40_000, 45_000), now)
    given = len(plans)
    check(plans)
    enroll_every_lead(fresh, catalog, active_campaigns(catalog), now)  # a new campaign's audience
    _waits_ended(fresh, catalog, list(catalog.campaigns), now.replace(year=2000), now)
    event.remove(fresh, "before_cursor_execute", hook)
    check(plans)
    ranged = [(statement, plan) for statement, plan in plans[given:] if "lead_id >" in statement]
    assert ranged
    for statement, plan in ranged:  # a range of lead ids of enrollments or events: by index, never the whole table
        assert all(node["Node Type"] != "Seq Scan" for node in nodes(plan)), statement


def test_an_import_leaves_the_tables_it_filled_with_statistics(fresh: Engine, tmp_path: Path) -> None:
    project = write_project(tmp_path / "project", CAMPAIGNS)
    catalog = load_catalog(project.campaigns_dir, project.templates_dir).raise_for_problems()
    path = tmp_path / "leads.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "stage", "tags"])
        writer.writerows([f"new{n}@example.com", "mql", "vip"] for n in range(3000))
    assert never_analyzed(fresh)
    report = import_leads_csv(fresh, path, clock=FixedClock(T0), catalog=catalog)
    assert report.enrolled == 3000
    with transaction(fresh) as conn:
        analyzed = dict(conn.execute(text("SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables "
                                          "WHERE relname IN ('lead', 'enrollment', 'stage_change')")).all())
    assert analyzed == {"lead": True, "enrollment": True, "stage_change": True}
