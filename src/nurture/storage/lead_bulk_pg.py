"""The CSV import's bulk statements on PostgreSQL (:mod:`nurture.storage.lead_rows`, and the enrollments an import
starts, :mod:`nurture.storage.enrollments`), each with one SQL text whatever the batch's size.

As the intake's (:mod:`nurture.storage.event_bulk_pg`): lists go as binary arrays (``= ANY(%b)``, ``unnest(...)``), so
psycopg parses each text once and PostgreSQL runs it prepared after a few executions; a batch is one statement,
not an executemany of one statement per row (whose per-row execution cost more of the server's CPU than the rows'
writes, and most of the client's time in psycopg's pipeline). Rows go in the order given (``WITH ORDINALITY ...
ORDER BY``), so new rows take their ids in that order, as one execution per row gave them. These statements go to
the psycopg connection itself (:func:`nurture.storage.database.driver`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection

from nurture.storage.database import driver

# the array type of each column these statements send as a list (text for the JSON ones: cast to json)
_TYPES = {"email": "text", "first_name": "text", "last_name": "text", "company": "text", "title": "text",
          "industry": "text", "owner": "text", "source": "text", "medium": "text", "source_campaign": "text",
          "company_size": "int", "country": "text", "timezone": "text", "stage": "text", "tags": "text",
          "fields": "text", "score": "float8"}
_JSON = frozenset({"tags", "fields"})

_EXISTING = "SELECT id, email, stage, tags, fields FROM lead WHERE email = ANY(%b::text[])"
_LOCK_EXISTING = f"{_EXISTING} ORDER BY email FOR UPDATE OF lead"
_IDS = "SELECT id, email FROM lead WHERE email = ANY(%b::text[])"


def _arrays(columns: Sequence[str]) -> str:
    return ", ".join(f"%b::{_TYPES[name]}[]" for name in columns)


def _upsert_sql(columns: Sequence[str], keep_unless_given: Sequence[str]) -> str:
    """INSERT ... SELECT FROM unnest(...) ON CONFLICT (email) DO UPDATE, as :func:`lead_rows.upsert` describes it;
    the batch's time is the last parameter."""
    values = ", ".join(f"v.{name}::json" if name in _JSON else f"v.{name}" for name in columns)
    kept = "".join(f"{name} = coalesce(excluded.{name}, lead.{name}), " for name in keep_unless_given)
    return (f"INSERT INTO lead ({', '.join(columns)}, created_at, updated_at, stage_changed_at) "
            f"SELECT {values}, t.now, t.now, t.now FROM unnest({_arrays(columns)}) WITH ORDINALITY "
            f"AS v({', '.join(columns)}, position), (SELECT %s::timestamptz AS now) AS t ORDER BY v.position "
            f"ON CONFLICT (email) DO UPDATE SET {kept}stage = excluded.stage, tags = excluded.tags, "
            "fields = excluded.fields, updated_at = excluded.updated_at, stage_changed_at = CASE WHEN "
            "lead.stage <> excluded.stage THEN excluded.stage_changed_at ELSE lead.stage_changed_at END")


_UPSERTS: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}

_START_ENROLLMENTS = (
    "INSERT INTO enrollment (lead_id, campaign_id, step_id, campaign_version, priority, held_out, status, arrived_at, "
    "next_due_at, enrolled_at, state) SELECT v.lead_id, v.campaign_id, v.step_id, v.campaign_version, v.priority, "
    "v.held_out, 'active', t.now, t.now, t.now, '{}' FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], "
    "%b::int[], %b::bool[]) WITH ORDINALITY AS v(lead_id, campaign_id, step_id, campaign_version, priority, held_out, "
    "position), (SELECT %s::timestamptz AS now) AS t ORDER BY v.position "
    "ON CONFLICT (lead_id, campaign_id) WHERE status = 'active' DO NOTHING"
)
START_COLUMNS = ("lead_id", "campaign_id", "step_id", "campaign_version", "priority", "held_out")
"""The keys of a row of :func:`start_enrollments`."""


def existing(conn: Connection, emails: list[str], *, lock: bool) -> dict[str, dict[str, Any]]:
    """As :func:`nurture.storage.lead_rows.existing`, in one statement."""
    if lock:
        emails = sorted(emails)
    rows = driver(conn, _LOCK_EXISTING if lock else _EXISTING, (emails,))
    return {email: {"id": lead_id, "email": email, "stage": stage, "tags": tags, "fields": fields}
            for lead_id, email, stage, tags, fields in rows}


def upsert(conn: Connection, params: list[dict[str, Any]], now: datetime, keep_unless_given: Sequence[str]) -> None:
    """As :func:`nurture.storage.lead_rows.upsert`, in one statement."""
    columns = tuple(params[0])
    key = (columns, tuple(keep_unless_given))
    sql = _UPSERTS.get(key)
    if sql is None:
        sql = _UPSERTS[key] = _upsert_sql(columns, keep_unless_given)
    arrays: list[Any] = []
    for name in columns:
        values = [row[name] for row in params]
        if _TYPES[name] == "float8":
            values = [float(value) for value in values]  # one type per list (a score of 0 may be an int)
        arrays.append(values)
    driver(conn, sql, (*arrays, now))


class LeadId(NamedTuple):
    id: int
    email: str


def ids(conn: Connection, emails: list[str]) -> Iterator[LeadId]:
    """Rows of ``id`` and ``email`` of the leads with these emails, in one statement."""
    return (LeadId(lead_id, email) for lead_id, email in driver(conn, _IDS, (emails,)))


def start_enrollments(conn: Connection, now: datetime, rows: list[dict[str, Any]]) -> int:
    """As :func:`nurture.storage.enrollments.start`, in one statement; how many were created."""
    arrays = [[row[name] for row in rows] for name in START_COLUMNS]
    return max(driver(conn, _START_ENROLLMENTS, (*arrays, now)).rowcount, 0)
