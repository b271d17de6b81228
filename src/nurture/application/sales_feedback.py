"""Sales' verdict on an SQL: accept (an opportunity) or reject with a reason (recycled or disqualified).

:func:`apply_feedback` writes one decision in one transaction: the stage change (actor ``sales``), the reason's fields
(``rejection_reason`` always), a ``sales_feedback`` engagement event whose stored points are the reason's score
adjustment (so the score breakdown explains it, and every later rescoring keeps it), the recomputed score, the
``recycle_at`` gate of :mod:`nurture.core.enrollment`, and a ``lead.accepted`` / ``lead.rejected`` outbox row for
the CRM. In the same transaction the lead is enrolled in whatever campaign it now matches (a recycle campaign, at once
when the reason sets no delay; after it, by the enrollment sweep, when it sets one).

A promotion (the stage change that made the lead an SQL) gets one decision. The ``sales_feedback`` event records it,
with the promotion's id, so repeating a decision (a retried POST, a double click on a link) returns the first result
with ``already=True`` and changes nothing, while a *different* decision on a decided promotion is refused.

Why a reset is an event of minus the behaviour points: behaviour decays exponentially with one half-life, so an event
of ``-B(now)`` points recorded at ``now`` decays exactly as fast as the points it cancels, and the behaviour part stays
0 until the lead does something new.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from nurture.application.enroll import enroll_in_transaction
from nurture.core.enrollment import RECYCLE_AT
from nurture.core.facts import Engagement
from nurture.core.lead_fields import FIELD_CLEANERS, normalize_email
from nurture.core.promotion import ACCEPT, NOTE, REJECT, FeedbackOutcome, feedback
from nurture.core.scoring import ScoreBreakdown, score
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.errors import InvalidInput, LeadNotFound
from nurture.storage import feedback_rows as store
from nurture.storage.database import transaction
from nurture.storage.enrollments import exit_enrollments
from nurture.storage.feedback_rows import SALES_FEEDBACK
from nurture.storage.outbox import enqueue
from nurture.storage.rows import lead_view
from nurture.storage.scores import scored_events

if TYPE_CHECKING:  # the connection types only annotate: the queries are storage's
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)


MAX_NOTE = 2000
"""The longest note a rep can add to a decision (characters)."""

_COLUMNS = frozenset(FIELD_CLEANERS) - {"stage", "tags"}
"""Lead columns a reject reason's ``set`` may change; any other name is a custom field."""


class FeedbackConflict(InvalidInput):
    """The lead is not waiting for this decision."""


class NotAwaitingDecision(FeedbackConflict):
    """This lead is no longer waiting for a decision."""


class AlreadyDecided(FeedbackConflict):
    """This promotion was decided already."""


@dataclass(frozen=True)
class FeedbackResult:
    """What a decision did (or, with ``already``, what the first identical decision did)."""

    email: str
    lead_id: int
    promotion_id: int
    verdict: str  # accept | reject
    reason: str | None  # the reject code
    label: str | None  # how the code reads
    note: str | None
    from_stage: str
    stage: str
    score_before: float
    score: float
    score_adjustment: float  # the points of the sales_feedback event
    set_fields: Mapping[str, Any]
    recycle_at: datetime | None
    stage_change_id: int
    decided_at: datetime
    history_reason: str  # the stage change's reason
    already: bool = False
    enrolled: int = 0  # campaigns entered right after the decision
    via: str = ""

    def to_json(self) -> dict[str, Any]:
        """For the API and ``nurture sales --json``."""
        return {
            "email": self.email, "lead_id": self.lead_id, "promotion_id": self.promotion_id, "verdict": self.verdict,
            "reason": self.reason, "label": self.label, "note": self.note, "from_stage": self.from_stage,
            "stage": self.stage, "score_before": self.score_before, "score": self.score,
            "score_adjustment": self.score_adjustment, "set_fields": dict(self.set_fields),
            "recycle_at": _iso(self.recycle_at), "decided_at": _iso(self.decided_at),
            "history_reason": self.history_reason, "via": self.via, "already": self.already, "enrolled": self.enrolled,
        }

    def describe(self) -> str:
        """One line for people: ``rejected (no_budget: No budget this year)``."""
        if self.verdict == ACCEPT:
            return "accepted"
        shown = f"{self.reason}: {self.label}" if self.label else str(self.reason)
        return f"rejected ({shown})"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value is not None else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


