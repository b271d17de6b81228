"""Daily rollups of what a report counts, kept up to date by triggers, so a report reads days, not rows.

- ``rollup_lead_day``: leads created per UTC day, source, medium and acquisition campaign.
- ``rollup_move_day``: stage changes per UTC day, stages, actor, and the lead's source and acquisition campaign.
- ``rollup_delivery_day``: emails per UTC day (created), campaign, step, variant and status, with opened and clicked.
- ``rollup_enrollment_day``: enrollments started, and ended (with status and reason), per UTC day and campaign.
- ``rollup_outcome_day``: step outcomes per UTC day, campaign, step, outcome and detail.

Triggers on ``lead``, ``stage_change``, ``delivery``, ``engagement_event``, ``enrollment`` and ``step_outcome`` add
each written row to its day in the same transaction, whichever code wrote it; an update moves the row's count from
its old key to its new one (a lead's source set by a later event moves its stage changes too). The rollups are then
filled from the rows already there. A later migration that copies one of these tables (SQLite's batch mode) drops its
triggers and must create them again (``tests/integration/test_rollups.py`` checks that they are all there).

Revision ID: 0006_rollup
Revises: 0005_report
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.engine import Dialect

from nurture.storage.dialect import drop_row_trigger, row_trigger, utc_day_sql

revision = "0006_rollup"
down_revision = "0005_report"
branch_labels = None
depends_on = None

KEYS = {  # the key columns of each rollup (their counts are n, and opened/clicked for emails)
    "rollup_lead_day": ("day", "source", "medium", "source_campaign"),
    "rollup_move_day": ("day", "from_stage", "to_stage", "actor", "source", "source_campaign"),
    "rollup_delivery_day": ("day", "campaign_id", "step_id", "variant", "status"),
    "rollup_enrollment_day": ("day", "campaign_id", "kind", "status", "end_reason"),
    "rollup_outcome_day": ("day", "campaign_id", "step_id", "outcome", "detail"),
}
COUNTS = {"rollup_delivery_day": ("n", "opened", "clicked")}
ENGAGED = "('email_open', 'email_click')"
CLICKED = "('email_click')"


def _add(table: str, select: str) -> str:
    """Add the rows of ``select`` (keys, then counts) to ``table``'s counts."""
    keys, counts = KEYS[table], COUNTS.get(table, ("n",))
    update = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counts)
    return (f"INSERT INTO {table} ({', '.join(keys + counts)}) {select} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}")


def _opened(row: str, types: str = ENGAGED) -> str:
    return (f"CASE WHEN {row}.status = 'sent' AND EXISTS (SELECT 1 FROM engagement_event e "
            f"WHERE e.delivery_id = {row}.id AND e.type IN {types}) THEN 1 ELSE 0 END")


def _changed(*columns: str) -> str:
    return " OR ".join(f"coalesce(OLD.{c}, '') <> coalesce(NEW.{c}, '')" for c in columns)


