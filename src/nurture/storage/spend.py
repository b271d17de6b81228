"""Marketing spend rows (``nurture spend import``): written all together, read for a report's period."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from nurture.storage.dialect import upsert_insert
from nurture.storage.tables import SP


def replace_spend(conn: Connection, rows: Sequence[dict[str, Any]], now: datetime) -> None:
    """Insert the rows (period_start, period_end, source, campaign, amount_cents, currency); a row whose period,
    source and campaign are stored already replaces that row's amount and currency."""
    if not rows:
        return
    insert = upsert_insert(SP, conn.dialect)
    statement = insert.on_conflict_do_update(
        index_elements=["period_start", "period_end", "source", "campaign"],
        set_={"amount_cents": insert.excluded.amount_cents, "currency": insert.excluded.currency,
              "imported_at": insert.excluded.imported_at},
    )
    conn.execute(statement, [{**row, "imported_at": now} for row in rows])


def spend_rows(conn: Connection, *, first_day: date | None = None, last_day: date | None = None) -> list[Any]:
    """The stored spend whose period overlaps ``first_day`` to ``last_day`` (both included; None: unbounded)."""
    query = select(SP.c.period_start, SP.c.period_end, SP.c.source, SP.c.campaign, SP.c.amount_cents, SP.c.currency)
    if first_day is not None:
        query = query.where(SP.c.period_end >= first_day)
    if last_day is not None:
        query = query.where(SP.c.period_start <= last_day)
    return list(conn.execute(query.order_by(SP.c.period_start, SP.c.source, SP.c.campaign)))