# --- validation (before any database access) -------------------------------------------------------------------------


def _clean_note(note: str | None) -> str | None:
    text = (note or "").strip()
    if len(text) > MAX_NOTE:
        raise InvalidInput(f"the note is {len(text)} characters long: at most {MAX_NOTE}")
    return text or None


def feedback_outcome(sales_rules: SalesRules, verdict: str, reason: str | None, note: str | None) -> FeedbackOutcome:
    """The outcome of a verdict, or :class:`InvalidInput` naming what is allowed (pure; nothing is read)."""
    verdict = (verdict or "").strip().lower()
    code = (reason or "").strip() or None
    if verdict == ACCEPT and code is not None:
        raise InvalidInput("accept takes no reason (a reason is for reject); put any comment in the note")
    try:
        return feedback(sales_rules, verdict, note if verdict == ACCEPT else code)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def reason_label(sales_rules: SalesRules, code: str) -> str:
    """How a reject code reads (its label, or the code itself)."""
    configured = sales_rules.feedback.reject_reasons.get(code)
    return (configured.label if configured is not None else None) or code


# --- reading a promotion -----------------------------------------------------------------------------------------


def _result_from_event(lead: Any, event: Any) -> FeedbackResult:
    """The result a decision gave, from its stored event."""
    p = dict(event.properties or {})
    return FeedbackResult(
        email=lead.email, lead_id=lead.id, promotion_id=int(p["promotion_id"]), verdict=p["verdict"],
        reason=p.get("reason"), label=p.get("label"), note=p.get("note"), from_stage=p.get("from_stage", "sql"),
        stage=p["stage"], score_before=float(p.get("score_before", 0)), score=float(p.get("score", 0)),
        score_adjustment=float(event.points), set_fields=dict(p.get("set_fields") or {}),
        recycle_at=_parse_time(p.get("recycle_at")), stage_change_id=int(p.get("stage_change_id", 0)),
        decided_at=event.occurred_at, history_reason=p.get("history_reason", ""), via=p.get("via", ""),
    )


@dataclass(frozen=True)
class PromotionStatus:
    """What a sales link's page shows: the lead, why it was promoted, its score, and whether it is still open."""

    lead: Any  # the lead's row
    promotion: Any  # the promotion's stage change row
    breakdown: ScoreBreakdown
    waiting: bool  # this promotion still waits for a decision
    decision: FeedbackResult | None = None  # set once decided
    latest: bool = True  # no later promotion of the lead

    @property
    def name(self) -> str:
        """The lead's name, or its email."""
        parts = [self.lead.first_name, self.lead.last_name]
        return " ".join(part for part in parts if part) or self.lead.email


def promotion_status(engine: Engine, scoring_rules: ScoringRules, lead_id: int, promotion_id: int,
                     now: datetime) -> PromotionStatus | None:
    """The state of one promotion of one lead; None when either is unknown (deleted, or not a promotion of it)."""
    with transaction(engine, read_only=True) as conn:
        lead = store.lead(conn, lead_id)
        if lead is None:
            return None
        promotion = store.promotion(conn, lead_id, promotion_id)
        if promotion is None:
            return None
        latest = store.latest_promotion(conn, lead_id)
        event = store.decision_event(conn, lead_id, promotion_id)
        breakdown = score(scoring_rules, lead_view(lead), scored_events(conn, [lead_id])[lead_id], now)
    is_latest = latest is not None and latest.id == promotion_id
    decision = _result_from_event(lead, event) if event is not None else None
    waiting = decision is None and is_latest and lead.stage == "sql"
    return PromotionStatus(lead, promotion, breakdown, waiting, decision, is_latest)


# --- applying a decision -------------------------------------------------------------------------------------------


@dataclass
class _Changes:
    """What the decision does to the lead's row."""

    columns: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)


