"""The rollups of a bulk write's new leads, stage changes and enrollments, counted once at the end of its transaction
instead of by a trigger per row (the CSV import's batches).

On SQLite the insert triggers of ``0006_rollup`` run once per row: each inserted lead, stage change and enrollment
upserts its day's rollup row (two for an enrollment), about a fifth of an import's CPU. Inside :func:`counted_at_once`
they are set aside (:func:`nurture.storage.dialect.row_triggers_set_aside`) and the rows the block inserted, those
past each table's highest id when it began, are counted by day and key in one upsert per rollup: what the triggers
would have added (``tests/integration/test_rollups.py``: the rollups equal a rebuild). PostgreSQL's insert triggers
count a statement's rows at once already: there the block runs as it is.

The block must not change the counted columns of the rows it inserted (``created_at``, ``source``, ``medium`` and
``source_campaign`` of a lead; an enrollment's dates, campaign, status and end): their update triggers would move
counts that were never added. The import inserts, and updates only leads that were there before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import Connection, Dialect

from nurture.storage.dialect import row_triggers_set_aside, utc_day_sql

_TABLES = {"rollup_lead_insert": "lead", "rollup_stage_change_insert": "stage_change",
           "rollup_enrollment_insert": "enrollment"}
"""The insert triggers set aside, and the table of each."""


def _add(table: str, keys: tuple[str, ...], select: str) -> str:
    """Add the rows of ``select`` (keys, then the count) to ``table``'s ``n``."""
    return (f"INSERT INTO {table} ({', '.join(keys)}, n) {select} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET n = {table}.n + excluded.n")


def _counts(dialect: Dialect) -> dict[str, list[str]]:
    """Trigger name -> the statements that count its table's rows with ids past ``:after`` as it counts a row."""
    def day(column: str) -> str:
        return utc_day_sql(column, dialect)

    enrollment_keys = ("day", "campaign_id", "kind", "status", "end_reason")
    return {
        "rollup_lead_insert": [_add(
            "rollup_lead_day", ("day", "source", "medium", "source_campaign"),
            f"SELECT {day('created_at')}, coalesce(source, ''), coalesce(medium, ''), coalesce(source_campaign, ''), "
            "count(*) FROM lead WHERE id > :after GROUP BY 1, 2, 3, 4")],
        "rollup_stage_change_insert": [_add(
            "rollup_move_day", ("day", "from_stage", "to_stage", "actor", "source", "source_campaign"),
            f"SELECT {day('s.at')}, coalesce(s.from_stage, ''), s.to_stage, s.actor, coalesce(l.source, ''), "
            "coalesce(l.source_campaign, ''), count(*) FROM stage_change s JOIN lead l ON l.id = s.lead_id "
            "WHERE s.id > :after GROUP BY 1, 2, 3, 4, 5, 6")],
        "rollup_enrollment_insert": [
            _add("rollup_enrollment_day", enrollment_keys,
                 f"SELECT {day('enrolled_at')}, campaign_id, 'started', '', '', count(*) FROM enrollment "
                 "WHERE id > :after GROUP BY 1, 2"),
            _add("rollup_enrollment_day", enrollment_keys,
                 f"SELECT {day('ended_at')}, campaign_id, 'ended', status, coalesce(end_reason, ''), count(*) "
                 "FROM enrollment WHERE id > :after AND ended_at IS NOT NULL GROUP BY 1, 2, 4, 5"),
        ],
    }


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
        counts = _counts(connection.dialect)
        for name in sorted(set_aside):
            for statement in counts[name]:
                connection.execute(text(statement), {"after": after[name]})
