"""Initial schema.

Leads, enrollments, deliveries, engagement events, stage changes, outbox, meta, campaign versions.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Written out here rather than imported, so this revision stays what it was when the models change.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    op.create_table(
        "lead",
        sa.Column("id", ID, nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("first_name", sa.String(), nullable=True),
        sa.Column("last_name", sa.String(), nullable=True),
        sa.Column("company", sa.String(), nullable=True),
        sa.Column("title", sa.String(), nullable=True),
        sa.Column("industry", sa.String(), nullable=True),
        sa.Column("company_size", sa.Integer(), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("timezone", sa.String(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("unsubscribed_at", TIMESTAMP, nullable=True),
        sa.Column("bounced_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("stage_changed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_lead"),
        sa.UniqueConstraint("email", name="uq_lead_email"),
    )
    op.create_index("ix_lead_stage", "lead", ["stage"])

    op.create_table(
        "enrollment",
        sa.Column("id", ID, nullable=False),
        sa.Column("lead_id", ID, nullable=False),
        sa.Column("campaign_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("step_id", sa.String(), nullable=True),
        sa.Column("arrived_at", TIMESTAMP, nullable=False),
        sa.Column("next_due_at", TIMESTAMP, nullable=True),
        sa.Column("waiting_for", sa.String(), nullable=True),
        sa.Column("lease_until", TIMESTAMP, nullable=True),
        sa.Column("lease_owner", sa.String(), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("campaign_version", sa.String(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enrolled_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("end_reason", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment"),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], name="fk_enrollment_lead_id_lead", ondelete="CASCADE"),
    )
    # lead first: "is this lead in that campaign" is the question enrollment asks for every candidate lead
    op.create_index("ix_enrollment_lead_id_campaign_id", "enrollment", ["lead_id", "campaign_id"])
    op.create_index("ix_enrollment_status_next_due_at", "enrollment", ["status", "next_due_at"])
    op.create_index("ix_enrollment_campaign_id_status", "enrollment", ["campaign_id", "status"])
    op.create_index(
        "uq_enrollment_active_lead_id_campaign_id",
        "enrollment",
        ["lead_id", "campaign_id"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )

    op.create_table(
        "delivery",
        sa.Column("id", ID, nullable=False),
        sa.Column("enrollment_id", ID, nullable=False),
        sa.Column("lead_id", ID, nullable=False),
        sa.Column("campaign_id", sa.String(), nullable=False),
        sa.Column("step_id", sa.String(), nullable=False),
        sa.Column("step_key", sa.String(), nullable=False),
        sa.Column("variant", sa.String(), nullable=True),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("lease_until", TIMESTAMP, nullable=True),
        sa.Column("message_id", sa.String(), nullable=True),
        sa.Column("provider_message_id", sa.String(), nullable=True),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_delivery"),
        sa.UniqueConstraint("enrollment_id", "step_key", name="uq_delivery_enrollment_id_step_key"),
        sa.ForeignKeyConstraint(
            ["enrollment_id"], ["enrollment.id"], name="fk_delivery_enrollment_id_enrollment", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], name="fk_delivery_lead_id_lead", ondelete="CASCADE"),
    )
    op.create_index("ix_delivery_status_next_attempt_at", "delivery", ["status", "next_attempt_at"])
    op.create_index("ix_delivery_lead_id_sent_at", "delivery", ["lead_id", "sent_at"])
    op.create_index("ix_delivery_provider_message_id", "delivery", ["provider_message_id"])

    op.create_table(
        "engagement_event",
        sa.Column("id", ID, nullable=False),
        sa.Column("lead_id", ID, nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.Column("external_id", sa.String(), nullable=True),
        sa.Column("campaign_id", sa.String(), nullable=True),
        sa.Column("step_key", sa.String(), nullable=True),
        sa.Column("delivery_id", ID, nullable=True),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_engagement_event"),
        sa.UniqueConstraint("external_id", name="uq_engagement_event_external_id"),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], name="fk_engagement_event_lead_id_lead", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["delivery.id"], name="fk_engagement_event_delivery_id_delivery", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_engagement_event_lead_id_occurred_at", "engagement_event", ["lead_id", "occurred_at"])

    op.create_table(
        "stage_change",
        sa.Column("id", ID, nullable=False),
        sa.Column("lead_id", ID, nullable=False),
        sa.Column("from_stage", sa.String(), nullable=True),
        sa.Column("to_stage", sa.String(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stage_change"),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], name="fk_stage_change_lead_id_lead", ondelete="CASCADE"),
    )
    op.create_index("ix_stage_change_lead_id", "stage_change", ["lead_id"])

    op.create_table(
        "outbox",
        sa.Column("id", ID, nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("dedup_key", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("lease_until", TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("dedup_key", name="uq_outbox_dedup_key"),
    )
    op.create_index("ix_outbox_status_next_attempt_at", "outbox", ["status", "next_attempt_at"])

    op.create_table(
        "meta",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )

    op.create_table(
        "campaign_version",
        sa.Column("campaign_id", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("loaded_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", name="pk_campaign_version"),
    )


def downgrade() -> None:
    dependents_first = ("campaign_version", "meta", "outbox", "stage_change", "engagement_event", "delivery")
    for table in (*dependents_first, "enrollment", "lead"):
        op.drop_table(table)
