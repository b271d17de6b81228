"""A/B winners and holdout groups.

The recorded winner of each A/B email step (``variant_decision``, one per campaign and step) and the holdout flag of
enrollments.

Revision ID: 0004_abtest
Revises: 0003_plan
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_abtest"
down_revision = "0003_plan"
branch_labels = None
depends_on = None

# Written out here rather than imported, so this revision stays what it was when the models change.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # every enrollment already stored was sent to: none is held out (a plain ADD COLUMN on both back-ends)
    op.add_column("enrollment", sa.Column("held_out", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "variant_decision",
        sa.Column("id", ID, nullable=False),
        sa.Column("campaign_id", sa.String(), nullable=False),
        sa.Column("step_id", sa.String(), nullable=False),
        sa.Column("winner", sa.String(), nullable=False),
        sa.Column("metric", sa.String(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("decided_at", TIMESTAMP, nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_variant_decision"),
        sa.UniqueConstraint("campaign_id", "step_id", name="uq_variant_decision_campaign_id_step_id"),
    )


def downgrade() -> None:
    op.drop_table("variant_decision")
    with op.batch_alter_table("enrollment") as batch:
        batch.drop_column("held_out")