def _field_changes(lead: Any, outcome: FeedbackOutcome, recycle_at: datetime | None) -> _Changes:
    """The reason's ``set`` (custom fields by name, a ``None`` removing one) and ``recycle_at`` (set or cleared)."""
    changes = _Changes(custom=dict(lead.fields or {}))
    for name, value in outcome.set_fields.items():
        if name in _COLUMNS:
            try:
                changes.columns[name] = FIELD_CLEANERS[name](value)
            except InvalidInput as exc:
                raise InvalidInput(f"sales.yaml sets {name} to {value!r}: {exc}") from None
        elif value is None:
            changes.custom.pop(name, None)
        else:
            changes.custom[name] = value
    if recycle_at is not None:
        changes.custom[RECYCLE_AT] = recycle_at.isoformat()
    else:  # a decision replaces any earlier gate: a stale one must not hold the lead back
        changes.custom.pop(RECYCLE_AT, None)
    return changes


def _lead_payload(lead: Any, stage: str, lead_score: float, changes: _Changes) -> dict[str, Any]:
    columns = {name: getattr(lead, name) for name in ("first_name", "last_name", "company", "title", "owner")}
    columns.update({k: v for k, v in changes.columns.items() if k in columns})
    return {"id": lead.id, "email": lead.email, **columns, "stage": stage, "score": lead_score}


def _apply(conn: Connection, catalog: Catalog, scoring_rules: ScoringRules, sales_rules: SalesRules,
           outcome: FeedbackOutcome, *, email: str | None, lead_id: int | None, promotion_id: int | None, verdict: str,
           code: str | None, note: str | None, via: str, now: datetime, notify_crm: bool) -> FeedbackResult:
    # locked: later decisions on this lead wait for this one
    lead = store.lock_lead(conn, email=normalize_email(email) if email is not None else None, lead_id=lead_id)
    if lead is None:
        raise LeadNotFound(f"no lead with email {normalize_email(email)!r}" if email is not None else
                           f"no lead with id {lead_id}")
    latest = store.latest_promotion(conn, lead.id)
    target = promotion_id if promotion_id is not None else (latest.id if latest is not None else None)
    if target is None:
        raise NotAwaitingDecision(
            f"{lead.email} is not an SQL (stage {lead.stage}): only a sales qualified lead can be accepted or rejected")
    decided = store.decision_event(conn, lead.id, target)
    if decided is not None:
        first = _result_from_event(lead, decided)
        if first.verdict == verdict and (verdict == ACCEPT or first.reason == code):
            return replace(first, already=True)
        raise AlreadyDecided(
            f"decided already: {lead.email} was {first.describe()} on {first.decided_at:%Y-%m-%d %H:%M} UTC; "
            "nothing changed")
    if latest is None or latest.id != target or lead.stage != "sql":
        why = "it was promoted again since this link was sent" if latest is not None and latest.id != target else (
            f"it is at stage {lead.stage} now")
        raise NotAwaitingDecision(f"this lead is no longer waiting for a decision: {why}")

    recycle_at = now + outcome.recycle_after.as_timedelta() if outcome.recycle_after is not None else None
    changes = _field_changes(lead, outcome, recycle_at)
    view = lead_view(lead)
    history = scored_events(conn, [lead.id])[lead.id]
    before = score(scoring_rules, view, history, now)
    points = outcome.score_adjustment - (before.behaviour if outcome.reset_behaviour else 0.0)
    points = round(points, 6) or 0.0
    attributes = {**view.attributes, **changes.columns}
    after_view = replace(view, stage=outcome.stage, custom=changes.custom,
                         attributes={k: v for k, v in attributes.items() if v is not None})
    engagement = Engagement(SALES_FEEDBACK, now)
    after = score(scoring_rules, after_view, [*history, (engagement, points)] if points else history, now)

    history_reason = outcome.reason if verdict == ACCEPT or note is None else f"{outcome.reason}{NOTE}{note}"
    stage_change_id = store.insert_stage_change(
        conn, lead_id=lead.id, from_stage=lead.stage, to_stage=outcome.stage, at=now, reason=history_reason,
        actor="sales")
    label = reason_label(sales_rules, code) if code is not None else None
    result = FeedbackResult(
        email=lead.email, lead_id=lead.id, promotion_id=target, verdict=verdict, reason=code, label=label, note=note,
        from_stage=lead.stage, stage=outcome.stage, score_before=before.total, score=after.total,
        score_adjustment=points, set_fields=dict(outcome.set_fields), recycle_at=recycle_at,
        stage_change_id=stage_change_id, decided_at=now, history_reason=history_reason, via=via,
    )
    store.insert_decision_event(conn, lead_id=lead.id, at=now, points=points, properties={
        "promotion_id": target, "verdict": verdict, "reason": code, "label": label, "note": note, "via": via,
        "from_stage": lead.stage, "stage": outcome.stage, "score_before": before.total, "score": after.total,
        "set_fields": dict(outcome.set_fields), "recycle_at": _iso(recycle_at), "stage_change_id": stage_change_id,
        "history_reason": history_reason,
    })
    store.update_lead(conn, lead.id, {  # score_state: the history changed, read it next time
        "stage": outcome.stage, "stage_changed_at": now, "updated_at": now, "score": after.total,
        "fields": changes.custom, "score_state": None, **changes.columns,
    })
    exits = [c.id for c in catalog.campaigns.values() if outcome.stage in c.exit.stages]
    if exits:
        exit_enrollments(conn, lead.id, f"stage:{outcome.stage}", now, campaign_ids=exits)
    if not notify_crm:
        return result
    decision = {k: v for k, v in result.to_json().items() if k not in ("email", "lead_id", "already", "enrolled")}
    enqueue(conn, kind="sales_webhook", dedup_key=f"sales-feedback:{target}", now=now, payload={
        "type": "lead.accepted" if verdict == ACCEPT else "lead.rejected",
        "text": f"{lead.email}: {history_reason}",
        "lead": _lead_payload(lead, outcome.stage, after.total, changes),
        "decision": decision,
    })
    return result


