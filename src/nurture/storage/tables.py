"""The tables, declared once as SQLAlchemy Core tables under the short names every query in storage uses.

Queries run on these Core tables; the ORM models of :mod:`nurture.storage.models` (a lead read and written as an
object, and the tests' fixtures) are mapped onto the very same tables, so a command that only runs queries (``nurture
run --once``, ``nurture report``) starts without importing SQLModel or SQLAlchemy's ORM. The schema itself is created
by the Alembic migrations in ``nurture/migrations``; a test checks that they produce exactly :data:`METADATA`.

Column defaults (the wall clock for timestamps, ``'lead'`` for a stage, ``[]`` for tags...) only fill rows written
without a value: nurture's own writes pass the ``now`` their edge read. The JSON columns' types :data:`JSON_DICT` and
:data:`JSON_LIST` are tracked as mutable by the models (``enrollment.state["variant"] = "b"`` is saved through the
ORM; a change nested deeper needs the whole value assigned again).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from nurture.clock import SYSTEM_CLOCK
from nurture.storage.database import UTCDateTime
from nurture.storage.dialect import HELD_OUT_INDEX

METADATA = MetaData(naming_convention={  # named constraints and indexes keep migrations deterministic
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})
"""Every table of nurture's schema."""

ID = BigInteger().with_variant(Integer(), "sqlite")
"""The ids: BIGINT on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" is the auto-incrementing rowid."""
JSON_DICT = JSON()
"""The type of the JSON columns that hold an object (the models track changes to its keys)."""
JSON_LIST = JSON()
"""The type of the JSON columns that hold a list (the models track changes to its items)."""
ACTIVE = text("status = 'active'")
ABOUT_A_DELIVERY = text("delivery_id IS NOT NULL")

