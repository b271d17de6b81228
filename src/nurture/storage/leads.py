"""Leads: writing one (fields already cleaned), finding one, and gathering everything nurture knows about one.

The values come cleaned by :mod:`nurture.core.lead_fields` (through :func:`nurture.application.lead_input.upsert_lead`),
and the stage judged by :mod:`nurture.core.lifecycle`: what is written here was decided before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from nurture.core.lead_fields import LEAD_FIELDS, normalize_email
from nurture.errors import LeadNotFound
from nurture.storage.models import (
    STAGE_ACTORS,
    Delivery,
    EngagementEvent,
    Enrollment,
    Lead,
    StageChange,
)


def lead_to_write(session: Session, email: str, now: datetime) -> tuple[Lead, bool]:
    """The lead with this (cleaned) email, locked until the transaction ends, and False; or a bare new lead dated
    ``now`` (flushed, so it has its id) and True. If another process inserted the same email meanwhile, theirs."""
    lead = _find(session, email, lock=True)
    if lead is not None:
        return lead, False
    return _insert_new(session, email, now)


def write_lead(
    session: Session, lead: Lead, cleaned: Mapping[str, Any], *, created: bool, actor: str, reason: str = "",
    now: datetime,
) -> Lead:
    """Update the fields given of ``lead`` (from :func:`lead_to_write`; ``created`` as it said); a new stage is
    recorded in its history.

    ``cleaned`` is what :func:`nurture.core.lead_fields.clean_lead_data` returned, its ``email`` left out or the
    lead's own (it is not changed). Custom fields are merged (a ``None`` value removes one); ``tags`` replace the
    lead's tags. The caller's session holds the change until it commits. ``now`` dates the change.
    """
    if actor not in STAGE_ACTORS:
        raise ValueError(f"unknown actor {actor!r}")
    previous_stage = None if created else lead.stage
    for key, value in cleaned.items():
        if key == "email":
            continue
        if key == "fields":
            merged = {**lead.fields, **value}
            lead.fields = {name: item for name, item in merged.items() if item is not None}
        elif key == "stage":
            lead.stage = value or lead.stage
        elif key == "tags":
            lead.tags = value or []
        else:
            setattr(lead, key, value)
    if lead.stage != (previous_stage or "lead"):  # a new lead's history starts at its first stage past "lead"
        lead.stage_changed_at = now
        assert lead.id is not None  # a new lead was flushed by _insert_new's savepoint
        session.add(
            StageChange(
                lead_id=lead.id,
                from_stage=previous_stage,
                to_stage=lead.stage,
                at=now,
                reason=reason or f"set by {actor}",
                actor=actor,
            )
        )
    lead.updated_at = now
    session.add(lead)
    session.flush()
    return lead


def _find(session: Session, email: str, *, lock: bool = False) -> Lead | None:
    query = select(Lead).where(col(Lead.email) == email)
    return session.execute(query.with_for_update() if lock else query).scalar_one_or_none()


def _insert_new(session: Session, email: str, now: datetime) -> tuple[Lead, bool]:
    """Insert a bare lead (True); if another process inserted the same email meanwhile, use theirs (False)."""
    lead = Lead(email=email, created_at=now, updated_at=now, stage_changed_at=now)
    try:
        with session.begin_nested():
            session.add(lead)
    except IntegrityError:
        existing = _find(session, email, lock=True)
        if existing is None:
            raise
        return existing, False
    return lead, True


def get_lead(session: Session, email: str) -> Lead:
    """The lead with this email (any case or surrounding spaces), or :class:`LeadNotFound`."""
    lead = _find(session, normalize_email(email))
    if lead is None:
        raise LeadNotFound(f"no lead with email {normalize_email(email)!r}")
    return lead


def lead_summary(session: Session, email: str, *, events: int = 20, deliveries: int = 50) -> dict[str, Any]:
    """Everything about one lead, JSON-ready (datetimes as ISO 8601 strings): the lead, its enrollments,
    its latest deliveries and events, and its stage history."""
    lead = get_lead(session, email)
    enrollments = session.execute(
        select(Enrollment).where(col(Enrollment.lead_id) == lead.id).order_by(col(Enrollment.enrolled_at), col(Enrollment.id))
    ).scalars()
    recent_deliveries = session.execute(
        select(Delivery).where(col(Delivery.lead_id) == lead.id).order_by(col(Delivery.id).desc()).limit(deliveries)
    ).scalars()
    recent_events = session.execute(
        select(EngagementEvent)
        .where(col(EngagementEvent.lead_id) == lead.id)
        .order_by(col(EngagementEvent.occurred_at).desc(), col(EngagementEvent.id).desc())
        .limit(events)
    ).scalars()
    history = session.execute(
        select(StageChange).where(col(StageChange.lead_id) == lead.id).order_by(col(StageChange.at), col(StageChange.id))
    ).scalars()
    return {
        "lead": _row(lead, _SUMMARY_LEAD),
        "enrollments": [{**_row(enrollment, _SUMMARY_ENROLLMENT), "path": list((enrollment.state or {}).get("path", []))}
                        for enrollment in enrollments],
        "deliveries": [_row(delivery, _SUMMARY_DELIVERY) for delivery in recent_deliveries],
        "events": [_row(event, _SUMMARY_EVENT) for event in recent_events],
        "stage_history": [_row(change, _SUMMARY_STAGE_CHANGE) for change in history],
    }


_SUMMARY_LEAD = ("id", *LEAD_FIELDS, "fields", "score", "unsubscribed_at", "bounced_at", "created_at", "updated_at",
                 "stage_changed_at")
_SUMMARY_ENROLLMENT = ("id", "campaign_id", "status", "held_out", "step_id", "next_due_at", "waiting_for",
                       "enrolled_at", "ended_at", "end_reason")
_SUMMARY_DELIVERY = ("id", "campaign_id", "step_key", "variant", "channel", "status", "attempts", "error", "subject",
                     "created_at", "sent_at", "next_attempt_at")
_SUMMARY_EVENT = ("type", "occurred_at", "points", "campaign_id", "step_key", "properties")
_SUMMARY_STAGE_CHANGE = ("from_stage", "to_stage", "at", "reason", "actor")


def _row(obj: object, names: Iterable[str]) -> dict[str, Any]:
    values = {name: getattr(obj, name) for name in names}
    for name, value in values.items():
        if isinstance(value, datetime):
            values[name] = value.isoformat()
        elif isinstance(value, dict):
            values[name] = dict(value)  # plain copies of the change-tracking containers
        elif isinstance(value, list):
            values[name] = list(value)
    return values
