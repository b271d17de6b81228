"""The tables: leads, their enrollments in campaigns, deliveries, engagement events, stage history, the outbox,
marketing spend and the outcomes of branch and wait-for steps.

The schema itself is created by the Alembic migrations in ``nurture/migrations``; a test checks that they
produce exactly these models. JSON columns track top-level changes (``enrollment.state["variant"] = "b"``
is saved); a change nested deeper needs the whole value assigned again. The timestamps' defaults (the wall clock)
only date rows built without one: nurture's own writes pass the ``now`` their edge read.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, Index, Integer, String, Text, UniqueConstraint, false, text
from sqlalchemy.ext.mutable import MutableDict, MutableList
from sqlmodel import Field, SQLModel

from nurture.clock import SYSTEM_CLOCK
from nurture.storage.database import UTCDateTime
from nurture.storage.dialect import HELD_OUT_INDEX

# Named constraints and indexes keep migrations deterministic on both back-ends.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STAGE_ACTORS = ("rule", "api", "cli", "sales", "import", "system", "admin")
ENROLLMENT_STATUSES = ("active", "completed", "exited")
DELIVERY_STATUSES = ("claimed", "sent", "retry", "failed", "suppressed")
DELIVERY_CHANNELS = ("email", "webhook")
OUTBOX_STATUSES = ("pending", "sent", "failed")
DEFINITION_KINDS = ("campaign", "policy", "scoring", "sales")

# BIGINT on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" is the auto-incrementing rowid.
ID = BigInteger().with_variant(Integer(), "sqlite")
JSON_DICT = MutableDict.as_mutable(JSON())
JSON_LIST = MutableList.as_mutable(JSON())
ACTIVE = text("status = 'active'")


class Lead(SQLModel, table=True):
    """A person marketing nurtures, keyed by email (stored stripped and lower-cased)."""

    __tablename__ = "lead"
    __table_args__ = (
        UniqueConstraint("email"),
        # reports: new leads per period and source, read from the index alone
        Index("ix_lead_created_at_source", "created_at", "source", "medium", "source_campaign"),
        # leads by stage; reports: the SQLs waiting now and since when, read from the index alone
        Index("ix_lead_stage", "stage", "stage_changed_at", "owner"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    email: str
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    title: str | None = None
    industry: str | None = None
    company_size: int | None = None
    country: str | None = Field(default=None, sa_type=String(2))  # ISO 3166-1 alpha-2, upper case
    timezone: str | None = None  # IANA name
    tags: list[str] = Field(default_factory=list, sa_type=JSON_LIST)
    fields: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DICT)  # custom fields
    stage: str = "lead"
    score: float = 0.0
    owner: str | None = None
    # Where the lead came from (acquisition): utm_source / utm_medium / utm_campaign, from the import, the API, or
    # the first event that carried them. Cost per lead and CAC are reported by these.
    source: str | None = None
    medium: str | None = None
    source_campaign: str | None = None
    unsubscribed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    bounced_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)
    stage_changed_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)
    # The lead's scored history summed per event type as of a time, and recent days' counts for the daily caps: what
    # recording an event reads instead of the history itself (nurture.core.score_state). NULL: read the history.
    score_state: list[Any] | None = Field(default=None, sa_type=JSON(none_as_null=True))


class Enrollment(SQLModel, table=True):
    """A lead's way through one campaign; while active, ``next_due_at`` is its place in the schedule."""

    __tablename__ = "enrollment"
    __table_args__ = (
        Index("ix_enrollment_status_next_due_at", "status", "next_due_at"),
        Index("ix_enrollment_campaign_id_status", "campaign_id", "status"),
        Index("ix_enrollment_lead_id_campaign_id", "lead_id", "campaign_id"),  # "is this lead in that campaign?"
        Index("ix_enrollment_enrolled_at_campaign_id", "enrolled_at", "campaign_id"),  # reports: enrollments started
        Index("ix_enrollment_ended_at_campaign_id", "ended_at", "campaign_id", "status", "end_reason"),  # ... ended
        # reports: the campaigns that held out a lead in a period (empty, so free, when none holds out)
        Index("ix_enrollment_held_out_enrolled_at", "enrolled_at", "campaign_id", **HELD_OUT_INDEX),
        # A lead is never twice active in one campaign; once ended it may enroll again.
        Index(
            "uq_enrollment_active_lead_id_campaign_id",
            "lead_id",
            "campaign_id",
            unique=True,
            sqlite_where=ACTIVE,
            postgresql_where=ACTIVE,
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    lead_id: int = Field(foreign_key="lead.id", ondelete="CASCADE", sa_type=ID)
    campaign_id: str
    status: str = "active"
    step_id: str | None = None  # the step the lead is waiting on
    arrived_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)  # when it reached that step
    next_due_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    waiting_for: str | None = None  # an event type that wakes this enrollment early
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_owner: str | None = None
    state: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DICT)  # owned by the step engine
    campaign_version: str | None = None  # the campaign version it runs under now (DefinitionVersion.content_hash)
    priority: int = 0
    enrolled_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    end_reason: str | None = None
    # in the campaign's holdout group: walks the campaign's path, is sent nothing (nurture.core.holdout)
    held_out: bool = Field(default=False, sa_type=Boolean, sa_column_kwargs={"server_default": false()})


