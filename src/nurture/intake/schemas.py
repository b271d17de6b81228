"""The shapes the HTTP API reads and answers (pydantic), and turning their validation errors into one clear message.

Shape is checked here (an email is text, ``occurred_at`` a date with a time zone); meaning is checked by storage
(:func:`nurture.application.event_input.clean_event`, :func:`nurture.core.lead_fields.clean_lead_data`), so the CLI and the API
refuse the same values with the same words.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, ValidationError
from pydantic.json_schema import JsonDict, JsonValue

from nurture.application.event_input import EVENT_TYPE, MAX_BATCH, MAX_ID_LENGTH, EventIn
from nurture.core.lead_fields import MAX_COMPANY_SIZE

_SPACE_OR_CONTROL = r"\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""Control characters and what Python's ``str.strip()`` and ``\\s`` take for white space (ECMA's ``\\s`` differs)."""
_NOT_IN_EMAIL = "@" + _SPACE_OR_CONTROL
EMAIL: JsonDict = {
    "minLength": 1, "maxLength": 254,
    "pattern": f"^[^{_NOT_IN_EMAIL}]+@([^{_NOT_IN_EMAIL}.]+\\.)+[^{_NOT_IN_EMAIL}.]{{2,}}$",
}
"""An email as the server takes it (:func:`nurture.core.lead_fields.clean_email`), for the OpenAPI document."""
EVENT_TYPE_SCHEMA: JsonDict = {"pattern": f"^{EVENT_TYPE.pattern}$", "not": {"enum": ["sales_feedback"]}}
"""An event type as :func:`nurture.application.event_input.clean_event` takes it (``sales_feedback`` is nurture's)."""
ID: JsonDict = {"minLength": 1, "pattern": rf"^[^\x00-\x1f\x7f]*[^{_SPACE_OR_CONTROL}][^\x00-\x1f\x7f]*$"}
"""A client's event id: not blank, no control characters."""


OCCURRED_AT: list[JsonValue] = [{"type": "string", "format": "date-time"}, {"type": "number"}, {"type": "null"}]
"""A time as pydantic reads it: ISO 8601 with an offset, or Unix seconds (UTC)."""
TEXT: JsonDict = {"pattern": r"^[^\x00-\x08\x0e-\x1b\x7f]*$"}
"""A lead's text field: white space is folded into single spaces, any other control character refused."""


class ErrorBody(BaseModel):
    """Every 4xx (and 503) answer of the API: what is wrong, in words (with the place, such as ``events[2].email``)."""

    error: str


