"""Leads: validating their fields, creating or updating one, and gathering everything nurture knows about one.

The field cleaners are shared by ``leads add``, the HTTP API and the CSV importer, so a value is accepted or
refused the same way everywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from nurture.errors import InvalidInput, LeadNotFound
from nurture.storage.models import (
    LEAD_STAGES,
    STAGE_ACTORS,
    Delivery,
    EngagementEvent,
    Enrollment,
    Lead,
    StageChange,
)

TEXT_FIELDS = ("first_name", "last_name", "company", "title", "industry", "owner")
"""Free-text lead columns: stripped, and empty means "no value"."""

LEAD_FIELDS = ("email", *TEXT_FIELDS, "company_size", "country", "timezone", "stage", "tags")
"""The lead columns a caller may set; any other key is a custom field."""

_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@(?:[^@\s.\x00-\x1f\x7f]+\.)+[^@\s.\x00-\x1f\x7f]{2,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_COMPANY_SIZE = 2**31 - 1
_COUNTRY = re.compile(r"[A-Z]{2}")


def normalize_email(email: str) -> str:
    """The form emails are stored and looked up in: stripped and lower-cased."""
    return email.strip().lower()


def clean_email(value: str) -> str:
    """A normalized email, or :class:`InvalidInput` if it does not look like one."""
    email = normalize_email(value)
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise InvalidInput(f"invalid email {value!r}")
    return email


def clean_company_size(value: str | int | None) -> int | None:
    """A non-negative whole number of employees (None when empty)."""
    if value is None or isinstance(value, int):
        number = value
    else:
        text = value.strip().replace(",", "").replace("_", "")
        if not text:
            return None
        try:
            number = int(text)
        except ValueError:
            raise InvalidInput(f"company_size must be a whole number, got {value!r}") from None
    if number is not None and number < 0:
        raise InvalidInput(f"company_size must not be negative, got {value!r}")
    if number is not None and number > MAX_COMPANY_SIZE:
        raise InvalidInput(f"company_size is out of range, got {value!r}")
    return number


def clean_country(value: str | None) -> str | None:
    """An ISO 3166-1 alpha-2 country code in upper case (None when empty)."""
    if value is None or not value.strip():
        return None
    country = value.strip().upper()
    if not _COUNTRY.fullmatch(country):
        raise InvalidInput(f"country must be a 2-letter ISO code such as US or DE, got {value!r}")
    return country


def clean_timezone(value: str | None) -> str | None:
    """An IANA time zone name such as ``Europe/Paris`` (None when empty)."""
    if value is None or not value.strip():
        return None
    name = value.strip()
    if not _is_timezone(name):
        raise InvalidInput(f"unknown timezone {value!r} (use an IANA name such as Europe/Paris)")
    return name


@lru_cache(maxsize=4096)
def _is_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def clean_stage(value: str | None) -> str | None:
    """A lifecycle stage name in lower case (None when empty)."""
    if value is None or not value.strip():
        return None
    stage = value.strip().lower()
    if stage not in LEAD_STAGES:
        raise InvalidInput(f"unknown stage {value!r} (one of {', '.join(LEAD_STAGES)})")
    return stage


def clean_tags(value: str | Iterable[str] | None) -> list[str] | None:
    """Tags from a list or a ``;``-separated string: stripped, without blanks or repeats (None when empty)."""
    if not value:
        return None
    parts = value.split(";") if isinstance(value, str) else value
    tags = list(dict.fromkeys(stripped for tag in parts if (stripped := tag.strip())))
    return tags or None


def clean_text(value: Any) -> str | None:
    """A stripped one-line string (whitespace runs folded, control characters refused), None when empty.

    Lead fields end up in email headers and in PostgreSQL text columns, neither of which takes a line break or NUL.
    """
    if value is None:
        return None
    text = " ".join(str(value).split())
    if _CONTROL.search(text):
        raise InvalidInput(f"text fields cannot hold control characters, got {text!r}")
    return text or None


def clean_custom_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Custom fields as plain JSON (no NaN or infinity, no NUL characters), or :class:`InvalidInput`."""
    try:
        json.dumps(dict(fields), allow_nan=False, default=_refuse)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"custom fields must be plain JSON values: {exc}") from None
    if contains_nul(fields):
        raise InvalidInput("custom fields cannot hold NUL characters")
    return dict(fields)


