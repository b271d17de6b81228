"""The report's rollups of the sales side (migration ``0007_sales_rollup``): moves to ``sql`` per day and wait since
the first MQL (``rollup_sql_day``), and sales' decisions per day, stage, reason, owner, promotion rule and campaigns
(``rollup_decision_day``). With them a report reads days, not one row per SQL or decision.

The SQL that counts a row lives here once, for the triggers that keep the rollups (on ``stage_change`` inserts, and
on a lead's new owner, which moves its decisions to that owner) and for :func:`rebuilds` (``nurture db
rebuild-rollups``), so the two count alike. What a reason *means* (its reject code, its rule) is decided above
storage: these keep the text before a note (``; note: ``) and the text before a promotion reason's first ``: ``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.engine import Connection, Dialect

from nurture.storage.database import UTCDateTime
from nurture.storage.dialect import joined_sql, millis_between_sql, text_before_sql, utc_day_sql
from nurture.storage.tables import RS, RX

DECIDED = "('opportunity', 'recycled', 'disqualified')"
NOTE = "; note: "  # core.promotion.NOTE: what follows a decision's reason when sales wrote a note
SQL_KEYS = ("day", "wait_ms")
DECISION_KEYS = ("day", "to_stage", "reason", "owner", "rule", "campaigns")


def _add(table: str, keys: tuple[str, ...], select_sql: str) -> str:
    """Add the rows of ``select_sql`` (keys, then ``n``) to ``table``'s counts."""
    return (f"INSERT INTO {table} ({', '.join(keys)}, n) {select_sql} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET n = {table}.n + excluded.n")


def _sql_rows(dialect: Dialect, where: str) -> str:
    """``day, wait_ms`` of each move to ``sql`` of ``stage_change s`` that ``where`` selects."""
    first_mql = ("(SELECT min(m.at) FROM stage_change m WHERE m.lead_id = s.lead_id AND m.to_stage = 'mql' "
                 "AND m.at <= s.at)")
    return (f"SELECT {utc_day_sql('s.at', dialect)} AS day, "
            f"coalesce({millis_between_sql(first_mql, 's.at', dialect)}, -1) AS wait_ms "
            f"FROM stage_change s WHERE s.to_stage = 'sql' AND {where}")


def sql_moves(dialect: Dialect, where: str) -> str:
    """Count the moves to ``sql`` of ``stage_change s`` that ``where`` selects into ``rollup_sql_day``."""
    return _add("rollup_sql_day", SQL_KEYS,
                f"SELECT day, wait_ms, count(*) FROM ({_sql_rows(dialect, where)}) r WHERE 1 = 1 GROUP BY day, wait_ms")


def _decision_rows(dialect: Dialect, where: str, owner: str) -> str:
    """``day, to_stage, reason, owner, rule, campaigns`` of each decision of ``stage_change s`` that ``where``
    selects, under the owner ``owner`` (SQL; it may read ``l``, the lead)."""
    promotion = ("(SELECT max(q.id) FROM stage_change q WHERE q.lead_id = s.lead_id AND q.to_stage = 'sql' "
                 "AND q.at <= s.at)")
    campaigns = joined_sql("e.campaign_id", "FROM enrollment e WHERE e.lead_id = s.lead_id AND e.enrolled_at <= p.at "
                           "AND (e.ended_at IS NULL OR e.ended_at >= p.at)", dialect)
    return (f"SELECT {utc_day_sql('s.at', dialect)} AS day, s.to_stage AS to_stage, "
            f"{text_before_sql('s.reason', NOTE, dialect)} AS reason, coalesce({owner}, '') AS owner, "
            f"coalesce({text_before_sql('p.reason', ': ', dialect)}, '') AS rule, "
            f"CASE WHEN s.to_stage = 'opportunity' OR p.at IS NULL THEN '' ELSE coalesce({campaigns}, '') END "
            "AS campaigns "
            f"FROM stage_change s JOIN lead l ON l.id = s.lead_id LEFT JOIN stage_change p ON p.id = {promotion} "
            f"WHERE s.from_stage = 'sql' AND s.to_stage IN {DECIDED} AND {where}")