ERRORS = {
    400: "The body is not acceptable JSON: empty, malformed, not UTF-8, NaN or Infinity, a number beyond a double or "
         "a whole number beyond 64 bits, an unpaired surrogate escape, a NUL character, or nested more than 64 levels.",
    401: "The credentials are missing or wrong.",
    404: "Not found.",
    409: "The request conflicts with the current state.",
    413: "The body is larger than this route takes.",
    422: "The JSON is well formed, but its content is not valid: each problem is named with its place.",
    503: "No API key is configured (set NURTURE_API_KEY), or the database schema is behind (nurture db upgrade).",
}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error codes answered as :class:`ErrorBody` (``descriptions`` as ``e404=...``)."""
    return {code: {"model": ErrorBody, "description": descriptions.get(f"e{code}", ERRORS[code])} for code in codes}


class EventBody(BaseModel):
    """One engagement event."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None, max_length=MAX_ID_LENGTH, json_schema_extra=ID,
        description="Your id for this event: sending the same id again records it once (safe retries).",
    )
    email: str = Field(description="The lead's email; an unknown email creates the lead.", json_schema_extra=EMAIL)
    type: str = Field(description="Event type, a lower-case slug such as webinar_attended or page_view "
                                  "(sales_feedback is nurture's own).", json_schema_extra=EVENT_TYPE_SCHEMA)
    occurred_at: AwareDatetime | None = Field(
        None, description="When it happened, ISO 8601 with a time zone (default: now; at most a day ahead), or Unix "
                          "seconds.", json_schema_extra={"anyOf": OCCURRED_AT})
    properties: dict[str, Any] = Field(
        default_factory=dict, description="Anything else, such as url: at most 16 KiB as JSON, no NUL characters.")

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

    email: str = Field(json_schema_extra=EMAIL)
    first_name: str | None = Field(None, json_schema_extra=TEXT)
    last_name: str | None = Field(None, json_schema_extra=TEXT)
    company: str | None = Field(None, json_schema_extra=TEXT)
    title: str | None = Field(None, json_schema_extra=TEXT)
    industry: str | None = Field(None, json_schema_extra=TEXT)
    owner: str | None = Field(None, json_schema_extra=TEXT)
    source: str | None = Field(None, description="Where the lead came from (utm_source: google, linkedin, ...); "
                                                 "`utm_source` is taken too.", json_schema_extra=TEXT)
    medium: str | None = Field(None, description="The marketing medium (utm_medium: cpc, email, ...); `utm_medium` "
                                                 "is taken too.", json_schema_extra=TEXT)
    source_campaign: str | None = Field(None, description="The acquisition campaign (utm_campaign); `utm_campaign` "
                                                          "is taken too.", json_schema_extra=TEXT)
    company_size: StrictInt | str | None = Field(
        None, description="Employees, a whole number from 0 to 2147483647 (or its digits as a string, with , or _).",
        json_schema_extra={"minimum": 0, "maximum": MAX_COMPANY_SIZE})
    country: str | None = Field(None, description="ISO 3166-1 alpha-2, such as US or DE.")
    timezone: str | None = Field(None, description="IANA name, such as Europe/Paris.")
    stage: str | None = Field(None, description="lead, mql, sql, opportunity or customer (any case; empty for none): "
                                                "a new lead starts there, an existing one moves only forward. "
                                                "recycled and disqualified are accepted but never applied (rules and "
                                                "sales set them); the answer's stage_not_applied says so.")
    tags: list[str] | str | None = Field(None, description="A list, or one string separated by ';'.")
    fields: dict[str, Any] | None = Field(None, description="Custom fields; a null value removes one.")


class StageNotAppliedBody(BaseModel):
    """A stage the request gave that was not applied: the lead keeps ``stage``."""

    reason: Literal["backwards", "kept", "reserved"] = Field(
        description="backwards: before the lead's stage in lead < mql < sql < opportunity < customer; kept: the lead "
                    "is recycled or disqualified, which only rules, sales or an admin change; reserved: recycled and "
                    "disqualified are set by rules and sales only.")
    stage: str = Field(description="The lead's stage, kept.")
    given: str = Field(description="The stage the request gave.")
    message: str = Field(description="The reason for people, e.g. 'would move backwards: sql → lead'.")


class SavedLeadBody(BaseModel):
    """The answer to ``POST /v1/leads``."""

    email: str
    created: bool
    stage: str
    score: float
    stage_changed: bool
    enrolled: int
    stage_not_applied: StageNotAppliedBody | None = Field(
        None, description="Set when the request's stage was not applied (the rest of the lead was saved).")


class BounceNotice(BaseModel):
    """A bounce, soft bounce or spam complaint for ``POST /v1/webhooks/bounces``: the lead by email or by the message's
    id."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["bounce", "soft_bounce", "spam_complaint"]
    email: str | None = Field(None, description="The lead's email (or give message_id).", json_schema_extra={
        "anyOf": [{"type": "string", **EMAIL}, {"type": "string", "maxLength": 0}, {"type": "null"}]})
    message_id: str | None = Field(None, max_length=998, description="The Message-ID nurture sent, or the provider's id.")
    reason: str | None = Field(None, max_length=2000, description="The provider's reason, such as the SMTP reply.")
    occurred_at: AwareDatetime | None = Field(
        None, description="When it happened, ISO 8601 with a time zone (default: now; at most a day ahead), or Unix "
                          "seconds.", json_schema_extra={"anyOf": OCCURRED_AT})
    id: str | None = Field(None, max_length=MAX_ID_LENGTH, json_schema_extra=ID,
                           description="Your id for this notice (safe retries).")


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
