"""Reads of the engagement events the event batch asks one at a time (the bulk ones: :mod:`nurture.storage.event_bulk`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from nurture.storage.tables import E, EV


def repeated_points(conn: Connection, lead_id: int, event_type: str, at: datetime, within: timedelta,
                    delivery_id: int | None, url: Any) -> float | None:
    """The points of an event of this lead, type, delivery and ``url`` property within ``within`` of ``at`` (one
    that a tracking burst repeats), None if there is none."""
    query = select(EV.c.properties, EV.c.points).where(
        EV.c.lead_id == lead_id, EV.c.type == event_type,
        EV.c.occurred_at >= at - within,
        EV.c.occurred_at <= at + within,
    )
    if delivery_id is None:
        query = query.where(EV.c.delivery_id.is_(None))
    else:
        query = query.where(EV.c.delivery_id == delivery_id)
    for row in conn.execute(query):
        if (row.properties or {}).get("url") == url:
            return float(row.points)
    return None


def goal_reached(conn: Connection, lead_id: int, campaign_ids: Sequence[str], at: datetime) -> Sequence[str]:
    """Of these campaigns, those the lead is active in since ``at`` or before: the ones an event at ``at`` that is
    their goal ends (a late-arriving old event does not end a newer enrollment)."""
    return conn.execute(
        select(E.c.campaign_id).where(
            E.c.lead_id == lead_id, E.c.status == "active", E.c.campaign_id.in_(campaign_ids),
            E.c.enrolled_at <= at,
        )
    ).scalars().all()


def event_times(conn: Connection, lead_id: int, event_type: str, start: datetime, end: datetime) -> list[datetime]:
    """When the lead's events of this type happened, from ``start`` to ``end`` (both included)."""
    return list(conn.execute(
        select(EV.c.occurred_at).where(
            EV.c.lead_id == lead_id, EV.c.type == event_type, EV.c.occurred_at >= start, EV.c.occurred_at <= end,
        )
    ).scalars())