def contains_nul(value: Any) -> bool:
    """Whether a JSON-like value holds a NUL character anywhere (PostgreSQL text and JSON cannot store one)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(contains_nul(item) for item in value)
    return False


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON value")


FIELD_CLEANERS: dict[str, Callable[[Any], Any]] = {
    **dict.fromkeys(TEXT_FIELDS, clean_text),
    "company_size": clean_company_size,
    "country": clean_country,
    "timezone": clean_timezone,
    "stage": clean_stage,
    "tags": clean_tags,
}
"""The cleaner of every lead column except email; each returns None for an empty value."""


def clean_lead_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalize lead data; unknown keys (and a ``fields`` mapping) become custom ``fields``.

    Only the keys present are returned, so an update touches only what the caller gave. Every problem is
    reported at once in one :class:`InvalidInput`.
    """
    cleaned: dict[str, Any] = {}
    custom: dict[str, Any] = dict(data.get("fields") or {})
    problems: list[str] = []
    if not data.get("email"):
        problems.append("email is required")
    for key, value in data.items():
        try:
            if key == "email":
                cleaned["email"] = clean_email(str(value)) if value else None
            elif key in FIELD_CLEANERS:
                cleaned[key] = FIELD_CLEANERS[key](value)
            elif key != "fields":
                custom[key] = value
        except InvalidInput as exc:
            problems.append(str(exc))
    if custom:
        try:
            custom = clean_custom_fields(custom)
        except InvalidInput as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidInput("; ".join(problems))
    if custom:
        cleaned["fields"] = custom
    return cleaned


def upsert_lead(
    session: Session, data: Mapping[str, Any], *, actor: str, reason: str = "", now: datetime
) -> Lead:
    """Create the lead with ``data["email"]`` or update the fields given; a new stage is recorded in its history.

    Custom fields are merged (a ``None`` value removes one); ``tags`` replace the lead's tags. The caller's
    session holds the change until it commits. ``now`` dates the change.
    """
    if actor not in STAGE_ACTORS:
        raise ValueError(f"unknown actor {actor!r}")
    cleaned = clean_lead_data(data)
    email = cleaned.pop("email")
    lead = _find(session, email)
    previous_stage = lead.stage if lead is not None else None
    if lead is None:
        lead = _insert_new(session, email, now)
    for key, value in cleaned.items():
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


def _find(session: Session, email: str) -> Lead | None:
    return session.execute(select(Lead).where(Lead.email == email)).scalar_one_or_none()


def _insert_new(session: Session, email: str, now: datetime) -> Lead:
    """Insert a bare lead; if another process inserted the same email meanwhile, use theirs."""
    lead = Lead(email=email, created_at=now, updated_at=now, stage_changed_at=now)
    try:
        with session.begin_nested():
            session.add(lead)
    except IntegrityError:
        existing = _find(session, email)
        if existing is None:
            raise
        return existing
    return lead


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
        select(Enrollment).where(Enrollment.lead_id == lead.id).order_by(Enrollment.enrolled_at, Enrollment.id)
    ).scalars()
    recent_deliveries = session.execute(
        select(Delivery).where(Delivery.lead_id == lead.id).order_by(Delivery.id.desc()).limit(deliveries)
    ).scalars()
    recent_events = session.execute(
        select(EngagementEvent)
        .where(EngagementEvent.lead_id == lead.id)
        .order_by(EngagementEvent.occurred_at.desc(), EngagementEvent.id.desc())
        .limit(events)
    ).scalars()
    history = session.execute(
        select(StageChange).where(StageChange.lead_id == lead.id).order_by(StageChange.at, StageChange.id)
    ).scalars()
    return {
        "lead": _row(lead, _SUMMARY_LEAD),
        "enrollments": [_row(enrollment, _SUMMARY_ENROLLMENT) for enrollment in enrollments],
        "deliveries": [_row(delivery, _SUMMARY_DELIVERY) for delivery in recent_deliveries],
        "events": [_row(event, _SUMMARY_EVENT) for event in recent_events],
        "stage_history": [_row(change, _SUMMARY_STAGE_CHANGE) for change in history],
    }


_SUMMARY_LEAD = ("id", *LEAD_FIELDS, "fields", "score", "unsubscribed_at", "bounced_at", "created_at", "updated_at",
                 "stage_changed_at")
_SUMMARY_ENROLLMENT = ("id", "campaign_id", "status", "step_id", "next_due_at", "waiting_for", "enrolled_at",
                       "ended_at", "end_reason")
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