def triggers(dialect: Dialect) -> dict[tuple[str, str], tuple[str, str, list[str]]]:
    """(name, table) -> (event, condition, statements) of every rollup trigger."""
    def day(column: str) -> str:
        return utc_day_sql(column, dialect)

    def lead(row: str, sign: str) -> str:
        return _add("rollup_lead_day", f"SELECT {day(f'{row}.created_at')}, coalesce({row}.source, ''), "
                                       f"coalesce({row}.medium, ''), coalesce({row}.source_campaign, ''), {sign}1 "
                                       "WHERE 1 = 1")

    def lead_moves(row: str, sign: str) -> str:
        return _add("rollup_move_day", f"SELECT {day('s.at')}, coalesce(s.from_stage, ''), s.to_stage, s.actor, "
                                       f"coalesce({row}.source, ''), coalesce({row}.source_campaign, ''), "
                                       f"{sign}count(*) FROM stage_change s WHERE s.lead_id = {row}.id "
                                       f"GROUP BY {day('s.at')}, coalesce(s.from_stage, ''), s.to_stage, s.actor")

    def delivery(row: str, sign: str) -> str:
        return _add("rollup_delivery_day", f"SELECT {day(f'{row}.created_at')}, {row}.campaign_id, {row}.step_id, "
                                           f"coalesce({row}.variant, ''), {row}.status, {sign}1, "
                                           f"{sign}({_opened(row)}), {sign}({_opened(row, CLICKED)}) "
                                           f"WHERE {row}.channel = 'email'")

    def started(row: str, sign: str) -> str:
        return _add("rollup_enrollment_day", f"SELECT {day(f'{row}.enrolled_at')}, {row}.campaign_id, 'started', "
                                             f"'', '', {sign}1 WHERE 1 = 1")

    def ended(row: str, sign: str) -> str:
        return _add("rollup_enrollment_day", f"SELECT {day(f'{row}.ended_at')}, {row}.campaign_id, 'ended', "
                                             f"{row}.status, coalesce({row}.end_reason, ''), {sign}1 "
                                             f"WHERE {row}.ended_at IS NOT NULL")

    def first(types: str) -> str:
        return (f"CASE WHEN NOT EXISTS (SELECT 1 FROM engagement_event e WHERE e.delivery_id = NEW.delivery_id "
                f"AND e.type IN {types} AND e.id < NEW.id) THEN 1 ELSE 0 END")

    return {
        ("rollup_lead_insert", "lead"): ("INSERT", "1 = 1", [lead("NEW", "")]),
        ("rollup_lead_update", "lead"): (
            "UPDATE OF created_at, source, medium, source_campaign",
            f"OLD.created_at <> NEW.created_at OR {_changed('source', 'medium', 'source_campaign')}",
            [lead("OLD", "-"), lead("NEW", ""), lead_moves("OLD", "-"), lead_moves("NEW", "")]),
        ("rollup_stage_change_insert", "stage_change"): ("INSERT", "1 = 1", [_add(
            "rollup_move_day", f"SELECT {day('NEW.at')}, coalesce(NEW.from_stage, ''), NEW.to_stage, NEW.actor, "
                               "coalesce(l.source, ''), coalesce(l.source_campaign, ''), 1 FROM lead l "
                               "WHERE l.id = NEW.lead_id")]),
        ("rollup_delivery_insert", "delivery"): ("INSERT", "NEW.channel = 'email'", [delivery("NEW", "")]),
        ("rollup_delivery_update", "delivery"): (
            "UPDATE OF created_at, campaign_id, step_id, variant, status, channel",
            f"OLD.created_at <> NEW.created_at OR {_changed('campaign_id', 'step_id', 'variant', 'status', 'channel')}",
            [delivery("OLD", "-"), delivery("NEW", "")]),
        ("rollup_engagement_event_insert", "engagement_event"): (
            "INSERT", f"NEW.delivery_id IS NOT NULL AND NEW.type IN {ENGAGED}",
            [_add("rollup_delivery_day", f"SELECT {day('d.created_at')}, d.campaign_id, d.step_id, "
                                         f"coalesce(d.variant, ''), d.status, 0, {first(ENGAGED)}, "
                                         f"CASE WHEN NEW.type = 'email_click' THEN {first(CLICKED)} "
                                         "ELSE 0 END FROM delivery d WHERE d.id = NEW.delivery_id "
                                         "AND d.channel = 'email' AND d.status = 'sent'")]),
        ("rollup_enrollment_insert", "enrollment"): ("INSERT", "1 = 1", [started("NEW", ""), ended("NEW", "")]),
        ("rollup_enrollment_update", "enrollment"): (
            "UPDATE OF enrolled_at, ended_at, campaign_id, status, end_reason",
            "OLD.enrolled_at <> NEW.enrolled_at OR (OLD.ended_at IS NULL) <> (NEW.ended_at IS NULL) "
            f"OR OLD.ended_at <> NEW.ended_at OR {_changed('campaign_id', 'status', 'end_reason')}",
            [started("OLD", "-"), started("NEW", ""), ended("OLD", "-"), ended("NEW", "")]),
        ("rollup_step_outcome_insert", "step_outcome"): ("INSERT", "1 = 1", [_add(
            "rollup_outcome_day", f"SELECT {day('NEW.at')}, NEW.campaign_id, NEW.step_id, NEW.outcome, NEW.detail, 1 "
                                  "WHERE 1 = 1")]),
    }