def decisions(dialect: Dialect, where: str, owner: str, sign: str = "") -> str:
    """Count the decisions of ``stage_change s`` that ``where`` selects into ``rollup_decision_day``, under the owner
    ``owner`` (SQL of the lead's owner; it may read ``l``, the lead), ``sign`` '-' to take them out."""
    keys = ", ".join(DECISION_KEYS)
    return _add("rollup_decision_day", DECISION_KEYS, f"SELECT {keys}, {sign}count(*) "
                f"FROM ({_decision_rows(dialect, where, owner)}) r WHERE 1 = 1 GROUP BY {keys}")


def triggers(dialect: Dialect) -> dict[tuple[str, str], tuple[str, str, list[str]]]:
    """(name, table) -> (event, condition, statements) of the triggers that keep these rollups."""
    return {
        ("rollup_sql_insert", "stage_change"): ("INSERT", "NEW.to_stage = 'sql'",
                                                [sql_moves(dialect, "s.id = NEW.id")]),
        ("rollup_decision_insert", "stage_change"): (
            "INSERT", f"NEW.from_stage = 'sql' AND NEW.to_stage IN {DECIDED}",
            [decisions(dialect, "s.id = NEW.id", "l.owner")]),
        ("rollup_decision_owner", "lead"): (
            "UPDATE OF owner", "coalesce(OLD.owner, '') <> coalesce(NEW.owner, '')",
            [decisions(dialect, "s.lead_id = OLD.id", "OLD.owner", "-"),
             decisions(dialect, "s.lead_id = NEW.id", "NEW.owner")]),
    }


def rebuilds(dialect: Dialect) -> list[str]:
    """The statements that count every row into the (emptied) rollups."""
    return [sql_moves(dialect, "1 = 1"), decisions(dialect, "1 = 1", "l.owner")]


def sql_waits(conn: Connection, first: date, last: date) -> list[Any]:
    """``wait_ms, n``: the moves to ``sql`` of the days ``[first, last)`` per wait (-1: no MQL before)."""
    return list(conn.execute(select(RS.c.wait_ms, func.sum(RS.c.n)).where(RS.c.day >= first, RS.c.day < last)
                             .group_by(RS.c.wait_ms).having(func.sum(RS.c.n) != 0)))


def decision_counts(conn: Connection, first: date, last: date) -> list[Any]:
    """``to_stage, reason, owner, rule, campaigns, n`` summed over the days ``[first, last)``."""
    keys = (RX.c.to_stage, RX.c.reason, RX.c.owner, RX.c.rule, RX.c.campaigns)
    return list(conn.execute(select(*keys, func.sum(RX.c.n)).where(RX.c.day >= first, RX.c.day < last)
                             .group_by(*keys).having(func.sum(RX.c.n) != 0)))


# -- the same counts from the rows: the part days at a period's ends, and a period narrowed to one campaign ----------

_PERIOD = "s.at >= :since AND s.at < :until"
_IN_CAMPAIGN = " AND EXISTS (SELECT 1 FROM enrollment c WHERE c.lead_id = s.lead_id AND c.campaign_id = :campaign)"


def _period(statement: str, since: datetime, until: datetime, campaign: str | None) -> Any:
    binds = [bindparam("since", since, type_=UTCDateTime), bindparam("until", until, type_=UTCDateTime)]
    if campaign is not None:
        binds.append(bindparam("campaign", campaign))
    return text(statement).bindparams(*binds)


def sql_waits_of(conn: Connection, since: datetime, until: datetime, campaign: str | None = None) -> list[Any]:
    """``wait_ms, n`` of the moves to ``sql`` in ``[since, until)``, counted from the rows (of leads ever enrolled in
    ``campaign``, if given)."""
    where = _PERIOD + (_IN_CAMPAIGN if campaign is not None else "")
    rows = _sql_rows(conn.dialect, where)
    return list(conn.execute(_period(f"SELECT wait_ms, count(*) FROM ({rows}) r GROUP BY wait_ms",
                                     since, until, campaign)))


def decision_counts_of(conn: Connection, since: datetime, until: datetime, campaign: str | None = None) -> list[Any]:
    """``to_stage, reason, owner, rule, campaigns, n`` of the decisions in ``[since, until)``, counted from the rows
    (of leads ever enrolled in ``campaign``, if given)."""
    where = _PERIOD + (_IN_CAMPAIGN if campaign is not None else "")
    keys = ", ".join(DECISION_KEYS[1:])
    rows = _decision_rows(conn.dialect, where, "l.owner")
    return list(conn.execute(_period(f"SELECT {keys}, count(*) FROM ({rows}) r GROUP BY {keys}",
                                     since, until, campaign)))
