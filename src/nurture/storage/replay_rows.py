"""The reads of a replay (:mod:`nurture.application.replay`): enrollments active in a period, a page at a time in id
order, and what their leads went through: rows, events, email deliveries, stage changes. Reads only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import BindParameter

from nurture.storage.tables import D, E, EV, L, SC

_LEAD_IDS: BindParameter[list[int]] = bindparam("lead_ids", expanding=True)
_CHUNK = 900


def enrollments_page(conn: Connection, campaign_ids: Sequence[str], since: datetime, until: datetime, *,
                     after_id: int, limit: int) -> list[Any]:
    """Up to ``limit`` enrollments with ids above ``after_id``, in id order, of these campaigns, enrolled by ``until``
    and not ended before ``since``."""
    query = (
        select(E.c.id, E.c.lead_id, E.c.campaign_id, E.c.status, E.c.step_id, E.c.arrived_at, E.c.enrolled_at,
               E.c.ended_at, E.c.end_reason, E.c.state, E.c.held_out)
        .where(E.c.id > after_id, E.c.campaign_id.in_(list(campaign_ids)), E.c.enrolled_at <= until,
               or_(E.c.ended_at.is_(None), E.c.ended_at >= since))
        .order_by(E.c.id)
        .limit(limit)
    )
    return list(conn.execute(query))


def _by_lead(conn: Connection, query: Any, lead_ids: Sequence[int], params: dict[str, Any]) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {lead_id: [] for lead_id in lead_ids}
    ids = list(lead_ids)
    for start in range(0, len(ids), _CHUNK):
        for row in conn.execute(query, {**params, "lead_ids": ids[start : start + _CHUNK]}):
            found[row.lead_id].append(row)
    return found


def leads(conn: Connection, lead_ids: Sequence[int]) -> dict[int, Any]:
    """Lead id -> its row."""
    rows = _by_lead(conn, select(L, L.c.id.label("lead_id")).where(L.c.id.in_(_LEAD_IDS)), lead_ids, {})
    return {lead_id: found[0] for lead_id, found in rows.items() if found}


_EVENTS = (
    select(EV.c.lead_id, EV.c.type, EV.c.occurred_at, EV.c.campaign_id, EV.c.step_key, EV.c.properties)
    .where(EV.c.lead_id.in_(_LEAD_IDS), EV.c.occurred_at >= bindparam("since"), EV.c.occurred_at <= bindparam("until"))
    .order_by(EV.c.lead_id, EV.c.occurred_at, EV.c.id)
)


def events(conn: Connection, lead_ids: Sequence[int], since: datetime, until: datetime) -> dict[int, list[Any]]:
    """Lead id -> its events that occurred in [since, until], oldest first."""
    return _by_lead(conn, _EVENTS, lead_ids, {"since": since, "until": until})


_DELIVERIES = (
    select(D.c.lead_id, D.c.enrollment_id, D.c.campaign_id, D.c.step_id, D.c.step_key, D.c.status, D.c.created_at,
           D.c.sent_at)
    .where(D.c.lead_id.in_(_LEAD_IDS), D.c.channel == "email", D.c.created_at <= bindparam("until"))
    .order_by(D.c.lead_id, D.c.created_at, D.c.id)
)


def email_deliveries(conn: Connection, lead_ids: Sequence[int], until: datetime) -> dict[int, list[Any]]:
    """Lead id -> its email deliveries (any status) created by ``until``, oldest first."""
    return _by_lead(conn, _DELIVERIES, lead_ids, {"until": until})


_STAGES = (
    select(SC.c.lead_id, SC.c.at, SC.c.from_stage, SC.c.to_stage)
    .where(SC.c.lead_id.in_(_LEAD_IDS))
    .order_by(SC.c.lead_id, SC.c.at, SC.c.id)
)


def stage_changes(conn: Connection, lead_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Lead id -> its stage changes, oldest first (later ones too: they tell what its stage was before)."""
    return _by_lead(conn, _STAGES, lead_ids, {})
