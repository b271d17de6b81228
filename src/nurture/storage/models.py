"""The ORM models: a lead, its enrollments, deliveries, events, stage history, the outbox, spend, step outcomes,
definition versions and the rollups, as objects (a lead read and written through a session, the tests' fixtures).

Each model is mapped onto its Core table of :mod:`nurture.storage.tables`, where the schema is declared once (columns,
types, defaults, indexes): the models only add the Python side, the fields' types and the defaults of objects built
in Python. Queries use the Core tables; importing this module brings in SQLModel and SQLAlchemy's ORM, which the
commands that only run queries do without. JSON columns track top-level changes (``enrollment.state["variant"] = "b"``
is saved); a change nested deeper needs the whole value assigned again.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.mutable import MutableDict, MutableList
from sqlmodel import Field, SQLModel

from nurture.clock import SYSTEM_CLOCK
from nurture.storage.tables import (
    ACTIVE,
    D,
    DV,
    E,
    EV,
    ID,
    JSON_DICT,
    JSON_LIST,
    L,
    M,
    METADATA,
    O,
    RD,
    RE,
    RL,
    RM,
    RO,
    RS,
    RX,
    SC,
    SO,
    SP,
    VD,
)
from nurture.storage.vocabulary import (
    DEFINITION_KINDS,
    DELIVERY_CHANNELS,
    DELIVERY_STATUSES,
    ENROLLMENT_STATUSES,
    OUTBOX_STATUSES,
    STAGE_ACTORS,
)

__all__ = [
    "ACTIVE", "DEFINITION_KINDS", "DELIVERY_CHANNELS", "DELIVERY_STATUSES", "ENROLLMENT_STATUSES", "ID", "METADATA",
    "OUTBOX_STATUSES", "STAGE_ACTORS", "DefinitionVersion", "Delivery", "EngagementEvent", "Enrollment", "Lead", "Meta",
    "Outbox", "RollupDecisionDay", "RollupDeliveryDay", "RollupEnrollmentDay", "RollupLeadDay", "RollupMoveDay",
    "RollupOutcomeDay", "RollupSqlDay", "SQLModel", "Spend", "StageChange", "StepOutcome", "VariantDecision",
]

# the JSON columns' types, tracked as mutable on every model that maps them (before any model is mapped)
MutableDict.as_mutable(JSON_DICT)
MutableList.as_mutable(JSON_LIST)


class Lead(SQLModel, table=True):
    """A person marketing nurtures, keyed by email (stored stripped and lower-cased)."""

    __table__ = L

    id: int | None = Field(default=None, sa_column=L.c.id)
    email: str = Field(sa_column=L.c.email)
    first_name: str | None = Field(default=None, sa_column=L.c.first_name)
    last_name: str | None = Field(default=None, sa_column=L.c.last_name)
    company: str | None = Field(default=None, sa_column=L.c.company)
    title: str | None = Field(default=None, sa_column=L.c.title)
    industry: str | None = Field(default=None, sa_column=L.c.industry)
    company_size: int | None = Field(default=None, sa_column=L.c.company_size)
    country: str | None = Field(default=None, sa_column=L.c.country)  # ISO 3166-1 alpha-2, upper case
    timezone: str | None = Field(default=None, sa_column=L.c.timezone)  # IANA name
    tags: list[str] = Field(default_factory=list, sa_column=L.c.tags)
    fields: dict[str, Any] = Field(default_factory=dict, sa_column=L.c.fields)  # custom fields
    stage: str = Field(default="lead", sa_column=L.c.stage)
    score: float = Field(default=0.0, sa_column=L.c.score)
    owner: str | None = Field(default=None, sa_column=L.c.owner)
    # Where the lead came from (acquisition): utm_source / utm_medium / utm_campaign, from the import, the API, or
    # the first event that carried them. Cost per lead and CAC are reported by these.
    source: str | None = Field(default=None, sa_column=L.c.source)
    medium: str | None = Field(default=None, sa_column=L.c.medium)
    source_campaign: str | None = Field(default=None, sa_column=L.c.source_campaign)
    unsubscribed_at: datetime | None = Field(default=None, sa_column=L.c.unsubscribed_at)
    bounced_at: datetime | None = Field(default=None, sa_column=L.c.bounced_at)
    created_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=L.c.created_at)
    updated_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=L.c.updated_at)
    stage_changed_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=L.c.stage_changed_at)
    # The lead's scored history summed per event type as of a time, and recent days' counts for the daily caps: what
    # recording an event reads instead of the history itself (nurture.core.score_state). NULL: read the history.
    score_state: list[Any] | None = Field(default=None, sa_column=L.c.score_state)


class Enrollment(SQLModel, table=True):
    """A lead's way through one campaign; while active, ``next_due_at`` is its place in the schedule."""

    __table__ = E

    id: int | None = Field(default=None, sa_column=E.c.id)
    lead_id: int = Field(sa_column=E.c.lead_id)
    campaign_id: str = Field(sa_column=E.c.campaign_id)
    status: str = Field(default="active", sa_column=E.c.status)
    step_id: str | None = Field(default=None, sa_column=E.c.step_id)  # the step the lead is waiting on
    arrived_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=E.c.arrived_at)  # when it reached that step
    next_due_at: datetime | None = Field(default=None, sa_column=E.c.next_due_at)
    waiting_for: str | None = Field(default=None, sa_column=E.c.waiting_for)
    lease_until: datetime | None = Field(default=None, sa_column=E.c.lease_until)
    lease_owner: str | None = Field(default=None, sa_column=E.c.lease_owner)
    state: dict[str, Any] = Field(default_factory=dict, sa_column=E.c.state)  # owned by the step engine
    campaign_version: str | None = Field(default=None, sa_column=E.c.campaign_version)
    priority: int = Field(default=0, sa_column=E.c.priority)
    enrolled_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=E.c.enrolled_at)
    ended_at: datetime | None = Field(default=None, sa_column=E.c.ended_at)
    end_reason: str | None = Field(default=None, sa_column=E.c.end_reason)
    # in the campaign's holdout group: walks the campaign's path, is sent nothing (nurture.core.holdout)
    held_out: bool = Field(default=False, sa_column=E.c.held_out)


