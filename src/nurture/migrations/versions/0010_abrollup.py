"""A/B tests on clicks or opens without reading every email of the period; the campaigns with a holdout by an index.

- ``ab_lead_step``: per lead and A/B step, the lead's first sent email of the step with a variant (its id, variant,
  creation and send times), how many such emails it has, and its first click and first open or click on them
  (:mod:`nurture.storage.ab_rollup`). Triggers on ``delivery`` (a newly sent email with a variant is added to its
  lead's row; a change to one already sent recomputes the row) keep it, per row on SQLite, per statement on
  PostgreSQL; and one per row on ``engagement_event`` (an open or click moves the first times earlier). It is then
  filled from the rows already there.
- ``ix_enrollment_held_out_enrolled_at``: a partial index of the held-out enrollments, so that the report's question
  "which campaigns held out a lead in the period?" reads only those (none, when no campaign has a holdout).

Revision ID: 0010_abrollup
Revises: 0009_pgimport
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from nurture.storage.ab_rollup import event_trigger, rebuilds, row_triggers, statement_triggers, trigger_names
from nurture.storage.database import UTCDateTime
from nurture.storage.dialect import (
    HELD_OUT_INDEX,
    drop_row_trigger,
    row_trigger,
    statement_trigger,
    sums_in_statement_triggers,
)

revision = "0010_abrollup"
down_revision = "0009_pgimport"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index("ix_enrollment_held_out_enrolled_at", "enrollment", ["enrolled_at", "campaign_id"],
                    **HELD_OUT_INDEX)
    op.create_table(
        "ab_lead_step",
        sa.Column("campaign_id", sa.String(), nullable=False),
        sa.Column("step_id", sa.String(), nullable=False),
        sa.Column("lead_id", ID, nullable=False),
        sa.Column("delivery_id", ID, nullable=False),
        sa.Column("variant", sa.String(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=False),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("clicked_at", UTCDateTime(), nullable=True),
        sa.Column("opened_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"], name="fk_ab_lead_step_lead_id_lead", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id", "step_id", "lead_id", name="pk_ab_lead_step"),
    )
    for name, columns, where in (
            ("ix_ab_lead_step_one_send",
             ["campaign_id", "step_id", "created_at", "variant", "clicked_at", "opened_at", "sends"], "sends = 1"),
            ("ix_ab_lead_step_several_sends", ["campaign_id", "step_id", "lead_id", "sends"], "sends > 1")):
        op.create_index(name, "ab_lead_step", columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where))
    dialect = op.get_context().dialect
    rows_each = event_trigger()
    if sums_in_statement_triggers(dialect):
        for (name, table), (event, statements) in statement_triggers().items():
            for ddl in statement_trigger(name, table, event, statements):
                op.execute(ddl)
    else:
        rows_each = row_triggers()
    for (name, table), (event, when, statements) in rows_each.items():
        for ddl in row_trigger(dialect, name, table, event, when, statements):
            op.execute(ddl)
    if not context.is_offline_mode():
        for statement in rebuilds():
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_context().dialect
    for name, table in trigger_names(dialect):
        for ddl in drop_row_trigger(dialect, name, table):
            op.execute(ddl)
    op.drop_index("ix_ab_lead_step_several_sends", table_name="ab_lead_step")
    op.drop_index("ix_ab_lead_step_one_send", table_name="ab_lead_step")
    op.drop_table("ab_lead_step")
    op.drop_index("ix_enrollment_held_out_enrolled_at", table_name="enrollment")
