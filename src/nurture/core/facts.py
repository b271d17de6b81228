"""Plain facts the pure core decides on: a lead as the core sees it and what happened to it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nurture.core.frozen import quick_init

OPEN, CLICK = "email_open", "email_click"
UNSUBSCRIBE, BOUNCE, COMPLAINT = "unsubscribe", "bounce", "spam_complaint"


@quick_init
@dataclass(frozen=True)
class LeadView:
    """A lead's fields as conditions and templates read them."""

    key: str  # stable per lead (id or email): seeds the A/B variant choice
    email: str
    stage: str = "lead"
    score: float = 0.0
    timezone: str | None = None
    tags: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)  # first_name, company, industry, company_size, ...
    custom: Mapping[str, Any] = field(default_factory=dict)
    unsubscribed: bool = False
    bounced: bool = False

    def get(self, name: str) -> Any:
        """A field by name: built-in fields first, then custom fields; None if absent."""
        if name in ("email", "stage", "score", "timezone"):
            return getattr(self, name)
        if name == "tags":
            return list(self.tags)
        if name in self.attributes:
            return self.attributes[name]
        return self.custom.get(name)


@quick_init
@dataclass(frozen=True)
class Engagement:
    """Something the lead did (or that happened to its email), at a time."""

    type: str
    at: datetime
    campaign_id: str | None = None
    step_key: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Send:
    """A nurture email that went (or is going) out to the lead."""

    at: datetime
    campaign_id: str
    step_key: str
    content_id: str | None = None


@dataclass(frozen=True)
class History:
    """What the core knows happened to a lead, across all campaigns (only what is at or before 'now' counts)."""

    events: Sequence[Engagement] = ()
    sends: Sequence[Send] = ()

    def with_sends(self, more: Sequence[Send]) -> History:
        """The same history plus sends decided a moment ago."""
        return History(events=self.events, sends=[*self.sends, *more]) if more else self


LEAD_ATTRIBUTES = ("first_name", "last_name", "company", "title", "industry", "company_size", "country", "owner",
                   "source", "medium", "source_campaign")


def lead_from_mapping(data: Mapping[str, Any]) -> LeadView:
    """A LeadView from a plain mapping (a ``--lead`` file, an API body): unknown keys and ``fields`` become custom fields."""
    email = str(data.get("email") or "").strip().lower()
    tags = data.get("tags") or ()
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(";") if t.strip()]
    custom = dict(data.get("fields") or {})
    known = {"email", "stage", "score", "timezone", "tags", "fields", "unsubscribed", "bounced", "id", *LEAD_ATTRIBUTES}
    custom.update({k: v for k, v in data.items() if k not in known})
    return LeadView(
        key=str(data.get("id") or email),
        email=email,
        stage=str(data.get("stage") or "lead"),
        score=float(data.get("score") or 0),
        timezone=data.get("timezone") or None,
        tags=tuple(str(t) for t in tags),
        attributes={k: data[k] for k in LEAD_ATTRIBUTES if data.get(k) is not None},
        custom=custom,
        unsubscribed=bool(data.get("unsubscribed")),
        bounced=bool(data.get("bounced")),
    )


def lead_template_fields(lead: LeadView) -> dict[str, Any]:
    """The ``lead`` object templates see: every attribute (None when unknown), tags, custom fields under ``fields``."""
    fields: dict[str, Any] = {name: lead.attributes.get(name) for name in LEAD_ATTRIBUTES}
    fields.update(
        email=lead.email, stage=lead.stage, score=lead.score, timezone=lead.timezone, tags=list(lead.tags),
        fields=dict(lead.custom),
    )
    return fields