class Delivery(SQLModel, table=True):
    """One message (email or webhook) of one step to one enrollment; unique, so it is never sent twice."""

    __table__ = D

    id: int | None = Field(default=None, sa_column=D.c.id)
    enrollment_id: int = Field(sa_column=D.c.enrollment_id)
    lead_id: int = Field(sa_column=D.c.lead_id)
    campaign_id: str = Field(sa_column=D.c.campaign_id)
    step_id: str = Field(sa_column=D.c.step_id)
    step_key: str = Field(sa_column=D.c.step_key)  # the step id, or "step/content-id" for content streams
    variant: str | None = Field(default=None, sa_column=D.c.variant)
    channel: str = Field(default="email", sa_column=D.c.channel)
    status: str = Field(default="claimed", sa_column=D.c.status)
    attempts: int = Field(default=0, sa_column=D.c.attempts)
    next_attempt_at: datetime | None = Field(default=None, sa_column=D.c.next_attempt_at)
    lease_until: datetime | None = Field(default=None, sa_column=D.c.lease_until)
    message_id: str | None = Field(default=None, sa_column=D.c.message_id)
    provider_message_id: str | None = Field(default=None, sa_column=D.c.provider_message_id)
    subject: str | None = Field(default=None, sa_column=D.c.subject)
    error: str | None = Field(default=None, sa_column=D.c.error)
    created_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=D.c.created_at)
    sent_at: datetime | None = Field(default=None, sa_column=D.c.sent_at)
    campaign_version: str | None = Field(default=None, sa_column=D.c.campaign_version)


class EngagementEvent(SQLModel, table=True):
    """Something a lead did (opened, clicked, visited, replied, ...) and the points scoring gave it."""

    __table__ = EV

    id: int | None = Field(default=None, sa_column=EV.c.id)
    lead_id: int = Field(sa_column=EV.c.lead_id)
    type: str = Field(sa_column=EV.c.type)
    occurred_at: datetime = Field(sa_column=EV.c.occurred_at)
    recorded_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=EV.c.recorded_at)
    external_id: str | None = Field(default=None, sa_column=EV.c.external_id)
    campaign_id: str | None = Field(default=None, sa_column=EV.c.campaign_id)
    step_key: str | None = Field(default=None, sa_column=EV.c.step_key)
    delivery_id: int | None = Field(default=None, sa_column=EV.c.delivery_id)
    properties: dict[str, Any] = Field(default_factory=dict, sa_column=EV.c.properties)
    points: float = Field(default=0.0, sa_column=EV.c.points)


class StageChange(SQLModel, table=True):
    """One move of a lead through the lifecycle, with who moved it and why."""

    __table__ = SC
    # reports: the moves of a period, read from the index alone

    id: int | None = Field(default=None, sa_column=SC.c.id)
    lead_id: int = Field(sa_column=SC.c.lead_id)
    from_stage: str | None = Field(default=None, sa_column=SC.c.from_stage)
    to_stage: str = Field(sa_column=SC.c.to_stage)
    at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=SC.c.at)
    reason: str = Field(default="", sa_column=SC.c.reason)
    actor: str = Field(sa_column=SC.c.actor)  # one of STAGE_ACTORS


