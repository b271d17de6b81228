"""Lead pages keep room for the next version of their rows (PostgreSQL: ``fillfactor`` 80).

Every event batch writes each of its leads again (score, stage, score state). PostgreSQL puts the new version of a
row on its page when there is room and no indexed column changed (a HOT update), and then adds no entry to the lead
table's four indexes. On full pages most of them went to another page, with an entry in every index, and left the
old version behind until a vacuum: 44% of the intake's updates were HOT (by ``bench/intake_cpu.py``, 50,000 events
over 2,000 leads). With a fifth of each page kept free, 84% are, the backends spend about a tenth less CPU per event
(38 -> 34 µs), and the table grew to 360 pages rather than 1,460. Pages filled before this keep their rows; the free
room comes as their rows move on. SQLite has no such setting.

Revision ID: 0012_lead_fillfactor
Revises: 0011_waiting_index
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

from nurture.storage.dialect import fillfactor_sql

revision = "0012_lead_fillfactor"
down_revision = "0011_waiting_index"
branch_labels = None
depends_on = None

LEAD_FILLFACTOR = 80


def upgrade() -> None:
    for statement in fillfactor_sql(op.get_context().dialect, "lead", LEAD_FILLFACTOR):
        op.execute(statement)


def downgrade() -> None:
    for statement in fillfactor_sql(op.get_context().dialect, "lead", None):
        op.execute(statement)
