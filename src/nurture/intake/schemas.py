"""The shapes the HTTP API reads and answers (pydantic), and turning their validation errors into one clear message.

Shape is checked here (an email is text, ``occurred_at`` a date with a time zone); meaning is checked by storage
(:func:`nurture.application.event_input.clean_event`, :func:`nurture.core.lead_fields.clean_lead_data`), so the CLI and the API
refuse the same values with the same words.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, ValidationError

from nurture.application.event_input import MAX_BATCH, MAX_ID_LENGTH, EventIn


class EventBody(BaseModel):
    """One engagement event."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None, max_length=MAX_ID_LENGTH,
        description="Your id for this event: sending the same id again records it once (safe retries).",
    )
    email: str = Field(description="The lead's email; an unknown email creates the lead.")
    type: str = Field(description="Event type, a lower-case slug such as webinar_attended or page_view.")
    occurred_at: AwareDatetime | None = Field(
        None, description="When it happened, ISO 8601 with a time zone (default: now; at most a day ahead)."
    )
    properties: dict[str, Any] = Field(default_factory=dict, description="Anything else, such as url (JSON, 16 KiB).")

    def to_event(self) -> EventIn:
        """The storage form of this event."""
        return EventIn(email=self.email, type=self.type, occurred_at=self.occurred_at, properties=self.properties,
                       id=self.id)


class EventBatch(BaseModel):
    """Several events, recorded all together or not at all."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventBody] = Field(min_length=1, max_length=MAX_BATCH)


class EventResultBody(BaseModel):
    """What became of one event, and the lead's score and stage after it."""

    index: int
    status: Literal["recorded", "duplicate"]
    id: str | None
    email: str
    type: str
    points: float
    score: float
    stage: str
    stage_changed: bool


class EventsResponse(BaseModel):
    """The answer to ``POST /v1/events``: one result per event, in order."""

    recorded: int
    duplicate: int
    results: list[EventResultBody]


class LeadBody(BaseModel):
    """A lead to create or update, by email. Keys other than these become custom fields."""

    model_config = ConfigDict(extra="allow")

    email: str
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    title: str | None = None
    industry: str | None = None
    owner: str | None = None
    company_size: StrictInt | str | None = Field(None, description="Employees, a whole number.")
    country: str | None = Field(None, description="ISO 3166-1 alpha-2, such as US or DE.")
    timezone: str | None = Field(None, description="IANA name, such as Europe/Paris.")
    stage: str | None = Field(None, description="lead, mql, sql, opportunity, customer, recycled or disqualified.")
    tags: list[str] | str | None = Field(None, description="A list, or one string separated by ';'.")
    fields: dict[str, Any] | None = Field(None, description="Custom fields; a null value removes one.")


class SavedLeadBody(BaseModel):
    """The answer to ``POST /v1/leads``."""

    email: str
    created: bool
    stage: str
    score: float
    stage_changed: bool
    enrolled: int


class BounceNotice(BaseModel):
    """A bounce, soft bounce or spam complaint for ``POST /v1/webhooks/bounces``: the lead by email or by the message's
    id."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["bounce", "soft_bounce", "spam_complaint"]
    email: str | None = None
    message_id: str | None = Field(None, max_length=998, description="The Message-ID nurture sent, or the provider's id.")
    reason: str | None = Field(None, max_length=2000)
    occurred_at: AwareDatetime | None = None
    id: str | None = Field(None, max_length=MAX_ID_LENGTH, description="Your id for this notice (safe retries).")


def describe_errors(exc: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as one line each, located like ``events[2].occurred_at: ...``, joined with '; '."""
    parts = []
    for error in exc.errors(include_url=False):
        location = prefix
        for part in error["loc"]:
            location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "timezone_aware":
            message = "needs a time zone offset, such as 2024-05-01T09:30:00Z"
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts[:20]) + (f"; ... and {len(parts) - 20} more" if len(parts) > 20 else "")