L: Table = Table(
    "lead", METADATA,
    Column("id", ID, primary_key=True),
    Column("email", String, nullable=False),
    Column("first_name", String),
    Column("last_name", String),
    Column("company", String),
    Column("title", String),
    Column("industry", String),
    Column("company_size", Integer),
    Column("country", String(length=2)),  # ISO 3166-1 alpha-2, upper case
    Column("timezone", String),  # IANA name
    Column("tags", JSON_LIST, nullable=False, default=list),
    Column("fields", JSON_DICT, nullable=False, default=dict),  # custom fields
    Column("stage", String, nullable=False, default="lead"),
    Column("score", Float, nullable=False, default=0.0),
    Column("owner", String),
    # Where the lead came from (acquisition): utm_source / utm_medium / utm_campaign, from the import, the API, or
    # the first event that carried them. Cost per lead and CAC are reported by these.
    Column("source", String),
    Column("medium", String),
    Column("source_campaign", String),
    Column("unsubscribed_at", UTCDateTime),
    Column("bounced_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),
    Column("updated_at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),
    Column("stage_changed_at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),
    # The lead's scored history summed per event type as of a time, and recent days' counts for the daily caps: what
    # recording an event reads instead of the history itself (nurture.core.score_state). NULL: read the history.
    Column("score_state", JSON(none_as_null=True)),
    UniqueConstraint("email"),
    # reports: new leads per period and source, read from the index alone
    Index("ix_lead_created_at_source", "created_at", "source", "medium", "source_campaign"),
    # leads by stage; reports: the SQLs waiting now and since when, read from the index alone
    Index("ix_lead_stage", "stage", "stage_changed_at", "owner"),
)
"""leads: the people marketing nurtures, keyed by email (stored stripped and lower-cased)"""

E: Table = Table(
    "enrollment", METADATA,
    Column("id", ID, primary_key=True),
    Column("lead_id", ID, ForeignKey("lead.id", ondelete="CASCADE"), nullable=False),
    Column("campaign_id", String, nullable=False),
    Column("status", String, nullable=False, default="active"),
    Column("step_id", String),  # the step the lead is waiting on
    Column("arrived_at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),  # when it reached that step
    Column("next_due_at", UTCDateTime),
    Column("waiting_for", String),  # an event type that wakes this enrollment early
    Column("lease_until", UTCDateTime),
    Column("lease_owner", String),
    Column("state", JSON_DICT, nullable=False, default=dict),  # owned by the step engine
    Column("campaign_version", String),  # the version it runs under now (DefinitionVersion.content_hash)
    Column("priority", Integer, nullable=False, default=0),
    Column("enrolled_at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),
    Column("ended_at", UTCDateTime),
    Column("end_reason", String),
    # in the campaign's holdout group: walks the campaign's path, is sent nothing (nurture.core.holdout)
    Column("held_out", Boolean, nullable=False, default=False, server_default=false()),
    # a campaign's active enrollments, and where they wait (version and step) counted from the index alone
    Index("ix_enrollment_campaign_id_status_campaign_version_step_id", "campaign_id", "status", "campaign_version",
          "step_id"),
    Index("ix_enrollment_ended_at_campaign_id", "ended_at", "campaign_id", "status", "end_reason"),
    Index("ix_enrollment_enrolled_at_campaign_id", "enrolled_at", "campaign_id"),
    Index("ix_enrollment_lead_id_campaign_id", "lead_id", "campaign_id"),
    Index("ix_enrollment_status_next_due_at", "status", "next_due_at"),
    # reports: the campaigns that held out a lead in a period (empty, so free, when none holds out)
    Index("ix_enrollment_held_out_enrolled_at", "enrolled_at", "campaign_id", **HELD_OUT_INDEX),
    # a lead is never twice active in one campaign; once ended it may enroll again
    Index("uq_enrollment_active_lead_id_campaign_id", "lead_id", "campaign_id", unique=True,
          sqlite_where=ACTIVE, postgresql_where=ACTIVE),
)
"""enrollments: a lead's way through one campaign; while active, ``next_due_at`` is its place in the schedule"""

D: Table = Table(
    "delivery", METADATA,
    Column("id", ID, primary_key=True),
    Column("enrollment_id", ID, ForeignKey("enrollment.id", ondelete="CASCADE"), nullable=False),
    Column("lead_id", ID, ForeignKey("lead.id", ondelete="CASCADE"), nullable=False),
    Column("campaign_id", String, nullable=False),
    Column("step_id", String, nullable=False),
    Column("step_key", String, nullable=False),  # the step id, or "step/content-id" for content streams
    Column("variant", String),
    Column("channel", String, nullable=False, default="email"),
    Column("status", String, nullable=False, default="claimed"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("lease_until", UTCDateTime),
    Column("message_id", String),
    Column("provider_message_id", String, index=True),  # bounces arrive keyed by it
    Column("subject", String),
    Column("error", String),
    Column("created_at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),
    Column("sent_at", UTCDateTime),
    Column("campaign_version", String),
    UniqueConstraint("enrollment_id", "step_key"),
    # reports: emails of a period per step and variant
    Index("ix_delivery_created_at_campaign_id", "created_at", "campaign_id", "step_id", "variant", "status", "channel"),
    Index("ix_delivery_lead_id_sent_at", "lead_id", "sent_at"),  # frequency caps
    Index("ix_delivery_status_next_attempt_at", "status", "next_attempt_at"),
)
"""deliveries: one email, webhook or stream piece per enrollment and step; unique, so it is never sent twice"""

EV: Table = Table(
    "engagement_event", METADATA,
    Column("id", ID, primary_key=True),
    Column("lead_id", ID, ForeignKey("lead.id", ondelete="CASCADE"), nullable=False),
    Column("type", String, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),
    Column("external_id", String),
    Column("campaign_id", String),
    Column("step_key", String),
    Column("delivery_id", ID, ForeignKey("delivery.id", ondelete="SET NULL")),
    Column("properties", JSON_DICT, nullable=False, default=dict),
    Column("points", Float, nullable=False, default=0.0),
    UniqueConstraint("external_id"),  # intake is idempotent on it
    # reports: was this delivery opened, clicked? (only events about a delivery are indexed)
    Index("ix_engagement_event_delivery_id_type", "delivery_id", "type",
          sqlite_where=ABOUT_A_DELIVERY, postgresql_where=ABOUT_A_DELIVERY),
    Index("ix_engagement_event_lead_id_occurred_at", "lead_id", "occurred_at"),
)
"""engagement events: what a lead did (opened, clicked, visited, replied, ...) and the points scoring gave it"""

SC: Table = Table(
    "stage_change", METADATA,
    Column("id", ID, primary_key=True),
    Column("lead_id", ID, ForeignKey("lead.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("from_stage", String),  # None when the lead was created at ``to_stage``
    Column("to_stage", String, nullable=False),
    Column("at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),
    Column("reason", String, nullable=False, default=""),
    Column("actor", String, nullable=False),  # one of STAGE_ACTORS
    # reports: the moves of a period, read from the index alone
    Index("ix_stage_change_at_to_stage", "at", "to_stage", "from_stage", "actor", "lead_id"),
)
"""stage changes: the lifecycle history"""

SP: Table = Table(
    "spend", METADATA,
    Column("id", ID, primary_key=True),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),  # the last day, included
    Column("source", String, nullable=False),
    Column("campaign", String, nullable=False, default=""),  # "" for the source as a whole
    Column("amount_cents", BigInteger, nullable=False),  # hundredths of the currency's unit
    Column("currency", String(length=3), nullable=False),  # ISO 4217, upper case
    Column("imported_at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),
    UniqueConstraint("period_start", "period_end", "source", "campaign"),
)
"""spend: marketing spend per period, source and campaign"""

SO: Table = Table(
    "step_outcome", METADATA,
    Column("id", ID, primary_key=True),
    Column("enrollment_id", ID, ForeignKey("enrollment.id", ondelete="CASCADE"), nullable=False),
    Column("campaign_id", String, nullable=False),
    Column("step_id", String, nullable=False),
    Column("outcome", String, nullable=False),  # branch | event | timeout | skipped | late
    Column("detail", String, nullable=False, default=""),  # "rule 1 -> demo", "email_click came first", ...
    Column("at", UTCDateTime, nullable=False),
    Index("ix_step_outcome_at_campaign_id", "at", "campaign_id", "step_id", "outcome", "detail"),
)
"""step outcomes: the way each lead went at a branch or wait-for step"""

O: Table = Table(  # noqa: E741
    "outbox", METADATA,
    Column("id", ID, primary_key=True),
    Column("kind", String, nullable=False),  # "sales_webhook", "owner_email", "step_webhook", ...
    Column("dedup_key", String, nullable=False),
    Column("payload", JSON_DICT, nullable=False, default=dict),
    Column("status", String, nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime),
    Column("lease_until", UTCDateTime),  # while a worker sends it
    Column("last_error", String),
    Column("created_at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),
    Column("sent_at", UTCDateTime),
    UniqueConstraint("dedup_key"),
    Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
)
"""the outbox: notifications and webhooks to deliver"""

VD: Table = Table(
    "variant_decision", METADATA,
    Column("id", ID, primary_key=True),
    Column("campaign_id", String, nullable=False),
    Column("step_id", String, nullable=False),
    Column("winner", String, nullable=False),
    Column("metric", String, nullable=False),  # the goal in words: "clicks", "SQL within 14d", ...
    Column("confidence", Float, nullable=False),
    Column("decided_at", UTCDateTime, nullable=False),
    Column("figures", JSON_DICT, nullable=False, default=dict),  # the counts and tests behind the call
    UniqueConstraint("campaign_id", "step_id"),
)
"""variant decisions: the recorded winner of each A/B step"""

M: Table = Table(
    "meta", METADATA,
    Column("key", String, primary_key=True),
    Column("value", String, nullable=False),
)
"""meta: key/value state (secrets, round-robin positions)"""

DV: Table = Table(
    "definition_version", METADATA,
    Column("id", ID, primary_key=True),
    Column("kind", String, nullable=False),  # one of DEFINITION_KINDS
    Column("name", String, nullable=False),  # the campaign's id; the kind for policy, scoring and sales
    Column("content_hash", String, nullable=False),  # what enrollments and deliveries record as campaign_version
    Column("fingerprint", String),  # campaigns: the hash of the parsed model (an edit of comments keeps it)
    Column("text", Text),
    Column("loaded_at", UTCDateTime, nullable=False, default=SYSTEM_CLOCK),  # when it came into force
    Column("ended_at", UTCDateTime),  # replaced, or its file removed
    Column("summary", JSON(none_as_null=True)),  # what applying it did
    Index("ix_definition_version_kind_name_ended_at", "kind", "name", "ended_at"),
)
"""definition versions: each campaign, policy, scoring and sales file the worker ran, with its text"""

# -- daily rollups: what a report counts, per UTC day, kept up to date by triggers (migration 0006_rollup) ----------
# Every writer of the underlying rows updates them in its own transaction, through the database's triggers, so no
# write path can forget them; ``nurture db rebuild-rollups`` recomputes them from the rows. NULL dimensions are stored
# as '' (a key column cannot hold NULL), ``n`` is the count (it may pass through 0 as rows move between keys).

RL: Table = Table(
    "rollup_lead_day", METADATA,
    Column("day", Date, primary_key=True),
    Column("source", String, primary_key=True),
    Column("medium", String, primary_key=True),
    Column("source_campaign", String, primary_key=True),
    Column("n", BigInteger, nullable=False),
)
"""rollup: leads created per day and source"""

RM: Table = Table(
    "rollup_move_day", METADATA,
    Column("day", Date, primary_key=True),
    Column("from_stage", String, primary_key=True),
    Column("to_stage", String, primary_key=True),
    Column("actor", String, primary_key=True),
    Column("source", String, primary_key=True),
    Column("source_campaign", String, primary_key=True),
    Column("n", BigInteger, nullable=False),
)
"""rollup: stage changes per day, stages, actor and the lead's source"""

RD: Table = Table(
    "rollup_delivery_day", METADATA,
    Column("day", Date, primary_key=True),
    Column("campaign_id", String, primary_key=True),
    Column("step_id", String, primary_key=True),
    Column("variant", String, primary_key=True),
    Column("status", String, primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("opened", BigInteger, nullable=False),
    Column("clicked", BigInteger, nullable=False),
)
"""rollup: emails per day, step, variant and status, opened and clicked"""

RE: Table = Table(
    "rollup_enrollment_day", METADATA,
    Column("day", Date, primary_key=True),
    Column("campaign_id", String, primary_key=True),
    Column("kind", String, primary_key=True),
    Column("status", String, primary_key=True),
    Column("end_reason", String, primary_key=True),
    Column("n", BigInteger, nullable=False),
)
"""rollup: enrollments started and ended per day and campaign"""

RO: Table = Table(
    "rollup_outcome_day", METADATA,
    Column("day", Date, primary_key=True),
    Column("campaign_id", String, primary_key=True),
    Column("step_id", String, primary_key=True),
    Column("outcome", String, primary_key=True),
    Column("detail", String, primary_key=True),
    Column("n", BigInteger, nullable=False),
)
"""rollup: step outcomes per day"""

RS: Table = Table(
    "rollup_sql_day", METADATA,
    Column("day", Date, primary_key=True),
    Column("wait_ms", BigInteger, primary_key=True),
    Column("n", BigInteger, nullable=False),
)
"""rollup: moves to sql per day and wait since the first MQL"""

RX: Table = Table(
    "rollup_decision_day", METADATA,
    Column("day", Date, primary_key=True),
    Column("to_stage", String, primary_key=True),
    Column("reason", String, primary_key=True),
    Column("owner", String, primary_key=True),
    Column("rule", String, primary_key=True),
    Column("campaigns", String, primary_key=True),
    Column("n", BigInteger, nullable=False),
)
"""rollup: sales' decisions per day, stage, reason, owner, rule and campaigns"""

AB: Table = Table(
    "ab_lead_step", METADATA,
    Column("campaign_id", String, primary_key=True),
    Column("step_id", String, primary_key=True),
    Column("lead_id", ID, ForeignKey("lead.id", ondelete="CASCADE"), primary_key=True),
    Column("delivery_id", ID, nullable=False),  # the first email
    Column("variant", String, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=False),
    Column("sends", Integer, nullable=False),
    Column("clicked_at", UTCDateTime),
    Column("opened_at", UTCDateTime),
    # A/B tests: the leads of one email of the step created in a period, read from the index alone; the few leads
    # with several. Partial, so that a look-up by key (a trigger's) can only take the primary key.
    Index("ix_ab_lead_step_one_send", "campaign_id", "step_id", "created_at", "variant", "clicked_at", "opened_at",
          "sends", sqlite_where=text("sends = 1"), postgresql_where=text("sends = 1")),
    Index("ix_ab_lead_step_several_sends", "campaign_id", "step_id", "lead_id", "sends",
          sqlite_where=text("sends > 1"), postgresql_where=text("sends > 1")),
)
"""per lead and A/B step, its sent emails of the step with a variant (migration 0010_abrollup): the first one (by
``sent_at``, then id), how many there are, and when the first click and the first open or click on any of them
happened. Triggers keep it; an A/B test on clicks or opens counts the leads of one send from it, by the index."""
