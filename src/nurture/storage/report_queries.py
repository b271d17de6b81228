"""The queries of ``nurture report`` and the dashboard: counts per UTC day and dimension, never rows per lead, so a
report over a million leads reads a few thousand rows. What the counts mean is :mod:`nurture.core.metrics`'.

The whole UTC days of a period are read from the daily rollups (:mod:`nurture.storage.rollups` and
:mod:`nurture.storage.sales_rollups`, kept by triggers); the part days at its ends, and a period narrowed to the
leads of one nurture campaign, are counted from the rows, through the ``ix_*_at`` indexes of
:mod:`nurture.storage.tables`. The SQLs waiting now are the leads at stage ``sql`` (one row each, by the stage index).

Each query takes the period ``[since, until)`` and, optionally, a nurture campaign: lead counts are then of leads
ever enrolled in it, campaign and step counts of it alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import and_, case, exists, func, select, true
from sqlalchemy.engine import Connection

from nurture.core.metrics.facts import DeliveryCount, EnrollmentCount, LeadCount, MoveCount, OutcomeCount
from nurture.storage import rollups, sales_rollups
from nurture.storage.codec import aware_utc, day_from_text
from nurture.storage.dialect import utc_day
from nurture.storage.tables import D, E, EV, L, SC, SO

COUNTED_STAGES = ("mql", "sql", "opportunity", "customer", "recycled", "disqualified")


def _in_campaign(lead_id: Any, campaign: str | None) -> Any:
    """True for every lead, or for leads ever enrolled in ``campaign``."""
    if campaign is None:
        return true()
    return exists().where(E.c.lead_id == lead_id, E.c.campaign_id == campaign)


def _rows_lead_counts(conn: Connection, since: datetime, until: datetime, campaign: str | None = None) -> list[LeadCount]:
    """Leads created per UTC day, source, medium and acquisition campaign."""
    day = utc_day(L.c.created_at, conn.dialect)
    query = (select(day, L.c.source, L.c.medium, L.c.source_campaign, func.count())
             .where(L.c.created_at >= since, L.c.created_at < until, _in_campaign(L.c.id, campaign))
             .group_by(day, L.c.source, L.c.medium, L.c.source_campaign))
    return [LeadCount(day_from_text(r[0]), r[1], r[2], r[3], r[4]) for r in conn.execute(query)]


def _rows_move_counts(conn: Connection, since: datetime, until: datetime, campaign: str | None = None) -> list[MoveCount]:
    """Stage changes per UTC day, stages, actor, and the lead's source and acquisition campaign."""
    day = utc_day(SC.c.at, conn.dialect)
    query = (select(day, SC.c.from_stage, SC.c.to_stage, SC.c.actor, L.c.source, L.c.source_campaign, func.count())
             .select_from(SC.join(L, L.c.id == SC.c.lead_id))
             .where(SC.c.at >= since, SC.c.at < until, SC.c.to_stage.in_(COUNTED_STAGES),
                    _in_campaign(SC.c.lead_id, campaign))
             .group_by(day, SC.c.from_stage, SC.c.to_stage, SC.c.actor, L.c.source, L.c.source_campaign))
    return [MoveCount(day_from_text(r[0]), r[1], r[2], r[3], r[4], r[5], r[6]) for r in conn.execute(query)]


def _rows_mql_days(conn: Connection, since: datetime, until: datetime, campaign: str | None = None) -> list[tuple[Any, int]]:
    """Moves to ``mql`` per UTC day."""
    day = utc_day(SC.c.at, conn.dialect)
    query = (select(day, func.count())
             .where(SC.c.at >= since, SC.c.at < until, SC.c.to_stage == "mql", _in_campaign(SC.c.lead_id, campaign))
             .group_by(day))
    return [(day_from_text(r[0]), r[1]) for r in conn.execute(query)]


def waiting_sqls(conn: Connection, campaign: str | None = None) -> list[Any]:
    """Every lead at stage ``sql`` now (of ``campaign``'s, if given), longest waiting first: ``lead_id``, ``owner``,
    ``promoted_at`` (when it became an SQL)."""
    query = (select(L.c.id.label("lead_id"), L.c.owner, L.c.stage_changed_at.label("promoted_at"))
             .where(L.c.stage == "sql", _in_campaign(L.c.id, campaign))
             .order_by(L.c.stage_changed_at, L.c.id))
    return list(conn.execute(query))


def promotion_reasons(conn: Connection, lead_ids: Sequence[int]) -> dict[int, str]:
    """Each of these leads' latest move to ``sql``: its reason."""
    latest = (select(func.max(SC.c.id)).where(SC.c.lead_id.in_(sorted(set(lead_ids))), SC.c.to_stage == "sql")
              .group_by(SC.c.lead_id).scalar_subquery())
    return {r.lead_id: r.reason for r in conn.execute(select(SC.c.lead_id, SC.c.reason).where(SC.c.id.in_(latest)))}


def _campaign_is(column: Any, campaign: str | None) -> Any:
    return true() if campaign is None else column == campaign


