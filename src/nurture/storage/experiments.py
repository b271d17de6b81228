"""The queries of A/B tests and holdout groups: an A/B step's sends and what came of them, the recorded winners, and
the enrollments of campaigns with a holdout. What the figures mean is :mod:`nurture.core.abtest`'s and
:mod:`nurture.core.holdout`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, exists, func, literal_column, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import BindParameter, ColumnClause

from nurture.core.abtest import StepSend
from nurture.core.facts import CLICK, OPEN
from nurture.storage import rollups
from nurture.storage.dialect import upsert_insert
from nurture.storage.report_queries import in_parts
from nurture.storage.tables import AB, D, E, EV, SC, VD

_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
CHUNK = 900


def _chunks(values: Sequence[int]) -> Iterable[list[int]]:
    ordered = sorted(set(values))
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


def ab_steps(conn: Connection, *, since: datetime, until: datetime,
             campaign: str | None = None) -> list[tuple[str, str]]:
    """(campaign, step) of every step (of ``campaign`` if given) that sent an email with a variant in [since, until):
    the whole UTC days from the emails' daily rollup, the part days at the ends from the emails."""
    def rows(start: datetime, end: datetime) -> list[tuple[str, str]]:
        query = (select(D.c.campaign_id, D.c.step_id).distinct()
                 .where(D.c.channel == "email", D.c.variant.is_not(None), D.c.created_at >= start, D.c.created_at < end))
        if campaign is not None:
            query = query.where(D.c.campaign_id == campaign)
        return [(row.campaign_id, row.step_id) for row in conn.execute(query)]

    return sorted(set(in_parts(since, until, rows, lambda first, last: rollups.variant_steps(conn, first, last, campaign))))


def step_sends(conn: Connection, campaign_id: str, step_id: str, *, since: datetime | None,
               until: datetime) -> list[StepSend]:
    """The step's sent emails with a variant, created in [since, until) (since None: from the start)."""
    query = select(D.c.id, D.c.lead_id, D.c.variant, D.c.sent_at).where(
        D.c.campaign_id == campaign_id, D.c.step_id == step_id, D.c.channel == "email", D.c.status == "sent",
        D.c.variant.is_not(None), D.c.sent_at.is_not(None), D.c.created_at < until,
    )
    if since is not None:
        query = query.where(D.c.created_at >= since)
    return [StepSend(row.lead_id, row.variant, row.id, row.sent_at) for row in conn.execute(query)]