class Spend(SQLModel, table=True):
    """Marketing spend of one source (and optionally one of its campaigns) over a period of whole days, as imported
    by ``nurture spend import``; importing the same period, source and campaign again replaces the amount."""

    __table__ = SP

    id: int | None = Field(default=None, sa_column=SP.c.id)
    period_start: date = Field(sa_column=SP.c.period_start)
    period_end: date = Field(sa_column=SP.c.period_end)  # the last day, included
    source: str = Field(sa_column=SP.c.source)
    campaign: str = Field(default="", sa_column=SP.c.campaign)  # "" for the source as a whole
    amount_cents: int = Field(sa_column=SP.c.amount_cents)  # hundredths of the currency's unit
    currency: str = Field(sa_column=SP.c.currency)  # ISO 4217, upper case
    imported_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=SP.c.imported_at)


class StepOutcome(SQLModel, table=True):
    """Which way a lead went at a branch or wait-for step (or why a step did not run), as the engine decided it."""

    __table__ = SO

    id: int | None = Field(default=None, sa_column=SO.c.id)
    enrollment_id: int = Field(sa_column=SO.c.enrollment_id)
    campaign_id: str = Field(sa_column=SO.c.campaign_id)
    step_id: str = Field(sa_column=SO.c.step_id)
    outcome: str = Field(sa_column=SO.c.outcome)  # branch | event | timeout | skipped | late
    detail: str = Field(default="", sa_column=SO.c.detail)  # "rule 1 -> demo", "email_click came first", ...
    at: datetime = Field(sa_column=SO.c.at)


class Outbox(SQLModel, table=True):
    """A notification decided inside a transaction and delivered by the worker afterwards, with retries."""

    __table__ = O

    id: int | None = Field(default=None, sa_column=O.c.id)
    kind: str = Field(sa_column=O.c.kind)  # "sales_webhook", "owner_email", "step_webhook", ...
    dedup_key: str = Field(sa_column=O.c.dedup_key)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=O.c.payload)
    status: str = Field(default="pending", sa_column=O.c.status)
    attempts: int = Field(default=0, sa_column=O.c.attempts)
    next_attempt_at: datetime | None = Field(default=None, sa_column=O.c.next_attempt_at)
    lease_until: datetime | None = Field(default=None, sa_column=O.c.lease_until)  # while a worker sends it
    last_error: str | None = Field(default=None, sa_column=O.c.last_error)
    created_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=O.c.created_at)
    sent_at: datetime | None = Field(default=None, sa_column=O.c.sent_at)


class VariantDecision(SQLModel, table=True):
    """The winner of an email step's A/B test, recorded once (the unique key: two workers never record two), with the
    figures it was decided on; from then on later leads get the winner."""

    __table__ = VD

    id: int | None = Field(default=None, sa_column=VD.c.id)
    campaign_id: str = Field(sa_column=VD.c.campaign_id)
    step_id: str = Field(sa_column=VD.c.step_id)
    winner: str = Field(sa_column=VD.c.winner)
    metric: str = Field(sa_column=VD.c.metric)  # the goal in words: "clicks", "SQL within 14d", ...
    confidence: float = Field(sa_column=VD.c.confidence)
    decided_at: datetime = Field(sa_column=VD.c.decided_at)
    figures: dict[str, Any] = Field(default_factory=dict, sa_column=VD.c.figures)


class Meta(SQLModel, table=True):
    """Small settings nurture keeps for itself, such as a generated secret key."""

    __table__ = M

    key: str = Field(sa_column=M.c.key)
    value: str = Field(sa_column=M.c.value)


class DefinitionVersion(SQLModel, table=True):
    """One version of a definition file the worker ran: a campaign, policy.yaml, scoring.yaml or sales.yaml.

    A row is added when the worker loads a file whose text differs from the version in force (``ended_at`` is NULL on
    that one); the row it replaces gets its ``ended_at``. So the rows of one file are its history, oldest first, and a
    version restored later is a new row with the same hash. ``text`` is NULL only for the campaign versions recorded
    before their texts were kept, whose hash is their ``fingerprint``.
    """

    __table__ = DV

    id: int | None = Field(default=None, sa_column=DV.c.id)
    kind: str = Field(sa_column=DV.c.kind)  # one of DEFINITION_KINDS
    name: str = Field(sa_column=DV.c.name)  # the campaign's id; the kind for policy, scoring and sales
    content_hash: str = Field(sa_column=DV.c.content_hash)
    fingerprint: str | None = Field(default=None, sa_column=DV.c.fingerprint)
    text: str | None = Field(default=None, sa_column=DV.c.text)
    loaded_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_column=DV.c.loaded_at)  # when it came into force
    ended_at: datetime | None = Field(default=None, sa_column=DV.c.ended_at)  # replaced, or its file removed
    summary: dict[str, Any] | None = Field(default=None, sa_column=DV.c.summary)  # what applying it did


