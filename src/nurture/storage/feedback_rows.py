"""The rows a sales decision reads and writes: the lead, its promotions (stage changes to ``sql``), the
``sales_feedback`` event that decided one, and the decision's own stage change and lead update.

What a decision does is decided in :mod:`nurture.application.sales_feedback`; nothing here judges.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from nurture.storage.tables import EV, L, SC

SALES_FEEDBACK = "sales_feedback"
"""The engagement event type of a decision; its points are the score adjustment."""


def lead(conn: Connection, lead_id: int) -> Any:
    """The lead's row, or None."""
    return conn.execute(select(L).where(L.c.id == lead_id)).first()


def lock_lead(conn: Connection, *, email: str | None = None, lead_id: int | None = None) -> Any:
    """The row of the lead with this (normalized) email or id, locked until the transaction ends (later decisions
    on the lead wait for this one); None when there is none."""
    query = select(L).where(L.c.email == email if email is not None else L.c.id == lead_id)
    return conn.execute(query.with_for_update()).first()


def promotion(conn: Connection, lead_id: int, promotion_id: int) -> Any:
    """The stage change ``promotion_id`` if it made this lead an SQL, else None."""
    return conn.execute(
        select(SC).where(SC.c.id == promotion_id, SC.c.lead_id == lead_id, SC.c.to_stage == "sql")
    ).first()


def latest_promotion(conn: Connection, lead_id: int) -> Any:
    """The lead's latest stage change to ``sql``, or None."""
    return conn.execute(
        select(SC).where(SC.c.lead_id == lead_id, SC.c.to_stage == "sql").order_by(SC.c.id.desc()).limit(1)
    ).first()


def decision_event(conn: Connection, lead_id: int, promotion_id: int) -> Any:
    """The ``sales_feedback`` event that decided this promotion, or None."""
    rows = conn.execute(
        select(EV).where(EV.c.lead_id == lead_id, EV.c.type == SALES_FEEDBACK).order_by(EV.c.id.desc())
    )
    for row in rows:
        if (row.properties or {}).get("promotion_id") == promotion_id:
            return row
    return None


def insert_stage_change(conn: Connection, *, lead_id: int, from_stage: str, to_stage: str, at: datetime, reason: str,
                        actor: str) -> int:
    """Record a stage change; return its id."""
    return conn.execute(SC.insert().values(
        lead_id=lead_id, from_stage=from_stage, to_stage=to_stage, at=at, reason=reason, actor=actor,
    ).returning(SC.c.id)).scalar_one()


def insert_decision_event(conn: Connection, *, lead_id: int, at: datetime, points: float,
                          properties: Mapping[str, Any]) -> None:
    """Record the ``sales_feedback`` event of a decision (occurred and recorded at ``at``)."""
    conn.execute(EV.insert().values(
        lead_id=lead_id, type=SALES_FEEDBACK, occurred_at=at, recorded_at=at, points=points, properties=properties,
    ))


def update_lead(conn: Connection, lead_id: int, values: Mapping[str, Any]) -> None:
    """Write these column values to the lead's row."""
    conn.execute(update(L).where(L.c.id == lead_id).values(**values))
