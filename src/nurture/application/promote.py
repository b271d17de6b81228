"""Promotion to SQL inside the intake transaction, the handoff it queues, and the briefs the handoff jobs send.

:func:`after_rescore` runs in :mod:`nurture.application.record_events` after each lead is rescored (an event recorded, a lead
saved), inside that batch's transaction, with the lead already locked. It asks :func:`nurture.core.promotion.decide`
and returns what to write (:class:`Outcome`): the batch moves the lead (it holds the lead's state until its end),
then :func:`promoted`, :func:`disqualified` or :func:`refresh_pending` write the rest (queries in
:mod:`nurture.storage.promotions`):

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from nurture.core.enrollment import recycle_pending
from nurture.core.facts import CLICK, OPEN, Engagement, LeadView
from nurture.core.promotion import DISQUALIFY, PROMOTE, Decision, FieldChecks, decide
from nurture.core.routing import Route, route
from nurture.core.routing import owner as find_owner
from nurture.core.scoring import ScoreBreakdown, score
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import Owner, SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff, notify
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
from nurture.storage.enrollments import exit_enrollments
from nurture.storage.lead_state import lead_by_id
from nurture.storage.outbox import enqueue
from nurture.storage.promotions import (
    SQL,
    OpenSql,
    deliveries_of,
    engaged_deliveries,
    enrollments_of,
    latest_event_until,
    latest_events,
    latest_promotion_id,
    lead_and_promotion,
    next_round_robin,
    pending_notifications,
    set_owner,
    set_pending_payload,
)
from nurture.storage.scores import scored_events

log = logging.getLogger(__name__)


DISQUALIFIED = "disqualified"
SALES_WEBHOOK, OWNER_EMAIL = "sales_webhook", "owner_email"

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


# -- after a lead is rescored ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What rescoring a lead leads to (:func:`after_rescore`), for the caller to write: a move to ``stage`` with its
    history row's ``reason``, then :func:`promoted` or :func:`disqualified`; or, when ``stage`` is None, a hand-raise
    of an SQL whose waiting notification :func:`refresh_pending` rebuilds."""

    stage: str | None
    reason: str = ""
    decision: Decision | None = None


_REFRESH = Outcome(None)


def after_rescore(sales: SalesRules, view: LeadView, breakdown: ScoreBreakdown, event: Engagement | None, *,
                  fields: Mapping[str, Any] | None, now: datetime, checks: FieldChecks | None = None) -> Outcome | None:
    """Promote, disqualify, or add a hand-raise to a waiting notification; None when nothing is to be done.

    ``view`` is the lead as rescored (its stage the current one), ``fields`` its stored fields. ``event`` is the
    event just recorded (None after a lead was saved: only score-and-fit rules and disqualification can apply then).
    ``checks``: the answers kept for this lead's fields (:class:`nurture.core.promotion.FieldChecks`), if any.
    """
    decision = decide(sales, view, breakdown, event, checks)
    if decision is None:
        if view.stage == SQL and event is not None and is_hand_raise(sales, view, event):
            return _REFRESH
        return None
    if decision.kind == DISQUALIFY:
        return Outcome(DISQUALIFIED, promotion_reason(decision.rule, decision.reason), decision)
    if decision.kind == PROMOTE:
        if not decision.rule.startswith("intent:") and recycling(view.stage, fields, now):
            return None  # a rejected lead waits out its recycle_after; only asking for sales brings it back sooner
        return Outcome(SQL, promotion_reason(decision.rule, decision.reason), decision)
    return None


def recycling(stage: str, fields: Mapping[str, Any] | None, now: datetime) -> bool:
    """Whether a rejected lead still waits out its ``recycle_after``: score-and-fit rules do not promote it then."""
    return recycle_pending(stage, fields, now)


def campaign_names(catalog: Catalog) -> dict[str, str]:
    """Campaign id -> name, as briefs show them."""
    return {campaign.id: campaign.name for campaign in catalog.campaigns.values()}


def disqualified(conn: Connection, lead_id: int, decision: Decision, now: datetime) -> None:
    """What follows a lead's move to ``disqualified``: every active enrollment exited."""
    exit_enrollments(conn, lead_id, f"stage:{DISQUALIFIED}", now)
    log.info("lead %d disqualified by %s", lead_id, decision.rule)


