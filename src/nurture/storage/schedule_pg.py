"""The dispatcher's bulk writes on PostgreSQL (:class:`PostgresDispatchWrites`): one statement per batch, lists as arrays.

The generic statements of :mod:`nurture.storage.schedule` write a batch as an executemany: on PostgreSQL one
``INSERT``/``UPDATE`` per row (psycopg pipelines them, but the server plans and runs each, and SQLAlchemy's
``insertmanyvalues`` writes a new multi-row ``VALUES`` text for every batch size, which psycopg parses again). Here
each write is one statement with one text, its rows as arrays (``INSERT ... SELECT ... FROM unnest(...)``,
``UPDATE ... FROM unnest(...)``), as the intake's :mod:`nurture.storage.event_bulk_pg` does. They go through
SQLAlchemy (``text()`` with typed result columns), so the rows read back are those the generic statements return,
and the values stored are the same: timestamps as aware datetimes, JSON as the text SQLAlchemy's ``JSON`` binds
(``tests/integration/test_dispatch_pg.py`` compares both writers' rows).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.selectable import TextualSelect

from nurture.storage.pg_arrays import array_text
from nurture.storage.tables import D

_DELIVERY_COLUMNS = ", ".join(f'"{column.name}"' for column in D.c)

# each array's element type
_NEW_DELIVERY = (("enrollment_id", "bigint"), ("lead_id", "bigint"), ("campaign_id", "text"), ("step_id", "text"),
                 ("step_key", "text"), ("variant", "text"), ("channel", "text"), ("message_id", "text"),
                 ("campaign_version", "text"))
_ENROLLMENT = (("id", "bigint"), ("step_id", "text"), ("arrived_at", "timestamptz"), ("state", "text"),
               ("next_due_at", "timestamptz"), ("waiting_for", "text"), ("status", "text"),
               ("ended_at", "timestamptz"), ("end_reason", "text"))
_OUTCOME = (("id", "bigint"), ("status", "text"), ("attempts", "integer"), ("error", "text"),
            ("provider_message_id", "text"), ("subject", "text"), ("next_attempt_at", "timestamptz"),
            ("sent_at", "timestamptz"))


def _unnest(columns: Sequence[tuple[str, str]]) -> str:
    """``unnest(CAST(:a AS type[]), ...) WITH ORDINALITY AS v(a, ..., position)``: one row per array position."""
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in columns)
    return f"unnest({arrays}) WITH ORDINALITY AS v({', '.join(name for name, _ in columns)}, position)"


_INSERT_DELIVERIES: TextualSelect = text(
    "INSERT INTO delivery (" + ", ".join(name for name, _ in _NEW_DELIVERY)
    + ", status, attempts, lease_until, created_at) SELECT " + ", ".join(f"v.{name}" for name, _ in _NEW_DELIVERY)
    + ", 'claimed', 0, :lease_until, :created_at FROM " + _unnest(_NEW_DELIVERY)
    + " ORDER BY v.position ON CONFLICT (enrollment_id, step_key) DO NOTHING RETURNING " + _DELIVERY_COLUMNS
).columns(*D.c)

_UPDATE_ENROLLMENTS: TextClause = text(
    "UPDATE enrollment SET " + ", ".join(
        f"{name} = CAST(v.{name} AS json)" if name == "state" else f"{name} = v.{name}"
        for name, _ in _ENROLLMENT[1:])
    + ", lease_until = NULL, lease_owner = NULL FROM " + _unnest(_ENROLLMENT) + " WHERE enrollment.id = v.id"
)

_RECORD_OUTCOMES: TextClause = text(
    "UPDATE delivery SET " + ", ".join(f"{name} = v.{name}" for name, _ in _OUTCOME[1:])
    + ", lease_until = NULL FROM " + _unnest(_OUTCOME) + " WHERE delivery.id = v.id"
)


def _arrays(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Each column's values as PostgreSQL's input text of its array (cast in the statement), as the intake sends them
    (:func:`nurture.storage.event_bulk_pg.array_text`): psycopg's adaptation of a Python list dumps each element in
    Python (about a tenth of a batch's dispatch CPU, by profile)."""
    return {name: array_text([row[name] for row in rows], kind) for name, kind in columns}


class PostgresDispatchWrites:
    """The writes of :func:`nurture.storage.schedule.write_decisions` and :func:`~nurture.storage.schedule._record`,
    each one statement for the whole batch. Rows are dicts with the generic statements' keys."""

    def insert_deliveries(self, conn: Connection, rows: list[dict[str, Any]], *, lease_until: datetime,
                          created_at: datetime) -> list[Any]:
        """Create the deliveries (status ``claimed``, leased) that do not exist yet; return the created rows."""
        params: dict[str, Any] = _arrays(rows, _NEW_DELIVERY)
        params.update(lease_until=lease_until, created_at=created_at)
        return list(conn.execute(_INSERT_DELIVERIES, params).all())

    def update_enrollments(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Advance the enrollments and release their lease (``e_id`` is the enrollment's id; ``state`` a dict)."""
        # JSON as SQLAlchemy's JSON type binds it (json.dumps; a None state as JSON null, not SQL NULL)
        params = _arrays([{**row, "id": row["e_id"], "state": json.dumps(row["state"])} for row in rows], _ENROLLMENT)
        conn.execute(_UPDATE_ENROLLMENTS, params)

    def record_outcomes(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Mark the deliveries' send attempts and release their lease (``d_id`` is the delivery's id)."""
        conn.execute(_RECORD_OUTCOMES, _arrays([{**row, "id": row["d_id"]} for row in rows], _OUTCOME))
