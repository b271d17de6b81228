"""The report's daily rollups (``rollup_*``): read per day range, and rebuilt from the rows.

The database's triggers (migrations ``0006_rollup``, ``0007_sales_rollup`` and ``0010_abrollup``, whose SQL is
:mod:`nurture.storage.sales_rollups`' and :mod:`nurture.storage.ab_rollup`'s) keep them as rows are written;
:func:`rebuild` recomputes them from the rows (``nurture db rebuild-rollups``), which gives the same counts.
Dimensions that are NULL in the rows are '' in the rollups (a key cannot be NULL): :func:`none` turns them back.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Select, Table, and_, case, delete, exists, func, insert, literal, or_, select, true
from sqlalchemy.engine import Connection, Dialect

from nurture.storage import ab_rollup, sales_rollups
from nurture.storage.dialect import upsert_insert, utc_date
from nurture.storage.tables import AB, D, E, EV, L, RD, RE, RL, RM, RO, RS, RX, SC, SO

ROLLUPS = (RL, RM, RD, RE, RO, RS, RX)
_ENGAGED = ("email_open", "email_click")


def none(value: str) -> str | None:
    """A rollup's dimension as the rows hold it: '' was NULL."""
    return value or None


def _blank(column: Any) -> Any:
    return func.coalesce(column, "")


def leads(conn: Connection, first: date, last: date) -> list[Any]:
    """``day, source, medium, source_campaign, n`` of the days ``[first, last)``."""
    return list(conn.execute(select(RL.c.day, RL.c.source, RL.c.medium, RL.c.source_campaign, RL.c.n)
                             .where(RL.c.day >= first, RL.c.day < last, RL.c.n != 0)))


def moves(conn: Connection, first: date, last: date, to_stages: tuple[str, ...]) -> list[Any]:
    """``day, from_stage, to_stage, actor, source, source_campaign, n`` of the days ``[first, last)``."""
    return list(conn.execute(select(RM.c.day, RM.c.from_stage, RM.c.to_stage, RM.c.actor, RM.c.source,
                                    RM.c.source_campaign, RM.c.n)
                             .where(RM.c.day >= first, RM.c.day < last, RM.c.to_stage.in_(to_stages), RM.c.n != 0)))


def move_days(conn: Connection, first: date, last: date, to_stage: str) -> list[Any]:
    """``day, n``: the moves to ``to_stage`` per day of ``[first, last)``."""
    return list(conn.execute(select(RM.c.day, func.sum(RM.c.n))
                             .where(RM.c.day >= first, RM.c.day < last, RM.c.to_stage == to_stage)
                             .group_by(RM.c.day).having(func.sum(RM.c.n) != 0)))


def _campaign(column: Any, campaign: str | None) -> Any:
    return literal(True) if campaign is None else column == campaign


def variant_steps(conn: Connection, first: date, last: date, campaign: str | None) -> list[tuple[str, str]]:
    """``(campaign_id, step_id)`` of the steps that created an email with a variant on the days ``[first, last)``."""
    keys = (RD.c.campaign_id, RD.c.step_id)
    return [(row[0], row[1]) for row in conn.execute(
        select(*keys).where(RD.c.day >= first, RD.c.day < last, RD.c.variant != "", _campaign(RD.c.campaign_id, campaign))
        .group_by(*keys).having(func.sum(RD.c.n) != 0))]


def deliveries(conn: Connection, first: date, last: date, campaign: str | None) -> list[Any]:
    """``campaign_id, step_id, variant, status, n, opened, clicked`` summed over the days ``[first, last)``."""
    keys = (RD.c.campaign_id, RD.c.step_id, RD.c.variant, RD.c.status)
    return list(conn.execute(select(*keys, func.sum(RD.c.n), func.sum(RD.c.opened), func.sum(RD.c.clicked))
                             .where(RD.c.day >= first, RD.c.day < last, _campaign(RD.c.campaign_id, campaign))
                             .group_by(*keys).having(func.sum(RD.c.n) != 0)))


def enrollments(conn: Connection, first: date, last: date, campaign: str | None) -> list[Any]:
    """``campaign_id, kind, status, end_reason, n`` summed over the days ``[first, last)``."""
    keys = (RE.c.campaign_id, RE.c.kind, RE.c.status, RE.c.end_reason)
    return list(conn.execute(select(*keys, func.sum(RE.c.n))
                             .where(RE.c.day >= first, RE.c.day < last, _campaign(RE.c.campaign_id, campaign))
                             .group_by(*keys).having(func.sum(RE.c.n) != 0)))


def outcomes(conn: Connection, first: date, last: date, campaign: str | None) -> list[Any]:
    """``campaign_id, step_id, outcome, detail, n`` summed over the days ``[first, last)``."""
    keys = (RO.c.campaign_id, RO.c.step_id, RO.c.outcome, RO.c.detail)
    return list(conn.execute(select(*keys, func.sum(RO.c.n))
                             .where(RO.c.day >= first, RO.c.day < last, _campaign(RO.c.campaign_id, campaign))
                             .group_by(*keys).having(func.sum(RO.c.n) != 0)))


_LEAD_COLUMNS = ["day", "source", "medium", "source_campaign", "n"]
_MOVE_COLUMNS = ["day", "from_stage", "to_stage", "actor", "source", "source_campaign", "n"]
_ENROLLMENT_COLUMNS = ["day", "campaign_id", "kind", "status", "end_reason", "n"]


