"""Leads in bulk (the CSV import): per batch one SELECT of the leads that exist, one executemany upsert, one insert
of stage changes, instead of ORM objects per row. On PostgreSQL each is one statement with the batch's lists as arrays
(:mod:`nurture.storage.lead_bulk_pg`).

Which values win, and which stage changes a batch makes, is decided in :mod:`nurture.application.import_leads`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, func, select, update

from nurture.storage import lead_bulk_pg
from nurture.storage.database import SerializedJSON, UTCDateTime, executemany_prepared, inline_constant
from nurture.storage.dialect import bulk_writer, sends_arrays, upsert_insert
from nurture.storage.dialect import refresh_statistics as refresh_tables
from nurture.storage.tables import L

_SELECT_CHUNK = 5000  # well under SQLite's limit of bound parameters per statement


def existing(connection: Connection, emails: list[str], *, lock: bool = False) -> dict[str, dict[str, Any]]:
    """Email -> ``id``, ``email``, ``stage``, ``tags`` and ``fields`` of the leads with these emails; with ``lock``,
    their rows are locked until the transaction ends, in email order (as intake locks leads: no deadlock)."""
    if sends_arrays(connection):
        return lead_bulk_pg.existing(connection, emails, lock=lock)
    found: dict[str, dict[str, Any]] = {}
    query = select(L.c.id, L.c.email, L.c.stage, L.c.tags, L.c.fields)
    if lock:
        query = query.order_by(L.c.email).with_for_update()
        emails = sorted(emails)
    for start in range(0, len(emails), _SELECT_CHUNK):
        chunk = emails[start : start + _SELECT_CHUNK]
        for row in connection.execute(query.where(L.c.email.in_(chunk))).mappings():
            found[row["email"]] = dict(row)
    return found


def upsert(connection: Connection, params: list[dict[str, Any]], now: datetime, *,
           keep_unless_given: Sequence[str]) -> None:
    """Insert or update (by email) one lead per row of ``params``, all dated ``now``: the row's values as the driver
    takes them (``tags`` and ``fields`` JSON text), a None in ``keep_unless_given`` keeping the lead's value."""
    if sends_arrays(connection):
        lead_bulk_pg.upsert(connection, params, now, keep_unless_given)
        return
    executemany_prepared(connection, _upsert_statement(connection, now, keep_unless_given), params)


def _upsert_statement(connection: Connection, now: datetime, keep_unless_given: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (email) DO UPDATE, with the batch's constants in the SQL and JSON pre-serialized."""
    timestamp = inline_constant(now, UTCDateTime(), connection.dialect)
    statement = upsert_insert(L, connection.dialect).values(
        tags=bindparam("tags", type_=SerializedJSON()),
        fields=bindparam("fields", type_=SerializedJSON()),
        created_at=timestamp,
        updated_at=timestamp,
        stage_changed_at=timestamp,
    )
    new = statement.excluded
    kept = {name: func.coalesce(new[name], L.c[name]) for name in keep_unless_given}
    return statement.on_conflict_do_update(
        index_elements=[L.c.email],
        set_={
            **kept,
            "stage": new.stage,
            "tags": new.tags,
            "fields": new.fields,
            "updated_at": new.updated_at,
            "stage_changed_at": case((L.c.stage != new.stage, new.stage_changed_at), else_=L.c.stage_changed_at),
        },
    )


def ids(connection: Connection, emails: list[str]) -> Iterator[Any]:
    """Rows of ``id`` and ``email`` of the leads with these emails."""
    if sends_arrays(connection):
        yield from lead_bulk_pg.ids(connection, emails)
        return
    for start in range(0, len(emails), _SELECT_CHUNK):
        chunk = emails[start : start + _SELECT_CHUNK]
        yield from connection.execute(select(L.c.id, L.c.email).where(L.c.email.in_(chunk)))


def insert_stage_changes(connection: Connection, changes: list[dict[str, Any]]) -> None:
    """Record these stage changes (one statement: the event batch's, :func:`nurture.storage.dialect.bulk_writer`)."""
    bulk_writer(connection.dialect).insert_stage_changes(connection, changes)


def set_missing_attribution(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Give each lead (``a_id``) the ``source``, ``medium`` and ``source_campaign`` of its row, unless it has one of
    the three already (a concurrent write may have given it one since it was read)."""
    connection.execute(
        update(L).where(L.c.id == bindparam("a_id"), L.c.source.is_(None), L.c.medium.is_(None),
                        L.c.source_campaign.is_(None))
        .values(source=bindparam("source"), medium=bindparam("medium"), source_campaign=bindparam("source_campaign")),
        rows,
    )


def refresh_statistics(connection: Connection) -> None:
    """Refresh the planner's statistics of the tables an import fills (leads, their stage changes and enrollments)."""
    refresh_tables(connection, ["lead", "stage_change", "enrollment"])


def highest_id(connection: Connection) -> int:
    """The largest lead id (0 without leads): the leads a batch inserts next come after it."""
    return int(connection.execute(select(func.max(L.c.id))).scalar() or 0)
