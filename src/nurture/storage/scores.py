"""The reads and writes of rescoring (:mod:`nurture.application.rescore`): each lead's scored events, the lead rows
to rescore, and their ``score`` column.

Points are fixed when an event is recorded; the score is recomputed from them (decay is a function of the time).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from nurture.core.facts import Engagement
from nurture.storage.dialect import for_update_skip_locked
from nurture.storage.tables import EV, L

_SCORED_EVENTS = (
    select(EV.c.lead_id, EV.c.type, EV.c.occurred_at, EV.c.campaign_id, EV.c.step_key, EV.c.properties, EV.c.points)
    .where(EV.c.lead_id.in_(bindparam("lead_ids", expanding=True)), EV.c.points != 0)
    .order_by(EV.c.lead_id, EV.c.occurred_at, EV.c.id)
)


def scored_events(conn: Connection, lead_ids: Sequence[int]) -> dict[int, list[tuple[Engagement, float]]]:
    """Each lead's events that scored (points other than 0: the others add nothing), oldest first."""
    found: dict[int, list[tuple[Engagement, float]]] = {lead_id: [] for lead_id in lead_ids}
    for start in range(0, len(lead_ids), 900):
        rows = conn.execute(_SCORED_EVENTS, {"lead_ids": list(lead_ids[start : start + 900])})
        for row in rows:
            engagement = Engagement(row.type, row.occurred_at, row.campaign_id, row.step_key, row.properties or {})
            found[row.lead_id].append((engagement, float(row.points)))
    return found


_SCORED_POINTS = (
    select(EV.c.lead_id, EV.c.type, EV.c.occurred_at, EV.c.points)
    .where(EV.c.lead_id.in_(bindparam("lead_ids", expanding=True)), EV.c.points != 0)
    .order_by(EV.c.lead_id, EV.c.occurred_at, EV.c.id)
)


def scored_points(conn: Connection, lead_ids: Sequence[int]) -> list[tuple[int, str, datetime, float]]:
    """What scoring needs of each lead's events that scored: (lead id, type, time, points), each lead's oldest first,
    in the order of :func:`scored_events` (properties and the rest are left unread)."""
    found: list[tuple[int, str, datetime, float]] = []
    for start in range(0, len(lead_ids), 900):
        rows = conn.execute(_SCORED_POINTS, {"lead_ids": list(lead_ids[start : start + 900])})
        found.extend((row.lead_id, row.type, row.occurred_at, float(row.points)) for row in rows)
    return found


def lead_by_email(conn: Connection, email: str) -> Any:
    """The row of the lead with this (normalized) email, or None."""
    return conn.execute(select(L).where(L.c.email == email)).one_or_none()


def leads_by_email(conn: Connection, emails: Sequence[str]) -> Iterator[list[Any]]:
    """The rows of the leads with these emails, a chunk of them at a time."""
    for start in range(0, len(emails), 900):
        yield list(conn.execute(select(L).where(L.c.email.in_(bindparam("emails", expanding=True))),
                                {"emails": list(emails[start : start + 900])}))


def leads_after(conn: Connection, last_id: int, limit: int) -> list[Any]:
    """Up to ``limit`` lead rows with ids above ``last_id``, in id order, locked for the transaction; on PostgreSQL
    leads another transaction holds are skipped."""
    query = select(L).where(L.c.id > last_id).order_by(L.c.id).limit(limit)
    return list(conn.execute(for_update_skip_locked(query, conn.dialect)))


def store_scores(conn: Connection, updates: Sequence[Mapping[str, Any]]) -> None:
    """Write each ``{"lead_id": ..., "new_score": ...}`` into its lead's ``score`` column."""
    conn.execute(update(L).where(L.c.id == bindparam("lead_id")).values(score=bindparam("new_score")), updates)


def leads_page(conn: Connection, last_id: int, limit: int) -> list[Any]:
    """Up to ``limit`` lead rows with ids above ``last_id``, in id order (a read: nothing is locked)."""
    return list(conn.execute(select(L).where(L.c.id > last_id).order_by(L.c.id).limit(limit)))


_EVENTS_OF_TYPES = (
    select(EV.c.lead_id, EV.c.type, EV.c.occurred_at, EV.c.campaign_id, EV.c.step_key, EV.c.properties, EV.c.points)
    .where(EV.c.lead_id.in_(bindparam("lead_ids", expanding=True)), EV.c.type.in_(bindparam("types", expanding=True)))
    .order_by(EV.c.lead_id, EV.c.occurred_at, EV.c.id)
)


def events_of_types(conn: Connection, lead_ids: Sequence[int], types: Sequence[str]) -> dict[int, list[tuple[Engagement, float]]]:
    """Each lead's events of these types with their stored points, oldest first (whatever points they scored)."""
    found: dict[int, list[tuple[Engagement, float]]] = {lead_id: [] for lead_id in lead_ids}
    if not types:
        return found
    for start in range(0, len(lead_ids), 900):
        rows = conn.execute(_EVENTS_OF_TYPES, {"lead_ids": list(lead_ids[start : start + 900]), "types": list(types)})
        for row in rows:
            engagement = Engagement(row.type, row.occurred_at, row.campaign_id, row.step_key, row.properties or {})
            found[row.lead_id].append((engagement, float(row.points)))
    return found