def fill(dialect: Dialect) -> list[str]:
    """The statements that count the rows already there into the (empty) rollups."""
    def day(column: str) -> str:
        return utc_day_sql(column, dialect)

    engaged = ("sum(CASE WHEN d.status = 'sent' AND EXISTS (SELECT 1 FROM engagement_event e "
               "WHERE e.delivery_id = d.id AND e.type IN {}) THEN 1 ELSE 0 END)")
    return [
        f"INSERT INTO rollup_lead_day (day, source, medium, source_campaign, n) SELECT {day('created_at')}, "
        "coalesce(source, ''), coalesce(medium, ''), coalesce(source_campaign, ''), count(*) FROM lead "
        f"GROUP BY {day('created_at')}, coalesce(source, ''), coalesce(medium, ''), coalesce(source_campaign, '')",
        f"INSERT INTO rollup_move_day (day, from_stage, to_stage, actor, source, source_campaign, n) "
        f"SELECT {day('s.at')}, coalesce(s.from_stage, ''), s.to_stage, s.actor, coalesce(l.source, ''), "
        "coalesce(l.source_campaign, ''), count(*) FROM stage_change s JOIN lead l ON l.id = s.lead_id "
        f"GROUP BY {day('s.at')}, coalesce(s.from_stage, ''), s.to_stage, s.actor, coalesce(l.source, ''), "
        "coalesce(l.source_campaign, '')",
        f"INSERT INTO rollup_delivery_day (day, campaign_id, step_id, variant, status, n, opened, clicked) "
        f"SELECT {day('d.created_at')}, d.campaign_id, d.step_id, coalesce(d.variant, ''), d.status, count(*), "
        f"{engaged.format(ENGAGED)}, {engaged.format(CLICKED)} FROM delivery d WHERE d.channel = 'email' "
        f"GROUP BY {day('d.created_at')}, d.campaign_id, d.step_id, coalesce(d.variant, ''), d.status",
        f"INSERT INTO rollup_enrollment_day (day, campaign_id, kind, status, end_reason, n) "
        f"SELECT {day('enrolled_at')}, campaign_id, 'started', '', '', count(*) FROM enrollment "
        f"GROUP BY {day('enrolled_at')}, campaign_id",
        f"INSERT INTO rollup_enrollment_day (day, campaign_id, kind, status, end_reason, n) "
        f"SELECT {day('ended_at')}, campaign_id, 'ended', status, coalesce(end_reason, ''), count(*) FROM enrollment "
        f"WHERE ended_at IS NOT NULL GROUP BY {day('ended_at')}, campaign_id, status, coalesce(end_reason, '')",
        f"INSERT INTO rollup_outcome_day (day, campaign_id, step_id, outcome, detail, n) "
        f"SELECT {day('at')}, campaign_id, step_id, outcome, detail, count(*) FROM step_outcome "
        f"GROUP BY {day('at')}, campaign_id, step_id, outcome, detail",
    ]


def upgrade() -> None:
    for table, keys in KEYS.items():
        columns: list[sa.Column[Any]] = [sa.Column("day", sa.Date(), nullable=False)]
        columns += [sa.Column(key, sa.String(), nullable=False) for key in keys[1:]]
        columns += [sa.Column(count, sa.BigInteger(), nullable=False) for count in COUNTS.get(table, ("n",))]
        op.create_table(table, *columns, sa.PrimaryKeyConstraint(*keys, name=f"pk_{table}"))
    dialect = op.get_context().dialect
    for (name, table), (event, when, statements) in triggers(dialect).items():
        for ddl in row_trigger(dialect, name, table, event, when, statements):
            op.execute(ddl)
    if not context.is_offline_mode():
        for statement in fill(dialect):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_context().dialect
    for name, table in triggers(dialect):
        for ddl in drop_row_trigger(dialect, name, table):
            op.execute(ddl)
    for table in reversed(list(KEYS)):
        op.drop_table(table)
