"""Promotion to SQL inside the intake transaction, the handoff it queues, and the reads of the handoff jobs.

:func:`after_rescore` runs in :mod:`nurture.application.record_events` after each lead is rescored (an event recorded, a lead
saved), inside that batch's transaction, with the lead already locked. It asks :func:`nurture.core.promotion.decide`
and writes what it says:

- ``promote``: stage ``sql`` with its history row (actor ``rule``, reason ``<rule>: <why>``; that row's id is the
  *promotion id*), every active enrollment exited (``stage:sql``), an owner routed (round-robin counters per team in
  the ``meta`` table, advanced in the same transaction) and stored in ``lead.owner`` (the owner's email), and two
  outbox rows deduplicated by the promotion: the ``lead.promoted`` sales webhook and the owner's email.
- ``disqualify``: stage ``disqualified``, every active enrollment exited; never promoted afterwards.
- a recycled lead still waiting out its ``recycle_after`` (sales rejected it "not now") is promoted by a hand-raise
  only, not by score-and-fit rules.
- a hand-raise from a lead that is an SQL already notifies nobody again: the event is recorded like any other, and
  while the ``lead.promoted`` notification (or the owner's email) still waits in the outbox its brief is rebuilt, so
  it arrives with the second request in it. Briefs built later (digest, reminder, the feedback page) read it from
  the events anyway.

Nothing is sent here: the worker delivers the outbox after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from nurture.core.facts import CLICK, OPEN, Engagement, LeadView
from nurture.core.promotion import DISQUALIFY, PROMOTE, Decision, decide
from nurture.core.routing import Route, owner as find_owner, route
from nurture.core.scoring import ScoreBreakdown, score
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import Owner, SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff
from nurture.handoff import notify
from nurture.handoff.brief import (
    TIMELINE_LIMIT,
    BriefFacts,
    NurtureRun,
    SentStep,
    TimelineEvent,
    build_brief,
    is_hand_raise,
    promotion_reason,
    split_reason,
)
from nurture.rendering.sales_links import SalesLinks
from nurture.storage.dialect import upsert_insert
from nurture.core.enrollment import recycle_pending
from nurture.storage.enrollments import exit_enrollments
from nurture.storage.outbox import enqueue
from nurture.storage.scores import scored_events
from nurture.storage.tables import D, E, EV, L, M, O, SC

log = logging.getLogger(__name__)


SQL, DISQUALIFIED = "sql", "disqualified"
SALES_WEBHOOK, OWNER_EMAIL = "sales_webhook", "owner_email"
ROUND_ROBIN_KEY = "routing.round_robin.{team}"
"""The ``meta`` row holding a team's next round-robin position."""

_LEAD_COLUMNS = ("id", "email", "first_name", "last_name", "company", "title", "industry", "company_size", "country",
                 "timezone", "owner", "stage", "score", "fields")


# -- outbox dedup keys: one notification per promotion (per owner and local day for the digest) ---------------------


def promoted_key(promotion_id: int) -> str:
    """The ``lead.promoted`` webhook of a promotion."""
    return f"lead.promoted:{promotion_id}"


def promoted_email_key(promotion_id: int) -> str:
    """The owner's handoff email of a promotion."""
    return f"lead.promoted:{promotion_id}:email"


def sla_key(promotion_id: int) -> str:
    """The ``lead.sla_overdue`` webhook of a promotion."""
    return f"lead.sla_overdue:{promotion_id}"


def sla_email_key(promotion_id: int) -> str:
    """The owner's SLA reminder of a promotion."""
    return f"lead.sla_overdue:{promotion_id}:email"


def digest_key(owner_id: str, day: Any) -> str:
    """An owner's digest of one local day."""
    return f"owner.digest:{owner_id}:{day.isoformat()}"


# -- the hook in the intake batch ------------------------------------------------------------------------------------


class PromotingLead(Protocol):
    """A lead as the intake batch tracks it (``nurture.application.record_events._LeadState``)."""

    row: Any
    stage: str
    score: float

    @property
    def id(self) -> int: ...

    def view(self) -> LeadView: ...


class PromotingBatch(Protocol):
    """What the hook uses of the intake batch (``nurture.application.record_events._Batch``)."""

    conn: Connection
    catalog: Catalog
    now: datetime
    sales: SalesRules | None
    handoff: Handoff | None

    def move(self, lead: Any, stage: str, reason: str, *, actor: str) -> int: ...


