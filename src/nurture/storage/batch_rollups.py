"""The rollups of a bulk write's new leads, stage changes and enrollments, counted once at the end of its transaction
instead of by a trigger per row (the CSV import's batches).

On SQLite the insert triggers of ``0006_rollup`` run once per row: each inserted lead, stage change and enrollment
upserts its day's rollup row (two for an enrollment), about a fifth of an import's CPU. Inside :func:`counted_at_once`
they are set aside (:func:`nurture.storage.dialect.row_triggers_set_aside`) and the rows the block inserted, those
past each table's highest id when it began, are counted by day and key in one upsert per rollup, with the SELECTs
that rebuild the rollups (:func:`nurture.storage.rollups.add_inserted`): what the triggers would have added
(``tests/integration/test_rollups.py``: the rollups equal a rebuild). PostgreSQL's insert triggers count a
statement's rows at once already: there the block runs as it is.

The block must not change the counted columns of the rows it inserted (``created_at``, ``source``, ``medium`` and
``source_campaign`` of a lead; an enrollment's dates, campaign, status and end): their update triggers would move
counts that were never added. The import inserts, and updates only leads that were there before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection

from nurture.storage.dialect import row_triggers_set_aside
from nurture.storage.rollups import add_inserted

_TABLES = {"rollup_lead_insert": "lead", "rollup_stage_change_insert": "stage_change",
           "rollup_enrollment_insert": "enrollment"}
"""The insert triggers set aside, and the table of each."""


@contextmanager
def counted_at_once(connection: Connection) -> Iterator[None]:
    """Inside the caller's transaction: the leads, stage changes and enrollments the block inserts are added to the
    rollups once, when it ends, rather than row by row (on SQLite; on PostgreSQL the triggers do so already)."""
    with row_triggers_set_aside(connection, _TABLES) as set_aside:
        if not set_aside:
            yield
            return
        after = {name: int(connection.exec_driver_sql(f"SELECT coalesce(max(id), 0) FROM {_TABLES[name]}").scalar()
                           or 0) for name in set_aside}
        yield
        add_inserted(connection, {_TABLES[name]: highest for name, highest in after.items()})