# -- daily rollups (see nurture.storage.tables) ---------------------------------------------------------------------


class RollupLeadDay(SQLModel, table=True):
    """Leads created per UTC day, source, medium and acquisition campaign."""

    __table__ = RL

    day: date = Field(sa_column=RL.c.day)
    source: str = Field(sa_column=RL.c.source)
    medium: str = Field(sa_column=RL.c.medium)
    source_campaign: str = Field(sa_column=RL.c.source_campaign)
    n: int = Field(sa_column=RL.c.n)


class RollupMoveDay(SQLModel, table=True):
    """Stage changes per UTC day, stages and actor, by the source and acquisition campaign the lead has now."""

    __table__ = RM

    day: date = Field(sa_column=RM.c.day)
    from_stage: str = Field(sa_column=RM.c.from_stage)
    to_stage: str = Field(sa_column=RM.c.to_stage)
    actor: str = Field(sa_column=RM.c.actor)
    source: str = Field(sa_column=RM.c.source)
    source_campaign: str = Field(sa_column=RM.c.source_campaign)
    n: int = Field(sa_column=RM.c.n)


class RollupDeliveryDay(SQLModel, table=True):
    """Emails created per UTC day, campaign, step, variant and status, with how many of the sent ones were opened (or
    clicked) and clicked, at any time."""

    __table__ = RD

    day: date = Field(sa_column=RD.c.day)
    campaign_id: str = Field(sa_column=RD.c.campaign_id)
    step_id: str = Field(sa_column=RD.c.step_id)
    variant: str = Field(sa_column=RD.c.variant)
    status: str = Field(sa_column=RD.c.status)
    n: int = Field(sa_column=RD.c.n)
    opened: int = Field(sa_column=RD.c.opened)
    clicked: int = Field(sa_column=RD.c.clicked)


class RollupEnrollmentDay(SQLModel, table=True):
    """Enrollments ``started`` (by ``enrolled_at``) or ``ended`` (by ``ended_at``, with status and reason) per UTC day
    and campaign."""

    __table__ = RE

    day: date = Field(sa_column=RE.c.day)
    campaign_id: str = Field(sa_column=RE.c.campaign_id)
    kind: str = Field(sa_column=RE.c.kind)  # started | ended
    status: str = Field(sa_column=RE.c.status)
    end_reason: str = Field(sa_column=RE.c.end_reason)
    n: int = Field(sa_column=RE.c.n)


class RollupOutcomeDay(SQLModel, table=True):
    """Step outcomes per UTC day, campaign, step, outcome and detail."""

    __table__ = RO

    day: date = Field(sa_column=RO.c.day)
    campaign_id: str = Field(sa_column=RO.c.campaign_id)
    step_id: str = Field(sa_column=RO.c.step_id)
    outcome: str = Field(sa_column=RO.c.outcome)
    detail: str = Field(sa_column=RO.c.detail)
    n: int = Field(sa_column=RO.c.n)


class RollupSqlDay(SQLModel, table=True):
    """Moves to ``sql`` per UTC day and wait: the whole milliseconds since the lead's first move to ``mql`` before it
    (-1: none), for the time-to-SQL distribution (migration 0007_sales_rollup)."""

    __table__ = RS

    day: date = Field(sa_column=RS.c.day)
    wait_ms: int = Field(sa_column=RS.c.wait_ms)
    n: int = Field(sa_column=RS.c.n)


class RollupDecisionDay(SQLModel, table=True):
    """Sales' decisions (moves from ``sql`` to opportunity, recycled or disqualified) per UTC day: the stage, the
    reason without its note, the lead's owner now, the rule of the promotion decided (the text before its first
    ``: ``), and, for a rejection, the nurture campaigns the lead was in when promoted (sorted, comma-joined)."""

    __table__ = RX

    day: date = Field(sa_column=RX.c.day)
    to_stage: str = Field(sa_column=RX.c.to_stage)
    reason: str = Field(sa_column=RX.c.reason)
    owner: str = Field(sa_column=RX.c.owner)
    rule: str = Field(sa_column=RX.c.rule)
    campaigns: str = Field(sa_column=RX.c.campaigns)
    n: int = Field(sa_column=RX.c.n)