def promoted(conn: Connection, lead: LeadView, lead_id: int, promotion_id: int, decision: Decision,
             breakdown: ScoreBreakdown, *, sales: SalesRules, handoff: Handoff | None, catalog: Catalog,
             now: datetime) -> None:
    """What follows a lead's move to ``sql`` (the stage change ``promotion_id``): every active enrollment exited, an
    owner routed, and the handoff queued in the outbox."""
    exit_enrollments(conn, lead_id, f"stage:{SQL}", now)  # every campaign, not only those listing sql in their exits
    owner, assigned = assign_owner(conn, sales, lead)
    if owner is not None:
        set_owner(conn, lead_id, owner.email)
    links = handoff.links if handoff is not None else None
    brief = brief_for(conn, sales=sales, lead_id=lead_id, promotion_id=promotion_id, breakdown=breakdown,
                      links=links, campaign_names=campaign_names(catalog), stage=lead.stage,
                      routing=assigned.rule if assigned is not None else None)
    handoff = handoff or Handoff()
    if handoff.webhook:
        enqueue(conn, kind=SALES_WEBHOOK, dedup_key=promoted_key(promotion_id), payload=notify.promoted_webhook(brief),
                now=now)
    email = notify.promoted_email(brief)
    if email is not None:
        enqueue(conn, kind=OWNER_EMAIL, dedup_key=promoted_email_key(promotion_id), payload=email, now=now)
    log.info("lead %d promoted to SQL by %s (promotion %d), owner %s", lead_id, decision.rule, promotion_id,
             owner.id if owner is not None else "-")


# -- routing ---------------------------------------------------------------------------------------------------------


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


def load_brief_facts(conn: Connection, lead_id: int, promotion_id: int) -> BriefFacts | None:
    """What the brief of one promotion is built from, read in the caller's transaction; None if either is unknown."""
    lead, promotion = lead_and_promotion(conn, lead_id, promotion_id)
    if lead is None or promotion is None:
        return None
    events = [_timeline_event(row) for row in latest_events(conn, lead_id, TIMELINE_LIMIT)]
    rule, _reason = split_reason(promotion.reason)
    trigger = None
    if rule is not None and rule.startswith("intent:"):
        row = latest_event_until(conn, lead_id, rule.split(":", 1)[1], promotion.at)
        trigger = _timeline_event(row) if row is not None else None
    enrollments = [
        NurtureRun(row.id, row.campaign_id, row.status, row.enrolled_at, row.ended_at, row.end_reason)
        for row in enrollments_of(conn, lead_id)
    ]
    engaged = engaged_deliveries(conn, lead_id)
    deliveries = [
        SentStep(row.enrollment_id, row.step_key, row.status, row.subject, row.sent_at,
                 opened=bool(engaged.get(row.id, set()) & {OPEN, CLICK}), clicked=CLICK in engaged.get(row.id, set()))
        for row in deliveries_of(conn, lead_id)
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

        row = lead_by_id(conn, lead_id)
        breakdown = score(scoring, lead_view(row), scored_events(conn, [lead_id])[lead_id], now)
    lead["score"] = breakdown.total
    return build_brief(replace(facts, lead=lead), sales=sales, breakdown=breakdown, links=links,
                       campaign_names=campaign_names, routing=routing)


def refresh_pending(conn: Connection, lead_id: int, *, sales: SalesRules, breakdown: ScoreBreakdown,
                    links: SalesLinks | None, campaign_names: Mapping[str, str], stage: str) -> int:
    """Rebuild the brief of the lead's ``lead.promoted`` notification and handoff email while they still wait in the
    outbox (a second hand-raise arrived before they went out); return how many rows changed."""
    promotion_id = latest_promotion_id(conn, lead_id)
    if promotion_id is None:
        return 0
    keys = [promoted_key(promotion_id), promoted_email_key(promotion_id)]
    pending = pending_notifications(conn, keys)
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
        set_pending_payload(conn, row.id, payload)
        changed += 1
    return changed


# -- the handoff jobs


def owned_by(sales: SalesRules, sqls: Sequence[OpenSql]) -> dict[str, list[OpenSql]]:
    """Open SQLs grouped by the id of their (configured) owner; leads whose owner is unknown are left out."""
    grouped: dict[str, list[OpenSql]] = {}
    for sql in sqls:
        found = find_owner(sales, sql.owner) if sql.owner else None
        if found is not None:
            grouped.setdefault(found.id, []).append(sql)
    return grouped