def _rows_enrollment_counts(conn: Connection, since: datetime, until: datetime,
                      campaign: str | None = None) -> list[EnrollmentCount]:
    """Per campaign: enrollments started in the period, and ended in the period by status and reason."""
    started = conn.execute(
        select(E.c.campaign_id, func.count()).where(E.c.enrolled_at >= since, E.c.enrolled_at < until,
                                                    _campaign_is(E.c.campaign_id, campaign)).group_by(E.c.campaign_id))
    ended = conn.execute(
        select(E.c.campaign_id, E.c.status, E.c.end_reason, func.count())
        .where(E.c.ended_at >= since, E.c.ended_at < until, _campaign_is(E.c.campaign_id, campaign))
        .group_by(E.c.campaign_id, E.c.status, E.c.end_reason))
    return ([EnrollmentCount(r[0], "started", None, None, r[1]) for r in started]
            + [EnrollmentCount(r[0], "ended", r[1], r[2], r[3]) for r in ended])


def _rows_delivery_counts(conn: Connection, since: datetime, until: datetime,
                    campaign: str | None = None) -> list[DeliveryCount]:
    """Emails created in the period per campaign, step, variant and status, with how many were opened (or clicked:
    images may be blocked) and clicked, at any time."""
    def engaged(*types: str) -> Any:
        found = exists().where(EV.c.delivery_id == D.c.id, EV.c.type.in_(types))
        return func.sum(case((and_(D.c.status == "sent", found), 1), else_=0))

    query = (select(D.c.campaign_id, D.c.step_id, D.c.variant, D.c.status, func.count(),
                    engaged("email_open", "email_click"), engaged("email_click"))
             .where(D.c.created_at >= since, D.c.created_at < until, D.c.channel == "email",
                    _campaign_is(D.c.campaign_id, campaign))
             .group_by(D.c.campaign_id, D.c.step_id, D.c.variant, D.c.status))
    return [DeliveryCount(r[0], r[1], r[2], r[3], r[4], int(r[5] or 0), int(r[6] or 0)) for r in conn.execute(query)]


def _rows_outcome_counts(conn: Connection, since: datetime, until: datetime,
                   campaign: str | None = None) -> list[OutcomeCount]:
    """Branch, wait-for and skip outcomes in the period per campaign, step, outcome and detail."""
    query = (select(SO.c.campaign_id, SO.c.step_id, SO.c.outcome, SO.c.detail, func.count())
             .where(SO.c.at >= since, SO.c.at < until, _campaign_is(SO.c.campaign_id, campaign))
             .group_by(SO.c.campaign_id, SO.c.step_id, SO.c.outcome, SO.c.detail))
    return [OutcomeCount(r[0], r[1], r[2], r[3], r[4]) for r in conn.execute(query)]


# -- the period split into whole UTC days (read from the rollups) and the part days at its ends (read from rows) -----

def _split(since: datetime, until: datetime) -> tuple[tuple[date, date] | None, list[tuple[datetime, datetime]]]:
    """The whole UTC days ``[first, last)`` inside ``[since, until)`` (None: not one), and the rest of the period."""
    since, until = aware_utc(since).astimezone(timezone.utc), aware_utc(until).astimezone(timezone.utc)
    first = since.date() if since.time() == time(0) else since.date() + timedelta(days=1)
    last = until.date()
    if first >= last:
        return None, [(since, until)]
    start, end = datetime.combine(first, time(0), timezone.utc), datetime.combine(last, time(0), timezone.utc)
    return (first, last), [(s, u) for s, u in ((since, start), (end, until)) if s < u]


def in_parts(since: datetime, until: datetime, rows: Callable[[datetime, datetime], list[Any]],
             rolled: Callable[[date, date], list[Any]]) -> list[Any]:
    """What ``rolled`` reads from a rollup for the period's whole UTC days, and ``rows`` from the rows for the rest."""
    whole, rest = _split(since, until)
    found = rolled(*whole) if whole else []
    for start, end in rest:
        found += rows(start, end)
    return found


def _merged(counts: list[Any], make: Callable[..., Any]) -> list[Any]:
    """Counts of the same key from several parts of the period added up (the key: every field but the counts)."""
    fields = list(counts[0].__dataclass_fields__) if counts else []
    number = [f for f in fields if f in ("count", "opened", "clicked")]
    totals: dict[tuple[Any, ...], list[int]] = {}
    for count in counts:
        key = tuple(getattr(count, f) for f in fields if f not in number)
        sums = totals.setdefault(key, [0] * len(number))
        for index, name in enumerate(number):
            sums[index] += getattr(count, name)
    return [make(*key, *sums) for key, sums in totals.items()]


def lead_counts(conn: Connection, since: datetime, until: datetime, campaign: str | None = None) -> list[LeadCount]:
    """Leads created per UTC day, source, medium and acquisition campaign."""
    if campaign is not None:
        return _rows_lead_counts(conn, since, until, campaign)
    return in_parts(since, until, lambda s, u: _rows_lead_counts(conn, s, u), lambda f, la: [
        LeadCount(r.day, rollups.none(r.source), rollups.none(r.medium), rollups.none(r.source_campaign), r.n)
        for r in rollups.leads(conn, f, la)])


