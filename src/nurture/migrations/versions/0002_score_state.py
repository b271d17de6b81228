"""Score state on leads.

Each lead's scored history summed per event type, so that recording an event need not read the events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for every lead already stored: its first event reads its history once and writes the state
    with op.batch_alter_table("lead") as batch:
        batch.add_column(sa.Column("score_state", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lead") as batch:
        batch.drop_column("score_state")
