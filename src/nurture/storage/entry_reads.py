"""What deciding enrollment reads: the leads that may enter (narrowed in SQL by :mod:`nurture.storage.entry_sql`),
their past enrollments and entry events, the leads whose wait to enter again ends, and the sweep's bookmarks.

Every query reads one table, selected by lead ids or a range of them: a plan of the database can only read
that table by its index or scan it once, never once per lead (there is no join to turn into a nested loop).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.engine import Connection

from nurture.storage.dialect import json_text, refresh_statistics, upsert_insert
from nurture.storage.entry_sql import EntrySql
from nurture.storage.rows import LEAD_COLUMNS
from nurture.storage.tables import E, EV, L, M

_IDS: Any = bindparam("ids", expanding=True)
_LEAD = [L.c[name] for name in ("id", "email", "stage", "score", "timezone", "tags", "fields", "unsubscribed_at",
                               "bounced_at", *LEAD_COLUMNS)]  # what a LeadView needs (not the score state)


def leads_by_ids(conn: Connection, lead_ids: Sequence[int], sql: EntrySql) -> list[Any]:
    """The rows (as :func:`nurture.storage.rows.lead_view` reads them, with ``sql``'s flags) of these leads that
    some campaign may take, in id order."""
    if not lead_ids:
        return []
    return list(conn.execute(select(*_LEAD, *sql.flags).where(L.c.id.in_(_IDS), sql.where).order_by(L.c.id),
                             {"ids": list(lead_ids)}).all())


def leads_in_range(conn: Connection, after_id: int, up_to_id: int, sql: EntrySql) -> list[Any]:
    """The rows of the leads with ids in (``after_id``, ``up_to_id``] that some campaign may take, in id order: a
    range of the primary key, whatever the statistics say."""
    # .all(): the driver's fetchall loads the rows in one call; iterating the result calls its fetchone per row
    return list(conn.execute(select(*_LEAD, *sql.flags).where(L.c.id > after_id, L.c.id <= up_to_id, sql.where)
                             .order_by(L.c.id)).all())


def lead_id_bounds(conn: Connection) -> tuple[int, int] | None:
    """The smallest and largest lead id, None without leads."""
    low, high = conn.execute(select(func.min(L.c.id), func.max(L.c.id))).one()
    return None if low is None else (int(low), int(high))


def lead_count(conn: Connection) -> int:
    """How many leads there are."""
    return int(conn.execute(select(func.count()).select_from(L)).scalar_one())


def past_enrollments(conn: Connection, lead_ids: Sequence[int], *, window: tuple[int, int] | None = None,
                     ) -> dict[tuple[int, str], list[Any]]:
    """(lead id, campaign id) -> the lead's enrollments in it (``status``, ``ended_at``, ``enrolled_at``).

    Leads of a range of ids (``window``: after, up to), or dense enough ids, are read as a range of ``lead_id`` (one
    index range, however many ids: a plan cannot take it for most of the table), others by list."""
    past: dict[tuple[int, str], list[Any]] = {}
    if not lead_ids:
        return past
    query = select(E.c.lead_id, E.c.campaign_id, E.c.status, E.c.ended_at, E.c.enrolled_at)
    wanted = set(lead_ids)
    for row in conn.execute(*_by_lead(query, E.c.lead_id, lead_ids, window)):
        if row.lead_id in wanted:
            past.setdefault((row.lead_id, row.campaign_id), []).append(row)
    return past


def entry_events(conn: Connection, lead_ids: Sequence[int], types: Iterable[str], *,
                 window: tuple[int, int] | None = None) -> dict[int, list[Any]]:
    """Lead id -> its events (``type``, ``occurred_at``) of these types: what a ``had_event`` filter reads (read
    as :func:`past_enrollments` reads)."""
    found: dict[int, list[Any]] = {}
    kinds = sorted(set(types))
    if not lead_ids or not kinds:
        return found
    query = select(EV.c.lead_id, EV.c.type, EV.c.occurred_at).where(EV.c.type.in_(kinds))
    wanted = set(lead_ids)
    for row in conn.execute(*_by_lead(query, EV.c.lead_id, lead_ids, window)):
        if row.lead_id in wanted:
            found.setdefault(row.lead_id, []).append(row)
    return found


def _by_lead(query: Any, column: Any, lead_ids: Sequence[int], window: tuple[int, int] | None,
             ) -> tuple[Any, dict[str, Any]]:
    if window is not None:
        return query.where(column > window[0], column <= window[1]), {}
    low, high = min(lead_ids), max(lead_ids)
    if high - low < 2 * len(lead_ids):  # dense enough: the range reads few rows of other leads
        return query.where(column >= low, column <= high), {}
    return query.where(column.in_(_IDS)), {"ids": sorted(set(lead_ids))}


def ended_between(conn: Connection, campaign_id: str, after: datetime, up_to: datetime) -> list[int]:
    """Leads whose enrollment in the campaign ended in (``after``, ``up_to``]: read through the index on campaign and
    status, so the cost is the campaign's ended enrollments' index entries, not the leads."""
    query = select(E.c.lead_id).where(E.c.campaign_id == campaign_id, E.c.status.in_(("completed", "exited")),
                                      E.c.ended_at > after, E.c.ended_at <= up_to)
    return sorted({row.lead_id for row in conn.execute(query)})


def recycle_times(conn: Connection) -> list[tuple[int, Any]]:
    """(lead id, the ``recycle_at`` custom field as stored) of the recycled leads that have one."""
    value = json_text(L.c.fields, "recycle_at", conn.dialect)
    query = select(L.c.id, value.label("recycle_at")).where(L.c.stage == "recycled", value.is_not(None))
    return [(row.id, row.recycle_at) for row in conn.execute(query)]


# -- the sweep's bookmarks in the meta table ------------------------------------------------------------------------

AUDIENCE_PREFIX = "enrolled_audience:"
"""Meta key prefix: ``enrolled_audience:<campaign id>`` holds the audience key whose leads were all considered."""
CHECKED_AT = "enrollment_checked_at"
"""Meta key: the time up to which the sweep looked for waits to enter that ended (ISO, UTC)."""


def bookmarks(conn: Connection) -> dict[str, str]:
    """The sweep's meta rows: audience keys by campaign id, and the checked-at time under :data:`CHECKED_AT`."""
    rows = conn.execute(select(M.c.key, M.c.value).where(
        (M.c.key == CHECKED_AT) | M.c.key.startswith(AUDIENCE_PREFIX, autoescape=True)))
    return {row.key: row.value for row in rows}


def set_bookmark(conn: Connection, key: str, value: str) -> None:
    """Write one meta row."""
    statement = upsert_insert(M, conn.dialect).values(key=key, value=value)
    conn.execute(statement.on_conflict_do_update(index_elements=["key"], set_={"value": value}))


def drop_bookmarks(conn: Connection, keys: Iterable[str]) -> None:
    """Delete these meta rows."""
    keys = list(keys)
    if keys:
        conn.execute(delete(M).where(M.c.key.in_(keys)))


def forget_audiences(conn: Connection) -> None:
    """Delete every recorded audience key: the next sweep considers every lead for every campaign."""
    conn.execute(delete(M).where(M.c.key.startswith(AUDIENCE_PREFIX, autoescape=True)))


def refresh_enrollment_statistics(conn: Connection, *, leads: bool = False) -> None:
    """After many enrollments (and leads) were written: the planner's statistics of their tables."""
    refresh_statistics(conn, ["lead", "enrollment"] if leads else ["enrollment"])

