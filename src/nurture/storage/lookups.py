"""Reads the HTTP intake needs besides recording: the delivery behind a tracking token or a provider's message id,
and the counts ``/metrics`` reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from nurture.storage.database import transaction
from nurture.storage.tables import D, E, L, O


@dataclass(frozen=True)
class DeliveryTarget:
    """A delivery and its lead, as a tracking link or a bounce notice refers to it."""

    delivery_id: int
    lead_id: int
    email: str
    campaign_id: str
    step_key: str
    unsubscribed: bool


def _target_query() -> Any:
    return select(
        D.c.id, D.c.lead_id, D.c.campaign_id, D.c.step_key, L.c.email, L.c.unsubscribed_at
    ).join(L, L.c.id == D.c.lead_id)


def _target(row: Any) -> DeliveryTarget:
    return DeliveryTarget(row.id, row.lead_id, row.email, row.campaign_id, row.step_key, row.unsubscribed_at is not None)


def delivery_target(engine: Engine, delivery_ref: str) -> DeliveryTarget | None:
    """The delivery a tracking token names (its ``delivery_ref`` is the delivery id), None if there is none."""
    if not delivery_ref.isascii() or not delivery_ref.isdigit() or len(delivery_ref) > 18:
        return None
    with transaction(engine, read_only=True) as conn:
        row = conn.execute(_target_query().where(D.c.id == int(delivery_ref))).one_or_none()
    return _target(row) if row is not None else None


def delivery_for_message_id(engine: Engine, message_id: str) -> DeliveryTarget | None:
    """The delivery whose Message-ID (with or without angle brackets) or provider message id is ``message_id``."""
    bare = message_id.strip().strip("<>").strip()
    if not bare:
        return None
    with transaction(engine, read_only=True) as conn:
        row = conn.execute(
            _target_query().where(D.c.provider_message_id.in_([bare, f"<{bare}>"])).order_by(D.c.id.desc()).limit(1)
        ).first()
        if row is None:
            row = conn.execute(
                _target_query().where(D.c.message_id.in_([f"<{bare}>", bare])).order_by(D.c.id.desc()).limit(1)
            ).first()
    return _target(row) if row is not None else None


def status_counts(engine: Engine) -> dict[str, dict[str, int]]:
    """Leads by stage, enrollments and deliveries by status, pending outbox rows: what ``/metrics`` reports."""
    with transaction(engine, read_only=True) as conn:
        counts: dict[str, dict[str, int]] = {
            "leads": dict(conn.execute(select(L.c.stage, func.count()).group_by(L.c.stage)).all()),
            "enrollments": dict(conn.execute(select(E.c.status, func.count()).group_by(E.c.status)).all()),
            "deliveries": dict(conn.execute(select(D.c.status, func.count()).group_by(D.c.status)).all()),
            "outbox": dict(conn.execute(select(O.c.status, func.count()).group_by(O.c.status)).all()),
        }
        counts["suppressed"] = {
            "unsubscribed": conn.execute(select(func.count()).select_from(L).where(L.c.unsubscribed_at.is_not(None))).scalar_one(),
            "bounced": conn.execute(select(func.count()).select_from(L).where(L.c.bounced_at.is_not(None))).scalar_one(),
        }
    return counts