def _inserted_counts(dialect: Dialect, after: dict[str, int] | None = None) -> dict[str, list[tuple[Table, list[str], Select[Any]]]]:
    """Table name -> (rollup, its columns, the SELECT that counts the table's rows into it): every row, or with
    ``after`` only the rows whose id is past ``after[table name]`` (the tables that count their inserted rows: leads,
    stage changes, enrollments)."""
    def past(table: Table) -> Any:
        return table.c.id > after[table.name] if after is not None else true()

    lead_keys = (utc_date(L.c.created_at, dialect), _blank(L.c.source), _blank(L.c.medium),
                 _blank(L.c.source_campaign))
    move_keys = (utc_date(SC.c.at, dialect), _blank(SC.c.from_stage), SC.c.to_stage, SC.c.actor, _blank(L.c.source),
                 _blank(L.c.source_campaign))
    started_day = utc_date(E.c.enrolled_at, dialect)
    ended_keys = (utc_date(E.c.ended_at, dialect), E.c.campaign_id, literal("ended"), E.c.status,
                  _blank(E.c.end_reason))
    return {
        L.name: [(RL, _LEAD_COLUMNS, select(*lead_keys, func.count()).where(past(L)).group_by(*lead_keys))],
        SC.name: [(RM, _MOVE_COLUMNS, select(*move_keys, func.count()).select_from(SC.join(L, L.c.id == SC.c.lead_id))
                   .where(past(SC)).group_by(*move_keys))],
        E.name: [(RE, _ENROLLMENT_COLUMNS, select(started_day, E.c.campaign_id, literal("started"), literal(""),
                                                  literal(""), func.count()).where(past(E))
                  .group_by(started_day, E.c.campaign_id)),
                 (RE, _ENROLLMENT_COLUMNS, select(*ended_keys, func.count()).where(E.c.ended_at.is_not(None), past(E))
                  .group_by(*ended_keys[:2], *ended_keys[3:]))],
    }


def add_inserted(conn: Connection, after: dict[str, int]) -> None:
    """Add to the rollups the rows of the tables named in ``after`` (leads, stage changes, enrollments) whose id is
    past the one given, as the insert triggers would have added them one by one (:mod:`nurture.storage.batch_rollups`)."""
    for name, counts in _inserted_counts(conn.dialect, after).items():
        if name not in after:
            continue
        for rollup, columns, query in counts:
            statement = upsert_insert(rollup, conn.dialect).from_select(columns, query)
            conn.execute(statement.on_conflict_do_update(
                index_elements=[c.name for c in rollup.primary_key], set_={"n": rollup.c.n + statement.excluded.n}))


def _rebuilds(conn: Connection) -> list[Any]:
    """The INSERT ... SELECT of each rollup from the rows."""
    dialect = conn.dialect

    def engaged(*types: str) -> Any:
        found = exists().where(EV.c.delivery_id == D.c.id, EV.c.type.in_(types))
        return func.sum(case((and_(D.c.status == "sent", found), 1), else_=0))

    email_day = utc_date(D.c.created_at, dialect)
    email_keys = (email_day, D.c.campaign_id, D.c.step_id, _blank(D.c.variant), D.c.status)
    outcome_day = utc_date(SO.c.at, dialect)
    outcome_keys = (outcome_day, SO.c.campaign_id, SO.c.step_id, SO.c.outcome, SO.c.detail)
    inserted = _inserted_counts(dialect)
    return [
        *(insert(rollup).from_select(columns, query) for rollup, columns, query in (*inserted[L.name], *inserted[SC.name])),
        insert(RD).from_select(["day", "campaign_id", "step_id", "variant", "status", "n", "opened", "clicked"],
                               select(*email_keys, func.count(), engaged(*_ENGAGED), engaged("email_click"))
                               .where(D.c.channel == "email").group_by(*email_keys)),
        *(insert(rollup).from_select(columns, query) for rollup, columns, query in inserted[E.name]),
        insert(RO).from_select(["day", "campaign_id", "step_id", "outcome", "detail", "n"],
                               select(*outcome_keys, func.count()).group_by(*outcome_keys)),
    ]


def rebuild(conn: Connection, *, lead_steps: bool = True) -> dict[str, int]:
    """Recompute every rollup from the rows (inside the caller's transaction), and ``ab_lead_step`` unless
    ``lead_steps`` is false (a database before ``0010_abrollup``); the rows each holds after."""
    for table in ROLLUPS:
        conn.execute(delete(table))
    for statement in _rebuilds(conn):
        conn.execute(statement)
    for sql in sales_rollups.rebuilds(conn.dialect) + (ab_rollup.rebuilds() if lead_steps else []):
        conn.exec_driver_sql(sql)
    tables = (*ROLLUPS, AB) if lead_steps else ROLLUPS
    return {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one() for table in tables}


def snapshot(conn: Connection, *, lead_steps: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup's rows whose counts are not all zero, and ``ab_lead_step``'s rows unless ``lead_steps`` is false,
    sorted: what two ways of counting must agree on."""
    found = {}
    for table in ROLLUPS:
        counts = [c for c in table.c if c.name in ("n", "opened", "clicked")]
        rows = conn.execute(select(table).where(or_(*(c != 0 for c in counts))))
        found[table.name] = sorted(tuple(row) for row in rows)
    if lead_steps:
        found[AB.name] = sorted(tuple(row) for row in conn.execute(select(AB)))
    return found
