"""Enrollments' writes: new enrollments, early ends and wake-ups (the versions the worker ran are
:mod:`nurture.storage.versions`').

Who enters which campaign is decided in :mod:`nurture.application.enroll`, on what :mod:`nurture.storage.entry_reads`
reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, literal_column, text, update
from sqlalchemy.engine import Connection

from nurture.storage import lead_bulk_pg
from nurture.storage.database import UTCDateTime, executemany_prepared, inline_constant
from nurture.storage.dialect import sends_arrays, upsert_insert
from nurture.storage.tables import E


def start(conn: Connection, now: datetime, rows: list[dict[str, Any]]) -> int:
    """Start new enrollments, each due at ``now`` on its first step: ``rows`` hold ``lead_id``, ``campaign_id``,
    ``step_id``, ``campaign_version`` and ``priority``. One that is active already is skipped; returns how many were
    created. What every row shares is written into the statement once, not bound per row."""
    if not rows:
        return 0
    if sends_arrays(conn):
        return lead_bulk_pg.start_enrollments(conn, now, rows)
    at = inline_constant(now, UTCDateTime(), conn.dialect)
    statement = upsert_insert(E, conn.dialect).values(
        status=literal_column("'active'"), arrived_at=at, next_due_at=at, enrolled_at=at,
        state=literal_column("'{}'"),
    ).on_conflict_do_nothing(index_elements=["lead_id", "campaign_id"], index_where=text("status = 'active'"))
    return executemany_prepared(conn, statement, rows)


def exit_enrollments(conn: Connection, lead_id: int, reason: str, now: datetime, *, campaign_ids: Iterable[str] | None = None) -> int:
    """End a lead's active enrollments at once (unsubscribe, promotion, disqualification); return how many."""
    query = update(E).where(E.c.lead_id == lead_id, E.c.status == "active")
    if campaign_ids is not None:
        query = query.where(E.c.campaign_id.in_(list(campaign_ids)))
    result = conn.execute(
        query.values(status="exited", ended_at=now, end_reason=reason, next_due_at=None, waiting_for=None)
    )
    return result.rowcount or 0


_WAKE = (update(E).where(E.c.lead_id == bindparam("w_lead_id"), E.c.status == literal_column("'active'"),
                         E.c.waiting_for == bindparam("w_type")).values(next_due_at=bindparam("w_at")))


def wake_all(conn: Connection, wakes: list[dict[str, Any]]) -> None:
    """For each of ``wakes`` in order (keys ``w_lead_id``, ``w_type``, ``w_at``), in one statement: make the lead's
    enrollments that wait for that event type due at that time (the engine checks the event itself)."""
    conn.execute(_WAKE, wakes)

