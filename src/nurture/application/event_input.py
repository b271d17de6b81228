"""Engagement events as callers hand them in (HTTP, CLI, tracking links, provider webhooks), what became of each,
and the checks every event passes before anything is written."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from nurture.core.frozen import quick_init
from nurture.core.lead_fields import clean_email, contains_nul
from nurture.errors import InvalidInput

EVENT_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
"""What an event type looks like: a lower-case slug such as ``webinar_attended`` or ``page.view``."""

MAX_BATCH = 1000
MAX_ID_LENGTH = 200
MAX_PROPERTIES_BYTES = 16 * 1024
MAX_FUTURE = timedelta(days=1)
"""How far ahead of the server's clock an event may be dated (clock skew, not scheduling)."""

RECORDED, DUPLICATE = "recorded", "duplicate"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_PROBLEMS_SHOWN = 20


@quick_init
@dataclass(frozen=True)
class EventIn:
    """One engagement event as a caller hands it in (HTTP, CLI, tracking links, provider webhooks)."""

    email: str
    type: str
    occurred_at: datetime | None = None  # aware; None: now
    properties: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None  # the client's id: the same id is recorded once
    campaign_id: str | None = None  # set by tracking links
    step_key: str | None = None
    delivery_id: int | None = None
    dedupe_within: timedelta | None = None
    """Tracking: an event of the same lead, type, delivery and url within this long is a duplicate (link bursts)."""


@quick_init
@dataclass(frozen=True)
class EventResult:
    """What became of one event of a batch, and the lead's score and stage after it."""

    index: int
    status: str  # recorded | duplicate
    email: str
    type: str
    id: str | None
    points: float
    score: float
    stage: str
    stage_changed: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "index": self.index, "status": self.status, "id": self.id, "email": self.email, "type": self.type,
            "points": self.points, "score": self.score, "stage": self.stage, "stage_changed": self.stage_changed,
        }


class InvalidEvents(InvalidInput):
    """Some events of a batch are invalid; nothing of the batch was recorded."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        shown = [f"events[{index}]: {message}" for index, message in problems[:_MAX_PROBLEMS_SHOWN]]
        if len(problems) > _MAX_PROBLEMS_SHOWN:
            shown.append(f"... and {len(problems) - _MAX_PROBLEMS_SHOWN} more")
        super().__init__("; ".join(shown))


# --- validation -------------------------------------------------------------------------------------------------


def clean_properties(value: Any) -> dict[str, Any]:
    """Event properties as a plain JSON object within the size limit, or :class:`InvalidInput`."""
    if value is None or (type(value) is dict and not value):  # most events carry none
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput("properties must be an object of names to values")
    if not all(isinstance(key, str) for key in value):
        raise InvalidInput("property names must be strings")
    try:
        text = json.dumps(dict(value), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        raise InvalidInput("properties must hold JSON values only (text, numbers, true/false, null, lists, objects)") from None
    if contains_nul(value):
        raise InvalidInput("properties cannot hold NUL characters")
    if len(text.encode("utf-8")) > MAX_PROPERTIES_BYTES:
        raise InvalidInput(f"properties are larger than {MAX_PROPERTIES_BYTES // 1024} KiB")
    return json.loads(text)


RESERVED_TYPES = frozenset({"sales_feedback"})
"""Event types only nurture writes (sales decisions): a client posting one could fake a decision."""


def clean_event(event: EventIn, now: datetime) -> EventIn:
    """The event normalized (email lower-cased, time in UTC, properties plain JSON), or :class:`InvalidInput` naming
    every problem."""
    problems: list[str] = []
    email = ""
    try:
        email = clean_email(event.email) if isinstance(event.email, str) and event.email.strip() else ""
        if not email:
            problems.append("email is required")
    except InvalidInput as exc:
        problems.append(str(exc))
    if event.type in RESERVED_TYPES:
        problems.append(f"type {event.type!r} is recorded by nurture itself and cannot be posted")
    elif not isinstance(event.type, str) or not EVENT_TYPE.fullmatch(event.type):
        problems.append(
            f"invalid type {event.type!r}: use a lower-case slug of at most 64 characters (letters, digits, _ . -), "
            "starting with a letter, such as webinar_attended"
        )
    occurred_at: datetime | None = event.occurred_at if event.occurred_at is not None else now
    if not isinstance(occurred_at, datetime):
        problems.append("occurred_at must be a date and time")
    elif occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
        problems.append("occurred_at needs a time zone offset, such as 2024-05-01T09:30:00Z")
    else:
        try:
            occurred_at = occurred_at.astimezone(timezone.utc)
        except OverflowError:
            occurred_at = None
            problems.append("occurred_at is out of range")
        if occurred_at is not None and occurred_at > now + MAX_FUTURE:
            problems.append(f"occurred_at {occurred_at.isoformat()} is more than a day in the future")
    if event.id is not None and (not isinstance(event.id, str) or not event.id.strip() or len(event.id) > MAX_ID_LENGTH
                                 or _CONTROL.search(event.id)):
        problems.append(f"id must be a non-empty string of at most {MAX_ID_LENGTH} characters, no control characters")
    properties: dict[str, Any] = {}
    try:
        properties = clean_properties(event.properties)
    except InvalidInput as exc:
        problems.append(str(exc))
    if problems:
        raise InvalidInput("; ".join(problems))
    return EventIn(email=email, type=event.type, occurred_at=occurred_at, properties=properties, id=event.id,
                   campaign_id=event.campaign_id, step_key=event.step_key, delivery_id=event.delivery_id,
                   dedupe_within=event.dedupe_within)


def clean_events(events: Sequence[EventIn], now: datetime) -> list[EventIn]:
    """Every event cleaned, or :class:`InvalidEvents` listing each bad one by its index in the batch."""
    if len(events) > MAX_BATCH:
        raise InvalidInput(f"at most {MAX_BATCH} events per batch, got {len(events)}")
    cleaned: list[EventIn] = []
    problems: list[tuple[int, str]] = []
    for index, event in enumerate(events):
        try:
            cleaned.append(clean_event(event, now))
        except InvalidInput as exc:
            problems.append((index, str(exc)))
    if problems:
        raise InvalidEvents(problems)
    return cleaned
