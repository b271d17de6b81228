"""Reads and writes of promotions to SQL: the round-robin counters, what a promotion's brief is built from, the
promotion notifications waiting in the outbox, and the open SQLs the handoff jobs remind sales of.

The decisions are :mod:`nurture.application.promote`'s; these only run the queries, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from nurture.core.facts import CLICK, OPEN
from nurture.storage.dialect import upsert_insert
from nurture.storage.tables import D, E, EV, L, M, O, SC

SQL = "sql"
"""The stage a promotion moves a lead to: its stage change is the promotion."""
ROUND_ROBIN_KEY = "routing.round_robin.{team}"
"""The ``meta`` row holding a team's next round-robin position."""


def next_round_robin(conn: Connection, team: str) -> int:
    """The team's round-robin position for this assignment, advanced for the next one (in the caller's transaction).

    The row is locked until the caller commits, so concurrent promotions take consecutive positions.
    """
    key = ROUND_ROBIN_KEY.format(team=team)
    conn.execute(upsert_insert(M, conn.dialect).values(key=key, value="0").on_conflict_do_nothing(
        index_elements=["key"]))
    current = conn.execute(select(M.c.value).where(M.c.key == key).with_for_update()).scalar_one()
    position = int(current) if str(current).isdigit() else 0
    conn.execute(update(M).where(M.c.key == key).values(value=str(position + 1)))
    return position


def set_owner(conn: Connection, lead_id: int, owner: str) -> None:
    """Store the lead's owner (the owner's email)."""
    conn.execute(update(L).where(L.c.id == lead_id).values(owner=owner))


# -- what a brief is built from ----------------------------------------------------------------------------------------


def lead_and_promotion(conn: Connection, lead_id: int, promotion_id: int) -> tuple[Any, Any]:
    """The lead's row and the stage change ``promotion_id`` of that lead (each None when unknown)."""
    lead = conn.execute(select(L).where(L.c.id == lead_id)).first()
    promotion = conn.execute(select(SC).where(SC.c.id == promotion_id, SC.c.lead_id == lead_id)).first()
    return lead, promotion


_EVENT_COLUMNS = (EV.c.id, EV.c.type, EV.c.occurred_at, EV.c.recorded_at, EV.c.campaign_id, EV.c.step_key,
                  EV.c.properties, EV.c.points, D.c.subject)


def _events_of(lead_id: int) -> Any:
    return select(*_EVENT_COLUMNS).select_from(EV.outerjoin(D, D.c.id == EV.c.delivery_id)).where(
        EV.c.lead_id == lead_id)


def latest_events(conn: Connection, lead_id: int, limit: int) -> list[Any]:
    """The lead's latest ``limit`` events, newest first, each with the subject of the delivery it answers."""
    return list(conn.execute(_events_of(lead_id).order_by(EV.c.occurred_at.desc(), EV.c.id.desc()).limit(limit)))


def latest_event_until(conn: Connection, lead_id: int, event_type: str, recorded_by: datetime) -> Any:
    """The lead's last event of this type recorded by ``recorded_by`` (as :func:`latest_events` reads it), or None."""
    return conn.execute(_events_of(lead_id).where(
        EV.c.type == event_type, EV.c.recorded_at <= recorded_by
    ).order_by(EV.c.id.desc()).limit(1)).first()


def enrollments_of(conn: Connection, lead_id: int) -> list[Any]:
    """The lead's enrollments, the oldest first."""
    return list(conn.execute(select(E).where(E.c.lead_id == lead_id).order_by(E.c.enrolled_at, E.c.id)))


def engaged_deliveries(conn: Connection, lead_id: int) -> dict[int, set[str]]:
    """Delivery id -> the engagement (opens, clicks) the lead recorded with it."""
    engaged: dict[int, set[str]] = {}
    for row in conn.execute(select(EV.c.delivery_id, EV.c.type).distinct().where(
            EV.c.lead_id == lead_id, EV.c.delivery_id.is_not(None), EV.c.type.in_([OPEN, CLICK]))):
        engaged.setdefault(row.delivery_id, set()).add(row.type)
    return engaged


def deliveries_of(conn: Connection, lead_id: int) -> list[Any]:
    """The lead's deliveries, in the order they were made."""
    return list(conn.execute(select(D).where(D.c.lead_id == lead_id).order_by(D.c.id)))


# -- promotion notifications in the outbox -----------------------------------------------------------------------------


def latest_promotion_id(conn: Connection, lead_id: int) -> int | None:
    """The id of the lead's latest promotion (stage change to ``sql``), or None."""
    return conn.execute(
        select(func.max(SC.c.id)).where(SC.c.lead_id == lead_id, SC.c.to_stage == SQL)
    ).scalar()


def pending_notifications(conn: Connection, dedup_keys: Sequence[str]) -> list[Any]:
    """The outbox rows with these dedup keys still waiting to go out (``id``, ``kind``, ``payload``)."""
    return list(conn.execute(select(O.c.id, O.c.kind, O.c.payload).where(
        O.c.dedup_key.in_(dedup_keys), O.c.status == "pending")))


def set_pending_payload(conn: Connection, outbox_id: int, payload: Any) -> None:
    """Replace the payload of an outbox row if it still waits to go out."""
    conn.execute(update(O).where(O.c.id == outbox_id, O.c.status == "pending").values(payload=payload))


def queued(conn: Connection, dedup_keys: Iterable[str]) -> set[str]:
    """Which of these dedup keys the outbox holds already (in any status)."""
    keys = sorted(set(dedup_keys))
    found: set[str] = set()
    for start in range(0, len(keys), 900):
        found.update(conn.execute(select(O.c.dedup_key).where(
            O.c.dedup_key.in_(bindparam("keys", expanding=True))), {"keys": keys[start : start + 900]}).scalars())
    return found


# -- open SQLs ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenSql:
    """A lead waiting at stage ``sql`` for sales' decision, with its latest promotion."""

    lead_id: int
    promotion_id: int
    promoted_at: datetime
    owner: str | None


def open_sqls(conn: Connection) -> list[OpenSql]:
    """Every lead at stage ``sql`` with its latest promotion, the longest waiting first.

    Read from the leads at ``sql`` (the stage index), each one's latest move to ``sql`` looked up by its own stage
    changes: what the worker's digest and SLA jobs read at every run, so it costs the SQLs waiting, not every lead's
    history of promotions."""
    promotion = SC.alias("promotion")
    latest = (select(func.max(promotion.c.id)).where(promotion.c.lead_id == L.c.id, promotion.c.to_stage == SQL)
              .scalar_subquery())
    query = (
        select(L.c.id, L.c.owner, SC.c.id.label("promotion_id"), SC.c.at)
        .select_from(L.join(SC, SC.c.id == latest))
        .where(L.c.stage == SQL)
        .order_by(SC.c.at, SC.c.id)
    )
    return [OpenSql(row.id, row.promotion_id, row.at, row.owner) for row in conn.execute(query)]