def apply_feedback(
    engine: Engine, catalog: Catalog, scoring_rules: ScoringRules, sales_rules: SalesRules, *,
    email: str | None = None, lead_id: int | None = None, promotion_id: int | None = None, verdict: str,
    reason: str | None, note: str | None, actor: str, now: datetime, notify_crm: bool = True,
) -> FeedbackResult:
    """Record sales' verdict on an SQL (by ``email`` or ``lead_id``) and enroll the lead, in one transaction.

    ``verdict`` is ``accept`` (no reason; the lead becomes an opportunity) or ``reject`` with one of the configured
    reason codes. ``promotion_id`` (signed links) names the promotion the verdict is about: it must be the lead's
    latest. ``actor`` says how the verdict came (``api``, ``cli``, ``link``): the history's actor is always ``sales``.
    ``notify_crm`` queues the ``lead.accepted`` / ``lead.rejected`` webhook (pass whether a sales webhook URL is set:
    a row with nowhere to go would retry forever).

    Raises :class:`InvalidInput` for a bad verdict, reason or note (naming what is allowed), :class:`LeadNotFound`,
    :class:`NotAwaitingDecision` when the lead is not an SQL waiting on that promotion, :class:`AlreadyDecided` when
    the promotion got a different decision. An identical repeat returns the first result with ``already=True``.
    """
    if (email is None) == (lead_id is None):
        raise ValueError("give the lead's email or its id, not both")
    if not actor:
        raise ValueError("say who decided (actor)")
    verdict = (verdict or "").strip().lower()
    note = _clean_note(note)
    outcome = feedback_outcome(sales_rules, verdict, reason, note)
    code = (reason or "").strip() if verdict == REJECT else None
    with transaction(engine) as conn:
        result = _apply(conn, catalog, scoring_rules, sales_rules, outcome, email=email, lead_id=lead_id,
                        promotion_id=promotion_id, verdict=verdict, code=code, note=note, via=actor, now=now,
                        notify_crm=notify_crm)
        # a recycled (or otherwise moved) lead enters what it now matches with the verdict, in its transaction
        enrolled = 0 if result.already else enroll_in_transaction(conn, catalog, [result.lead_id], now)
    if result.already:
        log.info("sales feedback repeated on promotion %d: nothing changed", result.promotion_id)
        return result
    log.info("sales %s lead %d (promotion %d): %s -> %s", "accepted" if verdict == ACCEPT else "rejected",
             result.lead_id, result.promotion_id, result.from_stage, result.stage)
    return replace(result, enrolled=enrolled)
