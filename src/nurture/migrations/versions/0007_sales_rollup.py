"""Rollups of the sales side, so a report over a year of a million leads reads days, not a row per SQL or decision.

- ``rollup_sql_day``: moves to ``sql`` per UTC day and wait (whole milliseconds since the lead's first move to
  ``mql`` before it; -1 when none): the time-to-SQL distribution.
- ``rollup_decision_day``: sales' decisions per UTC day, stage, reason (without its note), the lead's owner, the rule
  of the promotion decided, and for a rejection the campaigns the lead was in when promoted.

Triggers on ``stage_change`` inserts keep them, and one on a lead's owner moves its decisions to the new owner (the
report counts decisions by the owner a lead has now). The index of leads by stage also holds when each lead reached
it and its owner, so the SQLs waiting for sales are read from the index alone. The SQL is
:mod:`nurture.storage.sales_rollups`', shared with ``nurture db rebuild-rollups``. The rollups are then filled from
the rows already there.

Revision ID: 0007_sales_rollup
Revises: 0006_rollup
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

from nurture.storage.dialect import drop_row_trigger, row_trigger
from nurture.storage.sales_rollups import DECISION_KEYS, SQL_KEYS, rebuilds, triggers

revision = "0007_sales_rollup"
down_revision = "0006_rollup"
branch_labels = None
depends_on = None

TABLES = {"rollup_sql_day": SQL_KEYS, "rollup_decision_day": DECISION_KEYS}


def upgrade() -> None:
    op.drop_index("ix_lead_stage", table_name="lead")
    op.create_index("ix_lead_stage", "lead", ["stage", "stage_changed_at", "owner"])
    for table, keys in TABLES.items():
        columns: list[sa.Column[Any]] = [sa.Column("day", sa.Date(), nullable=False)]
        columns += [sa.Column(key, sa.BigInteger() if key == "wait_ms" else sa.String(), nullable=False)
                    for key in keys[1:]]
        columns.append(sa.Column("n", sa.BigInteger(), nullable=False))
        op.create_table(table, *columns, sa.PrimaryKeyConstraint(*keys, name=f"pk_{table}"))
    dialect = op.get_context().dialect
    for (name, table), (event, when, statements) in triggers(dialect).items():
        for ddl in row_trigger(dialect, name, table, event, when, statements):
            op.execute(ddl)
    if not context.is_offline_mode():
        for statement in rebuilds(dialect):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_context().dialect
    for name, table in triggers(dialect):
        for ddl in drop_row_trigger(dialect, name, table):
            op.execute(ddl)
    for table in reversed(list(TABLES)):
        op.drop_table(table)
    op.drop_index("ix_lead_stage", table_name="lead")
    op.create_index("ix_lead_stage", "lead", ["stage"])