def engagement_by_variant(conn: Connection, campaign_id: str, step_id: str, *, since: datetime | None,
                          until: datetime, as_of: datetime, types: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Variant -> (leads, engaged): the leads whose first sent email of the step created in [since, until) had that
    variant, and how many of them had one of ``types`` recorded before ``as_of`` on any of their emails of the step in
    that period (what :func:`nurture.core.abtest.count_goal` counts from :func:`step_sends` and
    :func:`engaged_deliveries`). Counted in the database: the leads with one email of the step from the index of
    ``ab_lead_step`` (:mod:`nurture.storage.ab_rollup`), the few with several from their emails."""
    first = _FIRST_TIMES.get(frozenset(types))
    if first is None:  # other event types: every email of the period
        return _engagement_of_sends(conn, campaign_id, step_id, since=since, until=until, as_of=as_of, types=types)
    column = AB.c[first]
    step = (AB.c.campaign_id == campaign_id, AB.c.step_id == step_id)
    rows = conn.execute(
        select(AB.c.variant, func.count(), func.sum(case((column < as_of, 1), else_=0)))
        .where(*step, AB.c.sends == ONE, AB.c.created_at < until,
               *([AB.c.created_at >= since] if since is not None else []))
        .group_by(AB.c.variant))
    found = {row[0]: (int(row[1]), int(row[2] or 0)) for row in rows}
    several = select(AB.c.lead_id).where(*step, AB.c.sends > ONE).scalar_subquery()
    for variant, (leads, engaged) in _engagement_of_sends(conn, campaign_id, step_id, since=since, until=until,
                                                          as_of=as_of, types=types, leads=several).items():
        before = found.get(variant, (0, 0))
        found[variant] = (before[0] + leads, before[1] + engaged)
    return found


ONE: ColumnClause[Any] = literal_column("1")
"""1 written out, as the conditions of ``ab_lead_step``'s partial indexes are (a bound value does not prove them)."""
_FIRST_TIMES = {frozenset((CLICK,)): "clicked_at", frozenset((OPEN, CLICK)): "opened_at"}
"""The ``ab_lead_step`` column of the first of these event types."""


def _engagement_of_sends(conn: Connection, campaign_id: str, step_id: str, *, since: datetime | None,
                         until: datetime, as_of: datetime, types: Sequence[str],
                         leads: Any = None) -> dict[str, tuple[int, int]]:
    """:func:`engagement_by_variant` counted from every email of the period (of ``leads``, a subquery, if given)."""
    first = func.row_number().over(partition_by=D.c.lead_id, order_by=(D.c.sent_at, D.c.id))
    sends = select(D.c.id, D.c.lead_id, D.c.variant, first.label("rank")).where(
        D.c.campaign_id == campaign_id, D.c.step_id == step_id, D.c.channel == "email", D.c.status == "sent",
        D.c.variant.is_not(None), D.c.sent_at.is_not(None), D.c.created_at < until,
        *([D.c.created_at >= since] if since is not None else []),
        *([D.c.lead_id.in_(leads)] if leads is not None else []),
    ).subquery()
    engaged = exists().where(EV.c.delivery_id == sends.c.id, EV.c.type.in_(list(types)), EV.c.occurred_at < as_of)
    per_lead = (select(func.max(case((sends.c.rank == 1, sends.c.variant))).label("variant"),
                       func.max(case((engaged, 1), else_=0)).label("hit"))
                .group_by(sends.c.lead_id).subquery())
    rows = conn.execute(select(per_lead.c.variant, func.count(), func.sum(per_lead.c.hit)).group_by(per_lead.c.variant))
    return {row[0]: (int(row[1]), int(row[2] or 0)) for row in rows}


def engaged_deliveries(conn: Connection, delivery_ids: Sequence[int], *, until: datetime) -> dict[int, set[str]]:
    """Delivery id -> the open and click event types recorded on it before ``until``."""
    found: dict[int, set[str]] = {}
    for chunk in _chunks(delivery_ids):
        rows = conn.execute(
            select(EV.c.delivery_id, EV.c.type).distinct()
            .where(EV.c.delivery_id.in_(_IDS), EV.c.type.in_((OPEN, CLICK)), EV.c.occurred_at < until),
            {"ids": chunk},
        )
        for row in rows:
            found.setdefault(row.delivery_id, set()).add(row.type)
    return found


def event_times(conn: Connection, lead_ids: Sequence[int], event_type: str, *, until: datetime) -> dict[int, list[datetime]]:
    """Lead id -> when it recorded ``event_type`` (before ``until``)."""
    found: dict[int, list[datetime]] = {}
    for chunk in _chunks(lead_ids):
        rows = conn.execute(
            select(EV.c.lead_id, EV.c.occurred_at)
            .where(EV.c.lead_id.in_(_IDS), EV.c.type == event_type, EV.c.occurred_at < until),
            {"ids": chunk},
        )
        for row in rows:
            found.setdefault(row.lead_id, []).append(row.occurred_at)
    return found


def sql_times(conn: Connection, lead_ids: Sequence[int], *, until: datetime) -> dict[int, list[datetime]]:
    """Lead id -> when it became an SQL (each move to the sql stage before ``until``)."""
    found: dict[int, list[datetime]] = {}
    for chunk in _chunks(lead_ids):
        rows = conn.execute(
            select(SC.c.lead_id, SC.c.at).where(SC.c.lead_id.in_(_IDS), SC.c.to_stage == "sql", SC.c.at < until),
            {"ids": chunk},
        )
        for row in rows:
            found.setdefault(row.lead_id, []).append(row.at)
    return found


def decisions(conn: Connection) -> list[Any]:
    """Every recorded winner (a handful of rows: one per A/B step with ``winner:`` that made its call)."""
    return list(conn.execute(select(VD).order_by(VD.c.campaign_id, VD.c.step_id)))


def record_decision(conn: Connection, *, campaign_id: str, step_id: str, winner: str, metric: str, confidence: float,
                    decided_at: datetime, figures: dict[str, Any]) -> Any:
    """Record the step's winner unless one is recorded already (the unique key decides between two deciders);
    return the row that is recorded."""
    conn.execute(
        upsert_insert(VD, conn.dialect).values(
            campaign_id=campaign_id, step_id=step_id, winner=winner, metric=metric, confidence=confidence,
            decided_at=decided_at, figures=figures,
        ).on_conflict_do_nothing(index_elements=["campaign_id", "step_id"])
    )
    return conn.execute(select(VD).where(VD.c.campaign_id == campaign_id, VD.c.step_id == step_id)).one()


def holdout_campaigns(conn: Connection, *, since: datetime, until: datetime, campaign: str | None = None) -> list[str]:
    """The campaigns (``campaign`` alone if given) that held out a lead entering in [since, until)."""
    query = select(E.c.campaign_id).distinct().where(  # by the partial index of held-out enrollments: as it writes
        E.c.held_out == true(), E.c.enrolled_at >= since, E.c.enrolled_at < until)  # its condition
    if campaign is not None:
        query = query.where(E.c.campaign_id == campaign)
    return sorted(row.campaign_id for row in conn.execute(query))


def campaign_entries(conn: Connection, campaign_id: str, *, since: datetime, until: datetime) -> list[Any]:
    """The campaign's enrollments that entered in [since, until) (``lead_id``, ``held_out``, ``enrolled_at``), oldest
    first."""
    return list(conn.execute(
        select(E.c.lead_id, E.c.held_out, E.c.enrolled_at)
        .where(E.c.campaign_id == campaign_id, E.c.enrolled_at >= since, E.c.enrolled_at < until)
        .order_by(E.c.enrolled_at, E.c.id)
    ))