def after_rescore(batch: PromotingBatch, lead: PromotingLead, breakdown: ScoreBreakdown,
                  event: Engagement | None) -> bool:
    """Promote, disqualify, or add a hand-raise to a waiting notification; True when the lead's stage changed.

    ``event`` is the event just recorded (None after a lead was saved: only score-and-fit rules and
    disqualification can apply then).
    """
    sales = batch.sales
    if sales is None:
        return False
    view = lead.view()
    decision = decide(sales, view, breakdown, event)
    if decision is None:
        if lead.stage == SQL and event is not None and is_hand_raise(sales, view, event):
            refresh_pending(batch.conn, lead.id, sales=sales, breakdown=breakdown, links=_links(batch),
                            campaign_names=_names(batch.catalog), stage=lead.stage)
        return False
    if decision.kind == DISQUALIFY:
        batch.move(lead, DISQUALIFIED, promotion_reason(decision.rule, decision.reason), actor="rule")
        exit_enrollments(batch.conn, lead.id, f"stage:{DISQUALIFIED}", batch.now)
        log.info("lead %d disqualified by %s", lead.id, decision.rule)
        return True
    if decision.kind == PROMOTE:
        if not decision.rule.startswith("intent:") and recycling(lead.stage, lead.row.fields, batch.now):
            return False  # a rejected lead waits out its recycle_after; only asking for sales brings it back sooner
        _promote(batch, lead, decision, breakdown)
        return True
    return False


def recycling(stage: str, fields: Mapping[str, Any] | None, now: datetime) -> bool:
    """Whether a rejected lead still waits out its ``recycle_after``: score-and-fit rules do not promote it then."""
    return recycle_pending(stage, fields, now)


def _links(batch: PromotingBatch) -> SalesLinks | None:
    return batch.handoff.links if batch.handoff is not None else None


def _names(catalog: Catalog) -> dict[str, str]:
    return {campaign.id: campaign.name for campaign in catalog.campaigns.values()}


def _promote(batch: PromotingBatch, lead: PromotingLead, decision: Decision, breakdown: ScoreBreakdown) -> None:
    sales = batch.sales
    assert sales is not None
    conn, now = batch.conn, batch.now
    promotion_id = batch.move(lead, SQL, promotion_reason(decision.rule, decision.reason), actor="rule")
    exit_enrollments(conn, lead.id, f"stage:{SQL}", now)  # every campaign, not only those listing sql in their exits
    owner, assigned = assign_owner(conn, sales, lead.view())
    if owner is not None:
        conn.execute(update(L).where(L.c.id == lead.id).values(owner=owner.email))
    brief = brief_for(conn, sales=sales, lead_id=lead.id, promotion_id=promotion_id, breakdown=breakdown,
                      links=_links(batch), campaign_names=_names(batch.catalog), stage=lead.stage,
                      routing=assigned.rule if assigned is not None else None)
    handoff = batch.handoff or Handoff()
    if handoff.webhook:
        enqueue(conn, kind=SALES_WEBHOOK, dedup_key=promoted_key(promotion_id), payload=notify.promoted_webhook(brief),
                now=now)
    email = notify.promoted_email(brief)
    if email is not None:
        enqueue(conn, kind=OWNER_EMAIL, dedup_key=promoted_email_key(promotion_id), payload=email, now=now)
    log.info("lead %d promoted to SQL by %s (promotion %d), owner %s", lead.id, decision.rule, promotion_id,
             owner.id if owner is not None else "-")


# -- routing ---------------------------------------------------------------------------------------------------------


def next_round_robin(conn: Connection, team: str) -> int:
    """The team's round-robin position for this assignment, advanced for the next one (in the caller's transaction).

    The row is locked until the caller commits, so concurrent promotions take consecutive positions.
    """
    key = ROUND_ROBIN_KEY.format(team=team)
    conn.execute(upsert_insert(M, conn.dialect).values(key=key, value="0").on_conflict_do_nothing(
        index_elements=["key"]))
    current = conn.execute(select(M.c.value).where(M.c.key == key).with_for_update()).scalar_one()
    position = int(current) if str(current).isdigit() else 0
    conn.execute(update(M).where(M.c.key == key).values(value=str(position + 1)))
    return position


def assign_owner(conn: Connection, sales: SalesRules, lead: LeadView) -> tuple[Owner | None, Route | None]:
    """Route ``lead`` (keeping a known existing owner, then the rules); a team's counter advances only when the
    lead is drawn from that team. (None, None) when the sales file routes nobody."""
    first = route(sales, lead, round_robin_position=0)
    if first is None:
        return None, None
    chosen = first
    if first.team is not None:
        chosen = route(sales, lead, round_robin_position=next_round_robin(conn, first.team)) or first
    return find_owner(sales, chosen.owner), chosen