class Delivery(SQLModel, table=True):
    """One message (email or webhook) of one step to one enrollment; unique, so it is never sent twice."""

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_key"),
        Index("ix_delivery_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_delivery_lead_id_sent_at", "lead_id", "sent_at"),  # frequency caps
        # reports: emails of a period per step and variant
        Index("ix_delivery_created_at_campaign_id", "created_at", "campaign_id", "step_id", "variant", "status",
              "channel"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    enrollment_id: int = Field(foreign_key="enrollment.id", ondelete="CASCADE", sa_type=ID)
    lead_id: int = Field(foreign_key="lead.id", ondelete="CASCADE", sa_type=ID)
    campaign_id: str
    step_id: str
    step_key: str  # the step id, or "step/content-id" for content streams
    variant: str | None = None
    channel: str = "email"
    status: str = "claimed"
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    message_id: str | None = None
    provider_message_id: str | None = Field(default=None, index=True)  # bounces arrive keyed by it
    subject: str | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    campaign_version: str | None = None  # the campaign version that decided it (DefinitionVersion.content_hash)


class EngagementEvent(SQLModel, table=True):
    """Something a lead did (opened, clicked, visited, replied, ...) and the points scoring gave it."""

    __tablename__ = "engagement_event"
    __table_args__ = (
        UniqueConstraint("external_id"),  # intake is idempotent on it
        Index("ix_engagement_event_lead_id_occurred_at", "lead_id", "occurred_at"),
        # reports: was this delivery opened, clicked? (only events about a delivery are indexed)
        Index("ix_engagement_event_delivery_id_type", "delivery_id", "type",
              sqlite_where=text("delivery_id IS NOT NULL"), postgresql_where=text("delivery_id IS NOT NULL")),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    lead_id: int = Field(foreign_key="lead.id", ondelete="CASCADE", sa_type=ID)
    type: str
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    recorded_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)
    external_id: str | None = None
    campaign_id: str | None = None
    step_key: str | None = None
    delivery_id: int | None = Field(default=None, foreign_key="delivery.id", ondelete="SET NULL", sa_type=ID)
    properties: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DICT)
    points: float = 0.0


