"""Definition versions.

Every campaign, policy, scoring and sales file the worker loads is kept as a version (its text, when it came into
force, when it was replaced), in place of the one fingerprint per campaign; deliveries record the campaign version
that decided them. Each campaign fingerprint already recorded becomes that campaign's version in force, without text.

Revision ID: 0003_plan
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_plan"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "definition_version",
        sa.Column("id", ID, nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("loaded_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("summary", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_definition_version"),
    )
    op.create_index("ix_definition_version_kind_name_ended_at", "definition_version", ["kind", "name", "ended_at"])
    # the enrollments' campaign_version holds these fingerprints: they stay the names of the versions in force
    op.execute(
        "INSERT INTO definition_version (kind, name, content_hash, fingerprint, loaded_at) "
        "SELECT 'campaign', campaign_id, fingerprint, fingerprint, loaded_at FROM campaign_version"
    )
    op.drop_table("campaign_version")
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("campaign_version", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("campaign_version")
    op.create_table(
        "campaign_version",
        sa.Column("campaign_id", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("loaded_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", name="pk_campaign_version"),
    )
    op.execute(
        "INSERT INTO campaign_version (campaign_id, fingerprint, loaded_at) "
        "SELECT name, COALESCE(fingerprint, content_hash), loaded_at FROM definition_version "
        "WHERE kind = 'campaign' AND ended_at IS NULL"
    )
    op.drop_index("ix_definition_version_kind_name_ended_at", table_name="definition_version")
    op.drop_table("definition_version")