# -- the brief's facts -----------------------------------------------------------------------------------------------


def _lead_mapping(row: Any) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in _LEAD_COLUMNS}
    values["fields"] = dict(values["fields"] or {})
    return values


def _timeline_event(row: Any) -> TimelineEvent:
    return TimelineEvent(
        id=row.id, type=row.type, at=row.occurred_at, recorded_at=row.recorded_at, campaign_id=row.campaign_id,
        step_key=row.step_key, properties=dict(row.properties or {}), points=float(row.points or 0),
        subject=row.subject,
    )


_EVENT_COLUMNS = (EV.c.id, EV.c.type, EV.c.occurred_at, EV.c.recorded_at, EV.c.campaign_id, EV.c.step_key,
                  EV.c.properties, EV.c.points, D.c.subject)


def load_brief_facts(conn: Connection, lead_id: int, promotion_id: int) -> BriefFacts | None:
    """What the brief of one promotion is built from, read in the caller's transaction; None if either is unknown."""
    lead = conn.execute(select(L).where(L.c.id == lead_id)).first()
    promotion = conn.execute(select(SC).where(SC.c.id == promotion_id, SC.c.lead_id == lead_id)).first()
    if lead is None or promotion is None:
        return None
    events_query = select(*_EVENT_COLUMNS).select_from(EV.outerjoin(D, D.c.id == EV.c.delivery_id)).where(
        EV.c.lead_id == lead_id)
    events = [_timeline_event(row) for row in conn.execute(
        events_query.order_by(EV.c.occurred_at.desc(), EV.c.id.desc()).limit(TIMELINE_LIMIT))]
    rule, _reason = split_reason(promotion.reason)
    trigger = None
    if rule is not None and rule.startswith("intent:"):
        row = conn.execute(events_query.where(
            EV.c.type == rule.split(":", 1)[1], EV.c.recorded_at <= promotion.at
        ).order_by(EV.c.id.desc()).limit(1)).first()
        trigger = _timeline_event(row) if row is not None else None
    enrollments = [
        NurtureRun(row.id, row.campaign_id, row.status, row.enrolled_at, row.ended_at, row.end_reason)
        for row in conn.execute(select(E).where(E.c.lead_id == lead_id).order_by(E.c.enrolled_at, E.c.id))
    ]
    engaged: dict[int, set[str]] = {}
    for row in conn.execute(select(EV.c.delivery_id, EV.c.type).distinct().where(
            EV.c.lead_id == lead_id, EV.c.delivery_id.is_not(None), EV.c.type.in_([OPEN, CLICK]))):
        engaged.setdefault(row.delivery_id, set()).add(row.type)
    deliveries = [
        SentStep(row.enrollment_id, row.step_key, row.status, row.subject, row.sent_at,
                 opened=bool(engaged.get(row.id, set()) & {OPEN, CLICK}), clicked=CLICK in engaged.get(row.id, set()))
        for row in conn.execute(select(D).where(D.c.lead_id == lead_id).order_by(D.c.id))
    ]
    return BriefFacts(
        lead=_lead_mapping(lead), promotion_id=promotion.id, promoted_at=promotion.at, reason=promotion.reason,
        actor=promotion.actor, trigger=trigger, events=events, enrollments=enrollments, deliveries=deliveries,
    )


def brief_for(
    conn: Connection,
    *,
    sales: SalesRules,
    lead_id: int,
    promotion_id: int,
    breakdown: ScoreBreakdown | None = None,
    scoring: ScoringRules | None = None,
    now: datetime | None = None,
    links: SalesLinks | None = None,
    campaign_names: Mapping[str, str] | None = None,
    stage: str | None = None,
    routing: str | None = None,
) -> dict[str, Any]:
    """The brief of one promotion, read in the caller's transaction (see :mod:`nurture.handoff.brief`).

    Give the ``breakdown`` when the caller has it (the intake batch), or ``scoring`` and ``now`` to compute it from the
    stored points. ``stage`` overrides the stored one (inside the batch the lead row is written back at its end).
    Raises LookupError when the lead or the promotion does not exist.
    """
    facts = load_brief_facts(conn, lead_id, promotion_id)
    if facts is None:
        raise LookupError(f"no promotion {promotion_id} of lead {lead_id}")
    lead = dict(facts.lead)
    if stage is not None:
        lead["stage"] = stage
    if breakdown is None:
        if scoring is None or now is None:
            raise ValueError("brief_for needs the breakdown, or the scoring rules and the time to compute it")
        from nurture.storage.rows import lead_view

        row = conn.execute(select(L).where(L.c.id == lead_id)).one()
        breakdown = score(scoring, lead_view(row), scored_events(conn, [lead_id])[lead_id], now)
    lead["score"] = breakdown.total
    return build_brief(replace(facts, lead=lead), sales=sales, breakdown=breakdown, links=links,
                       campaign_names=campaign_names, routing=routing)