class StageChange(SQLModel, table=True):
    """One move of a lead through the lifecycle, with who moved it and why."""

    __tablename__ = "stage_change"
    # reports: the moves of a period, read from the index alone
    __table_args__ = (Index("ix_stage_change_at_to_stage", "at", "to_stage", "from_stage", "actor", "lead_id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    lead_id: int = Field(foreign_key="lead.id", ondelete="CASCADE", index=True, sa_type=ID)
    from_stage: str | None = None  # None when the lead was created at ``to_stage``
    to_stage: str
    at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)
    reason: str = ""
    actor: str  # one of STAGE_ACTORS


class Spend(SQLModel, table=True):
    """Marketing spend of one source (and optionally one of its campaigns) over a period of whole days, as imported
    by ``nurture spend import``; importing the same period, source and campaign again replaces the amount."""

    __tablename__ = "spend"
    __table_args__ = (UniqueConstraint("period_start", "period_end", "source", "campaign"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    period_start: date = Field(sa_type=Date)
    period_end: date = Field(sa_type=Date)  # the last day, included
    source: str
    campaign: str = ""  # "" for the source as a whole
    amount_cents: int = Field(sa_type=BigInteger)  # hundredths of the currency's unit
    currency: str = Field(sa_type=String(3))  # ISO 4217, upper case
    imported_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)


class StepOutcome(SQLModel, table=True):
    """Which way a lead went at a branch or wait-for step (or why a step did not run), as the engine decided it."""

    __tablename__ = "step_outcome"
    __table_args__ = (Index("ix_step_outcome_at_campaign_id", "at", "campaign_id", "step_id", "outcome", "detail"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    enrollment_id: int = Field(foreign_key="enrollment.id", ondelete="CASCADE", sa_type=ID)
    campaign_id: str
    step_id: str
    outcome: str  # branch | event | timeout | skipped | late
    detail: str = ""  # "rule 1 -> demo", "email_click came first", ...
    at: datetime = Field(sa_type=UTCDateTime)


class Outbox(SQLModel, table=True):
    """A notification decided inside a transaction and delivered by the worker afterwards, with retries."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("dedup_key"),
        Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    kind: str  # "sales_webhook", "owner_email", "step_webhook", ...
    dedup_key: str
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DICT)
    status: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)  # while a worker sends it
    last_error: str | None = None
    created_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class VariantDecision(SQLModel, table=True):
    """The winner of an email step's A/B test, recorded once (the unique key: two workers never record two), with the
    figures it was decided on; from then on later leads get the winner."""

    __tablename__ = "variant_decision"
    __table_args__ = (UniqueConstraint("campaign_id", "step_id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    campaign_id: str
    step_id: str
    winner: str
    metric: str  # the goal in words: "clicks", "SQL within 14d", ...
    confidence: float
    decided_at: datetime = Field(sa_type=UTCDateTime)
    figures: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DICT)  # the counts and tests behind the call


class Meta(SQLModel, table=True):
    """Small settings nurture keeps for itself, such as a generated secret key."""

    __tablename__ = "meta"

    key: str = Field(primary_key=True)
    value: str


class DefinitionVersion(SQLModel, table=True):
    """One version of a definition file the worker ran: a campaign, policy.yaml, scoring.yaml or sales.yaml.

    A row is added when the worker loads a file whose text differs from the version in force (``ended_at`` is NULL on
    that one); the row it replaces gets its ``ended_at``. So the rows of one file are its history, oldest first, and a
    version restored later is a new row with the same hash. ``text`` is NULL only for the campaign versions recorded
    before their texts were kept, whose hash is their ``fingerprint``.
    """

    __tablename__ = "definition_version"
    __table_args__ = (Index("ix_definition_version_kind_name_ended_at", "kind", "name", "ended_at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    kind: str  # one of DEFINITION_KINDS
    name: str  # the campaign's id; the kind for policy, scoring and sales
    content_hash: str  # what enrollments and deliveries record as their campaign_version
    fingerprint: str | None = None  # campaigns: the hash of the parsed model (an edit of comments keeps it)
    text: str | None = Field(default=None, sa_type=Text)
    loaded_at: datetime = Field(default_factory=SYSTEM_CLOCK, sa_type=UTCDateTime)  # when it came into force
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # replaced, or its file removed
    summary: dict[str, Any] | None = Field(default=None, sa_type=JSON(none_as_null=True))  # what applying it did


# -- daily rollups: what a report counts, per UTC day, kept up to date by triggers (migration 0006_rollup) ----------
# Every writer of the underlying rows updates them in its own transaction, through the database's triggers, so no
# write path can forget them; ``nurture db rebuild-rollups`` recomputes them from the rows. NULL dimensions are stored
# as '' (a key column cannot hold NULL), ``n`` is the count (it may pass through 0 as rows move between keys).


class RollupLeadDay(SQLModel, table=True):
    """Leads created per UTC day, source, medium and acquisition campaign."""

    __tablename__ = "rollup_lead_day"

    day: date = Field(sa_type=Date, primary_key=True)
    source: str = Field(primary_key=True)
    medium: str = Field(primary_key=True)
    source_campaign: str = Field(primary_key=True)
    n: int = Field(sa_type=BigInteger)


class RollupMoveDay(SQLModel, table=True):
    """Stage changes per UTC day, stages and actor, by the source and acquisition campaign the lead has now."""

    __tablename__ = "rollup_move_day"

    day: date = Field(sa_type=Date, primary_key=True)
    from_stage: str = Field(primary_key=True)
    to_stage: str = Field(primary_key=True)
    actor: str = Field(primary_key=True)
    source: str = Field(primary_key=True)
    source_campaign: str = Field(primary_key=True)
    n: int = Field(sa_type=BigInteger)


class RollupDeliveryDay(SQLModel, table=True):
    """Emails created per UTC day, campaign, step, variant and status, with how many of the sent ones were opened (or
    clicked) and clicked, at any time."""

    __tablename__ = "rollup_delivery_day"

    day: date = Field(sa_type=Date, primary_key=True)
    campaign_id: str = Field(primary_key=True)
    step_id: str = Field(primary_key=True)
    variant: str = Field(primary_key=True)
    status: str = Field(primary_key=True)
    n: int = Field(sa_type=BigInteger)
    opened: int = Field(sa_type=BigInteger)
    clicked: int = Field(sa_type=BigInteger)


class RollupEnrollmentDay(SQLModel, table=True):
    """Enrollments ``started`` (by ``enrolled_at``) or ``ended`` (by ``ended_at``, with status and reason) per UTC day
    and campaign."""

    __tablename__ = "rollup_enrollment_day"

    day: date = Field(sa_type=Date, primary_key=True)
    campaign_id: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)  # started | ended
    status: str = Field(primary_key=True)
    end_reason: str = Field(primary_key=True)
    n: int = Field(sa_type=BigInteger)


class RollupOutcomeDay(SQLModel, table=True):
    """Step outcomes per UTC day, campaign, step, outcome and detail."""

    __tablename__ = "rollup_outcome_day"

    day: date = Field(sa_type=Date, primary_key=True)
    campaign_id: str = Field(primary_key=True)
    step_id: str = Field(primary_key=True)
    outcome: str = Field(primary_key=True)
    detail: str = Field(primary_key=True)
    n: int = Field(sa_type=BigInteger)


class RollupSqlDay(SQLModel, table=True):
    """Moves to ``sql`` per UTC day and wait: the whole milliseconds since the lead's first move to ``mql`` before it
    (-1: none), for the time-to-SQL distribution (migration 0007_sales_rollup)."""

    __tablename__ = "rollup_sql_day"

    day: date = Field(sa_type=Date, primary_key=True)
    wait_ms: int = Field(sa_type=BigInteger, primary_key=True)
    n: int = Field(sa_type=BigInteger)


class RollupDecisionDay(SQLModel, table=True):
    """Sales' decisions (moves from ``sql`` to opportunity, recycled or disqualified) per UTC day: the stage, the
    reason without its note, the lead's owner now, the rule of the promotion decided (the text before its first
    ``: ``), and, for a rejection, the nurture campaigns the lead was in when promoted (sorted, comma-joined)."""

    __tablename__ = "rollup_decision_day"

    day: date = Field(sa_type=Date, primary_key=True)
    to_stage: str = Field(primary_key=True)
    reason: str = Field(primary_key=True)
    owner: str = Field(primary_key=True)
    rule: str = Field(primary_key=True)
    campaigns: str = Field(primary_key=True)
    n: int = Field(sa_type=BigInteger)


class AbLeadStep(SQLModel, table=True):
    """Per lead and A/B step, its sent emails of the step with a variant (migration 0010_abrollup): the first one (by
    ``sent_at``, then id), how many there are, and when the first click and the first open or click on any of them
    happened. Triggers keep it; an A/B test on clicks or opens counts the leads of one send from it, by the index."""

    __tablename__ = "ab_lead_step"
    __table_args__ = (
        # A/B tests: the leads of one email of the step created in a period, read from the index alone; the few leads
        # with several. Partial, so that a look-up by key (a trigger's) can only take the primary key.
        Index("ix_ab_lead_step_one_send", "campaign_id", "step_id", "created_at", "variant", "clicked_at", "opened_at",
              "sends", sqlite_where=text("sends = 1"), postgresql_where=text("sends = 1")),
        Index("ix_ab_lead_step_several_sends", "campaign_id", "step_id", "lead_id", "sends",
              sqlite_where=text("sends > 1"), postgresql_where=text("sends > 1")),
    )

    campaign_id: str = Field(primary_key=True)
    step_id: str = Field(primary_key=True)
    lead_id: int = Field(foreign_key="lead.id", ondelete="CASCADE", primary_key=True, sa_type=ID)
    delivery_id: int = Field(sa_type=ID)  # the first email
    variant: str
    created_at: datetime = Field(sa_type=UTCDateTime)
    sent_at: datetime = Field(sa_type=UTCDateTime)
    sends: int
    clicked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    opened_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