def move_counts(conn: Connection, since: datetime, until: datetime, campaign: str | None = None) -> list[MoveCount]:
    """Stage changes per UTC day, stages, actor, and the lead's source and acquisition campaign."""
    if campaign is not None:
        return _rows_move_counts(conn, since, until, campaign)
    return in_parts(since, until, lambda s, u: _rows_move_counts(conn, s, u), lambda f, la: [
        MoveCount(r.day, rollups.none(r.from_stage), r.to_stage, r.actor, rollups.none(r.source),
                  rollups.none(r.source_campaign), r.n)
        for r in rollups.moves(conn, f, la, COUNTED_STAGES)])


def mql_days(conn: Connection, since: datetime, until: datetime, campaign: str | None = None) -> list[tuple[Any, int]]:
    """Moves to ``mql`` per UTC day."""
    if campaign is not None:
        return _rows_mql_days(conn, since, until, campaign)
    found: dict[Any, int] = {}
    for day, count in in_parts(since, until, lambda s, u: _rows_mql_days(conn, s, u),
                             lambda f, la: [(r[0], int(r[1])) for r in rollups.move_days(conn, f, la, "mql")]):
        found[day] = found.get(day, 0) + count
    return list(found.items())


def enrollment_counts(conn: Connection, since: datetime, until: datetime,
                      campaign: str | None = None) -> list[EnrollmentCount]:
    """Per campaign: enrollments started in the period, active now, and ended in the period by status and reason."""
    def rolled(first: date, last: date) -> list[EnrollmentCount]:
        return [EnrollmentCount(r.campaign_id, r.kind, None if r.kind == "started" else r.status,
                                rollups.none(r.end_reason), int(r[4]))
                for r in rollups.enrollments(conn, first, last, campaign)]

    def rows(start: datetime, end: datetime) -> list[EnrollmentCount]:
        return _rows_enrollment_counts(conn, start, end, campaign)

    active = conn.execute(select(E.c.campaign_id, func.count())
                          .where(E.c.status == "active", _campaign_is(E.c.campaign_id, campaign)).group_by(E.c.campaign_id))
    return (_merged(in_parts(since, until, rows, rolled), EnrollmentCount)
            + [EnrollmentCount(r[0], "active", "active", None, r[1]) for r in active])


def delivery_counts(conn: Connection, since: datetime, until: datetime,
                    campaign: str | None = None) -> list[DeliveryCount]:
    """Emails created in the period per campaign, step, variant and status, with how many were opened (or clicked:
    images may be blocked) and clicked, at any time."""
    return _merged(in_parts(since, until, lambda s, u: _rows_delivery_counts(conn, s, u, campaign), lambda f, la: [
        DeliveryCount(r[0], r[1], rollups.none(r[2]), r[3], int(r[4]), int(r[5]), int(r[6]))
        for r in rollups.deliveries(conn, f, la, campaign)]), DeliveryCount)


def sql_waits(conn: Connection, since: datetime, until: datetime, campaign: str | None = None) -> list[tuple[int, int]]:
    """``(wait_ms, n)``: the moves to ``sql`` in the period per wait since the lead's first MQL (-1: none)."""
    if campaign is not None:
        return [(r[0], r[1]) for r in sales_rollups.sql_waits_of(conn, since, until, campaign)]
    found: dict[int, int] = {}
    for wait, n in in_parts(since, until, lambda s, u: list(sales_rollups.sql_waits_of(conn, s, u)),
                          lambda f, la: list(sales_rollups.sql_waits(conn, f, la))):
        found[int(wait)] = found.get(int(wait), 0) + int(n)
    return list(found.items())


def decision_counts(conn: Connection, since: datetime, until: datetime,
                    campaign: str | None = None) -> list[tuple[str, str, str, str, str, int]]:
    """``(to_stage, reason, owner, rule, campaigns, n)``: sales' decisions in the period; the reason without its note,
    '' for no owner, the text before the promotion reason's first ``: ``, the comma-joined campaigns of a rejection."""
    if campaign is not None:
        rows = sales_rollups.decision_counts_of(conn, since, until, campaign)
    else:
        rows = in_parts(since, until, lambda s, u: list(sales_rollups.decision_counts_of(conn, s, u)),
                      lambda f, la: list(sales_rollups.decision_counts(conn, f, la)))
    found: dict[tuple[str, ...], int] = {}
    for row in rows:
        key = tuple(row[:5])
        found[key] = found.get(key, 0) + int(row[5])
    return [(*key, n) for key, n in found.items()]  # type: ignore[misc]


def outcome_counts(conn: Connection, since: datetime, until: datetime,
                   campaign: str | None = None) -> list[OutcomeCount]:
    """Branch, wait-for and skip outcomes in the period per campaign, step, outcome and detail."""
    return _merged(in_parts(since, until, lambda s, u: _rows_outcome_counts(conn, s, u, campaign), lambda f, la: [
        OutcomeCount(r[0], r[1], r[2], r[3], int(r[4])) for r in rollups.outcomes(conn, f, la, campaign)]),
        OutcomeCount)