def latest_promotion_id(conn: Connection, lead_id: int) -> int | None:
    """The id of the lead's latest promotion (stage change to ``sql``), or None."""
    return conn.execute(
        select(func.max(SC.c.id)).where(SC.c.lead_id == lead_id, SC.c.to_stage == SQL)
    ).scalar()


def refresh_pending(conn: Connection, lead_id: int, *, sales: SalesRules, breakdown: ScoreBreakdown,
                    links: SalesLinks | None, campaign_names: Mapping[str, str], stage: str) -> int:
    """Rebuild the brief of the lead's ``lead.promoted`` notification and handoff email while they still wait in the
    outbox (a second hand-raise arrived before they went out); return how many rows changed."""
    promotion_id = latest_promotion_id(conn, lead_id)
    if promotion_id is None:
        return 0
    keys = [promoted_key(promotion_id), promoted_email_key(promotion_id)]
    pending = list(conn.execute(select(O.c.id, O.c.kind, O.c.payload).where(
        O.c.dedup_key.in_(keys), O.c.status == "pending")))
    if not pending:
        return 0
    brief = brief_for(conn, sales=sales, lead_id=lead_id, promotion_id=promotion_id, breakdown=breakdown,
                      links=links, campaign_names=campaign_names, stage=stage)
    changed = 0
    for row in pending:
        if row.kind == SALES_WEBHOOK:
            payload = dict(row.payload or {})
            routing = ((payload.get("brief") or {}).get("owner") or {}).get("routing")
            if routing and brief.get("owner"):
                brief["owner"] = {**brief["owner"], "routing": routing}
            payload.update(notify.promoted_webhook(brief))
        else:
            payload = notify.promoted_email(brief) or dict(row.payload or {})
        conn.execute(update(O).where(O.c.id == row.id, O.c.status == "pending").values(payload=payload))
        changed += 1
    return changed


# -- the handoff jobs' reads -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenSql:
    """A lead waiting at stage ``sql`` for sales' decision, with its latest promotion."""

    lead_id: int
    promotion_id: int
    promoted_at: datetime
    owner: str | None


def open_sqls(conn: Connection) -> list[OpenSql]:
    """Every lead at stage ``sql`` with its latest promotion, the longest waiting first."""
    latest = (select(SC.c.lead_id, func.max(SC.c.id).label("promotion_id"))
              .where(SC.c.to_stage == SQL).group_by(SC.c.lead_id).subquery())
    query = (
        select(L.c.id, L.c.owner, SC.c.id.label("promotion_id"), SC.c.at)
        .select_from(L.join(latest, latest.c.lead_id == L.c.id).join(SC, SC.c.id == latest.c.promotion_id))
        .where(L.c.stage == SQL)
        .order_by(SC.c.at, SC.c.id)
    )
    return [OpenSql(row.id, row.promotion_id, row.at, row.owner) for row in conn.execute(query)]


def queued(conn: Connection, dedup_keys: Iterable[str]) -> set[str]:
    """Which of these dedup keys the outbox holds already (in any status)."""
    keys = sorted(set(dedup_keys))
    found: set[str] = set()
    for start in range(0, len(keys), 900):
        found.update(conn.execute(select(O.c.dedup_key).where(
            O.c.dedup_key.in_(bindparam("keys", expanding=True))), {"keys": keys[start : start + 900]}).scalars())
    return found


def owned_by(sales: SalesRules, sqls: Sequence[OpenSql]) -> dict[str, list[OpenSql]]:
    """Open SQLs grouped by the id of their (configured) owner; leads whose owner is unknown are left out."""
    grouped: dict[str, list[OpenSql]] = {}
    for sql in sqls:
        found = find_owner(sales, sql.owner) if sql.owner else None
        if found is not None:
            grouped.setdefault(found.id, []).append(sql)
    return grouped


__all__ = [
    "OpenSql", "PromotingBatch", "PromotingLead", "after_rescore", "assign_owner", "brief_for", "digest_key",
    "latest_promotion_id", "load_brief_facts", "next_round_robin", "open_sqls", "owned_by", "promoted_email_key",
    "promoted_key", "queued", "recycling", "refresh_pending", "sla_email_key", "sla_key",
]
