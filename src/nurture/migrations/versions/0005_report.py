"""Reports: lead attribution, marketing spend, step outcomes, and the indexes the report reads by.

- ``lead.source``, ``lead.medium``, ``lead.source_campaign``: where each lead came from (cost per lead and CAC by
  source).
- ``spend``: marketing spend per period, source and campaign (``nurture spend import``).
- ``step_outcome``: the way each lead went at a branch or wait-for step, or why a step did not run; filled here from
  the paths the enrollments already hold, then written by the worker as it decides.
- Indexes on the times a report selects by (leads created, stage changes, enrollments started and ended, emails
  created) and on the engagement events of a delivery (opened? clicked?).

Revision ID: 0005_report
Revises: 0004_abtest
Create Date: 2026-12-06
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision = "0005_report"
down_revision = "0004_abtest"
branch_labels = None
depends_on = None

# Written out here rather than imported, so this revision stays what it was when the models change.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
WITH_DELIVERY = sa.text("delivery_id IS NOT NULL")
COUNTED = ("branch", "event", "timeout", "skipped", "late")


def upgrade() -> None:
    with op.batch_alter_table("lead") as batch:
        batch.add_column(sa.Column("source", sa.String(), nullable=True))
        batch.add_column(sa.Column("medium", sa.String(), nullable=True))
        batch.add_column(sa.Column("source_campaign", sa.String(), nullable=True))
    # the report's indexes hold every column its queries read, so they are scanned without the tables
    op.create_index("ix_lead_created_at_source", "lead", ["created_at", "source", "medium", "source_campaign"])
    op.create_index("ix_stage_change_at_to_stage", "stage_change", ["at", "to_stage", "from_stage", "actor", "lead_id"])
    op.create_index("ix_enrollment_enrolled_at_campaign_id", "enrollment", ["enrolled_at", "campaign_id"])
    op.create_index("ix_enrollment_ended_at_campaign_id", "enrollment", ["ended_at", "campaign_id", "status",
                                                                         "end_reason"])
    op.create_index("ix_delivery_created_at_campaign_id", "delivery", ["created_at", "campaign_id", "step_id",
                                                                       "variant", "status", "channel"])
    op.create_index("ix_engagement_event_delivery_id_type", "engagement_event", ["delivery_id", "type"],
                    sqlite_where=WITH_DELIVERY, postgresql_where=WITH_DELIVERY)
    op.create_table(
        "spend",
        sa.Column("id", ID, nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("campaign", sa.String(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("imported_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_spend"),
        sa.UniqueConstraint("period_start", "period_end", "source", "campaign",
                            name="uq_spend_period_start_period_end_source_campaign"),
    )
    op.create_table(
        "step_outcome",
        sa.Column("id", ID, nullable=False),
        sa.Column("enrollment_id", ID, nullable=False),
        sa.Column("campaign_id", sa.String(), nullable=False),
        sa.Column("step_id", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_step_outcome"),
        sa.ForeignKeyConstraint(["enrollment_id"], ["enrollment.id"], name="fk_step_outcome_enrollment_id_enrollment",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_step_outcome_at_campaign_id", "step_outcome", ["at", "campaign_id", "step_id", "outcome",
                                                                       "detail"])
    _backfill_step_outcomes()


def _backfill_step_outcomes() -> None:
    """The outcomes already in the enrollments' paths, so that counting does not start at the upgrade."""
    if context.is_offline_mode():  # SQL written to a file: there are no rows to read
        return
    bind = op.get_bind()
    enrollment = sa.table("enrollment", sa.column("id"), sa.column("campaign_id"), sa.column("state", sa.JSON()))
    outcome = sa.table("step_outcome", sa.column("enrollment_id"), sa.column("campaign_id"), sa.column("step_id"),
                       sa.column("outcome"), sa.column("detail"), sa.column("at", TIMESTAMP))
    rows: list[dict[str, Any]] = []
    for row in bind.execute(sa.select(enrollment.c.id, enrollment.c.campaign_id, enrollment.c.state)):
        state = row.state if isinstance(row.state, dict) else json.loads(row.state or "{}")
        for entry in (state or {}).get("path", []):
            if entry.get("outcome") in COUNTED:
                rows.append(dict(enrollment_id=row.id, campaign_id=row.campaign_id, step_id=entry["step"],
                                 outcome=entry["outcome"], detail=entry.get("detail", ""),
                                 at=datetime.fromisoformat(entry["at"])))
        if len(rows) >= 5000:
            bind.execute(outcome.insert(), rows)
            rows = []
    if rows:
        bind.execute(outcome.insert(), rows)


def downgrade() -> None:
    op.drop_table("step_outcome")
    op.drop_table("spend")
    op.drop_index("ix_engagement_event_delivery_id_type", "engagement_event")
    op.drop_index("ix_delivery_created_at_campaign_id", "delivery")
    op.drop_index("ix_enrollment_ended_at_campaign_id", "enrollment")
    op.drop_index("ix_enrollment_enrolled_at_campaign_id", "enrollment")
    op.drop_index("ix_stage_change_at_to_stage", "stage_change")
    op.drop_index("ix_lead_created_at_source", "lead")
    with op.batch_alter_table("lead") as batch:
        batch.drop_column("source_campaign")
        batch.drop_column("medium")
        batch.drop_column("source")
