"""The intake's statements over a list of leads keep reading the index once the lead table has grown, on a
PostgreSQL server that never refreshes its statistics (autovacuum off, no ANALYZE): they are planned at each
execution rather than kept as the generic plan psycopg's prepared statement got while the table was small
(``planned_each_time`` of storage.database.driver).

The test runs the statements often enough on a table of 200 leads for psycopg to prepare them (after 5 executions)
and for PostgreSQL to settle on its generic plan (after 5 more; for such a table, a scan), grows the table by 30,000
leads without ANALYZE, runs them once more on the same connection for 20 leads (a list the index answers at a
fraction of a scan's cost), and counts the sequential scans of the lead table the server recorded meanwhile: a kept
generic plan scans it every time."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from db_fixtures import pg_url, postgres_available  # noqa: F401
from sqlalchemy.engine import Connection, Engine

from nurture.storage.database import make_engine, transaction
from nurture.storage.event_bulk_pg import PostgresEventBulk
from nurture.storage.migrate import upgrade

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SMALL = 200  # a table of a few pages, which a generic plan scans rather than read its index
GROWN = 30_000


@pytest.fixture
def pg_engine(pg_url: str):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE lead SET (autovacuum_enabled = false)")  # as on a server with it off
        _add_leads(conn, 0, SMALL)
    yield engine
    engine.dispose()


def _add_leads(conn: Connection, first: int, count: int) -> None:
    conn.execute(sa.text(
        "INSERT INTO lead (email, tags, fields, stage, score, created_at, updated_at, stage_changed_at) "
        "SELECT 'lead' || n || '@plans.example', '[]', '{}', 'mql', 0, :now, :now, :now "
        "FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS n"),
        {"now": NOW, "first": first, "last": first + count - 1})


def _sequential_scans(engine: Engine) -> int:
    """The sequential scans of ``lead`` the server has recorded (every backend's, flushed: see _flushed)."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        return int(conn.exec_driver_sql(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'lead'").scalar_one())


def _flushed(conn: Connection) -> None:
    """Ask this backend to report its table statistics as soon as its transaction ends (not a second later)."""
    conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")


def _grow(engine: Engine) -> None:
    with engine.begin() as conn:
        _add_leads(conn, SMALL, GROWN)
        assert conn.exec_driver_sql(
            "SELECT last_analyze IS NULL AND last_autoanalyze IS NULL FROM pg_stat_user_tables "
            "WHERE relname = 'lead'").scalar_one()  # no statistics: what the planner knows is the table's size
        _flushed(conn)


def test_the_intake_locks_and_updates_grown_leads_by_their_index(pg_engine: Engine):
    bulk = PostgresEventBulk()
    with pg_engine.connect() as conn:  # one connection throughout, as an intake writer keeps it

        def batch(emails: list[str]) -> None:
            with transaction(conn):
                found = bulk.lock_leads(conn, emails)
                bulk.update_leads(conn, [
                    dict(b_id=row.id, b_score=1.5, b_stage="mql", b_stage_changed_at=NOW, b_unsubscribed_at=None,
                         b_bounced_at=None, b_updated_at=NOW, b_score_state=None) for row in found.values()])
                bulk.known_ids(conn, {"event-1", "event-2"})
                _flushed(conn)

        small = [f"lead{n}@plans.example" for n in range(100)]
        for _ in range(16):
            batch(small)
        prepared = {text for (text,) in conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements")}
        conn.commit()
        _grow(pg_engine)
        before = _sequential_scans(pg_engine)
        batch([f"lead{n}@plans.example" for n in range(1000, 1020)])
        after = _sequential_scans(pg_engine)
        rows = conn.exec_driver_sql("SELECT count(*) FROM lead WHERE score = 1.5").scalar_one()
    assert rows == 100 + 20
    assert after - before == 0
    assert not any("FOR UPDATE" in text or text.startswith("UPDATE lead") for text in prepared)


def test_a_block_without_parallel_workers_puts_the_transactions_setting_back(pg_engine: Engine):
    from nurture.storage.dialect import without_parallel_workers

    def setting(conn: Connection) -> str:
        return str(conn.exec_driver_sql("SELECT current_setting('max_parallel_workers_per_gather')").scalar_one())

    with transaction(pg_engine) as conn:
        conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 3")
        with without_parallel_workers(conn):
            assert setting(conn) == "0"
        assert setting(conn) == "3"
