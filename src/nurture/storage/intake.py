"""Recording engagement: one transaction writes a batch of events and everything they cause.

For every event of a batch, in order: the event is written once (idempotent on its client ``id``), an unknown email
becomes a new lead, scoring gives the event its points, the lead's score is recomputed over its history and may
promote it, suppression events (unsubscribe, bounce, spam complaint) end every enrollment, goal events end the
campaigns that list them, and enrollments waiting for that event type become due. All of it commits together or not
at all; nothing external happens inside the transaction. New leads and leads that may now match a campaign are
enrolled right after the commit.

Concurrency: the batch's leads are locked in email order at the start (``FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serializes writers), so two batches touching one lead compute its score one after the
other. A deadlock or serialization failure reported by PostgreSQL retries the whole batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from nurture.core.facts import BOUNCE, COMPLAINT, UNSUBSCRIBE, Engagement, LeadView
from nurture.core.scoring import event_points, fit_items, score, stage_after_scoring, utc_day
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff
from nurture.storage import promotion
from nurture.storage.database import session, transaction, upsert_insert
from nurture.storage.enrollments import enroll_in_transaction, exit_enrollments, wake_waiting
from nurture.storage.events import (
    DUPLICATE,
    MAX_BATCH,
    MAX_ID_LENGTH,
    RECORDED,
    EventIn,
    EventResult,
    InvalidEvents,
    clean_event,
    clean_events,
    clean_properties,
)
from nurture.storage.leads import clean_lead_data, upsert_lead
from nurture.storage.models import STAGE_ACTORS, EngagementEvent, Enrollment, Lead, StageChange
from nurture.storage.schedule import lead_view
from nurture.storage.scores import rescore_all, score_breakdown, scored_events

__all__ = [
    "DUPLICATE", "MAX_BATCH", "MAX_ID_LENGTH", "RECORDED", "EventIn", "EventResult", "InvalidEvents", "SavedLead",
    "clean_event", "clean_events", "clean_properties", "record_events", "rescore_all", "save_lead", "score_breakdown",
]

log = logging.getLogger(__name__)

L = Lead.__table__
EV = EngagementEvent.__table__
E = Enrollment.__table__
SC = StageChange.__table__

SUPPRESSION_REASONS = {UNSUBSCRIBE: "unsubscribed", BOUNCE: "bounced", COMPLAINT: "spam_complaint"}
"""Event types that stop all email to the lead, and the end reason their enrollments get."""

_RETRIES = 3
_RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock detected, serialization failure (PostgreSQL)


def _as_engagement(event: EventIn) -> Engagement:
    assert event.occurred_at is not None
    return Engagement(event.type, event.occurred_at, event.campaign_id, event.step_key, dict(event.properties))


@dataclass(frozen=True)
class _Statements:
    """The statements a batch runs many times, built once per dialect: building one costs more than running it."""

    insert_event: Any
    insert_lead: Any
    lock_leads: Any
    known_ids: Any
    insert_stage_change: Any
    insert_stage_change_id: Any
    update_lead: Any


_LEAD_STATE_COLUMNS = ("score", "stage", "stage_changed_at", "unsubscribed_at", "bounced_at", "updated_at")


@lru_cache(maxsize=4)
def _statements(dialect: str) -> _Statements:
    return _Statements(
        insert_event=upsert_insert(EV, dialect).on_conflict_do_nothing(index_elements=["external_id"]).returning(EV.c.id),
        insert_lead=upsert_insert(L, dialect).on_conflict_do_nothing(index_elements=["email"]).returning(L.c.email),
        insert_stage_change=SC.insert(),
        insert_stage_change_id=SC.insert().returning(SC.c.id),
        lock_leads=select(L).where(L.c.email.in_(bindparam("emails", expanding=True))).order_by(L.c.email)
        .with_for_update(),
        known_ids=select(EV.c.external_id, EV.c.lead_id, EV.c.points).where(
            EV.c.external_id.in_(bindparam("ids", expanding=True))),
        update_lead=update(L).where(L.c.id == bindparam("b_id")).values(
            {name: bindparam(f"b_{name}") for name in _LEAD_STATE_COLUMNS}
        ),
    )


@dataclass
class _LeadState:
    """A lead as the batch changes it; written back once when the batch ends."""

    row: Any
    created: bool
    stage: str
    score: float
    stage_changed_at: datetime
    unsubscribed_at: datetime | None
    bounced_at: datetime | None
    scored: list[tuple[Engagement, float]]
    recorded: bool = False
    recorded_types: set[str] = field(default_factory=set)
    fit: list[Any] | None = None  # the fit items: they depend on the lead's fields, which a batch does not change
    stage_changed: bool = False
    dirty: bool = False

    @property
    def id(self) -> int:
        return int(self.row.id)

    def scored_on(self, event_type: str, day: date) -> int:
        """How many events of this type scored (points other than 0) on this UTC day: what daily caps count."""
        return sum(1 for event, _points in self.scored if event.type == event_type and utc_day(event.at) == day)

    def view(self) -> LeadView:
        return replace(
            lead_view(self.row), stage=self.stage, score=self.score,
            unsubscribed=self.unsubscribed_at is not None, bounced=self.bounced_at is not None,
        )


class _Batch:
    """One batch being recorded inside one transaction."""

    def __init__(self, conn: Connection, catalog: Catalog, rules: ScoringRules, now: datetime, actor: str, *,
                 sales: SalesRules | None = None, handoff: Handoff | None = None) -> None:
        self.conn, self.catalog, self.rules, self.now, self.actor = conn, catalog, rules, now, actor
        self.sales, self.handoff = sales, handoff
        self.leads: dict[str, _LeadState] = {}
        self.by_id: dict[int, _LeadState] = {}
        self.sql = _statements(conn.dialect.name)
        campaigns = catalog.campaigns.values()
        self.goals: dict[str, list[str]] = {}
        for campaign in campaigns:
            for event_type in campaign.exit.events:
                self.goals.setdefault(event_type, []).append(campaign.id)
        self.awaited = {step.wait_for.event for c in campaigns for step in c.steps if step.wait_for is not None}

    # Leads are locked (or created) in email order before anything else, so concurrent batches never deadlock on them.
    def prepare(self, events: Sequence[EventIn]) -> dict[str, tuple[int, float]]:
        """Find the client ids already recorded, then lock or create the leads of the other events."""
        ids = sorted({e.id for e in events if e.id is not None})
        known: dict[str, tuple[int, float]] = {}
        for start in range(0, len(ids), 900):
            rows = self.conn.execute(self.sql.known_ids, {"ids": ids[start : start + 900]})
            known.update({row.external_id: (row.lead_id, float(row.points)) for row in rows})
        first_type = {}
        for event in events:
            if event.id is None or event.id not in known:
                first_type.setdefault(event.email, event.type)
        emails = sorted(first_type)
        found = self._lock_leads(emails)
        missing = [email for email in emails if email not in found]
        created = self.create_leads({email: f"created by a {first_type[email]} event" for email in missing})
        if missing:
            found.update(self._lock_leads(missing))
        for email in emails:
            self.track(found[email], email in created)
        return known

    def _lock_leads(self, emails: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(emails), 900):
            rows = self.conn.execute(self.sql.lock_leads, {"emails": list(emails[start : start + 900])})
            found.update({row.email: row for row in rows})
        return found

    def create_leads(self, reasons: Mapping[str, str]) -> set[str]:
        """Insert leads at stage ``lead``, each with a first history row naming the actor and ``reasons[email]``;
        return the emails inserted (a lead a concurrent batch inserted first is theirs)."""
        if not reasons:
            return set()
        now = self.now
        rows = [dict(email=email, tags=[], fields={}, stage="lead", score=0.0, created_at=now, updated_at=now,
                     stage_changed_at=now) for email in sorted(reasons)]
        inserted = set(self.conn.execute(self.sql.insert_lead, rows).scalars())
        if inserted:
            ids = self._lock_leads(sorted(inserted))
            self.conn.execute(self.sql.insert_stage_change, [
                dict(lead_id=ids[email].id, from_stage=None, to_stage="lead", at=now, actor=self.actor,
                     reason=reasons[email])
                for email in sorted(inserted)
            ])
        return inserted

    def track(self, row: Any, created: bool) -> _LeadState:
        """Follow this lead's changes through the batch."""
        state = _LeadState(
            row=row, created=created, stage=row.stage, score=float(row.score or 0), stage_changed_at=row.stage_changed_at,
            unsubscribed_at=row.unsubscribed_at, bounced_at=row.bounced_at, scored=[],
        )
        self.leads[row.email] = state
        self.by_id[int(row.id)] = state
        return state

    def load_history(self) -> None:
        """Load the scored history of every lead of the batch in one go."""
        history = scored_events(self.conn, sorted(self.by_id))
        for lead_id, scored in history.items():
            self.by_id[lead_id].scored = scored

    def record(self, index: int, event: EventIn, known: dict[str, tuple[int, float]]) -> EventResult:
        """Write one event and its consequences; a repeated id is a duplicate and changes nothing."""
        if event.id is not None and event.id in known:
            lead_id, points = known[event.id]
            return self._duplicate(index, event, lead_id, points)
        lead = self.leads[event.email]
        engagement = _as_engagement(event)
        if event.dedupe_within is not None:
            burst = self._burst(lead, event)
            if burst is not None:
                return self._duplicate(index, event, lead.id, burst)
        points, _why = event_points(self.rules, engagement, lead.scored_on(event.type, utc_day(engagement.at)))
        inserted = self.conn.execute(self.sql.insert_event, dict(
            lead_id=lead.id, type=event.type, occurred_at=engagement.at, recorded_at=self.now, external_id=event.id,
            campaign_id=event.campaign_id, step_key=event.step_key, delivery_id=event.delivery_id,
            properties=dict(event.properties), points=points,
        )).first()
        if inserted is None:  # recorded by a concurrent batch since we looked
            existing = self.conn.execute(
                select(EV.c.lead_id, EV.c.points).where(EV.c.external_id == event.id)
            ).one()
            known[event.id or ""] = (existing.lead_id, float(existing.points))
            return self._duplicate(index, event, existing.lead_id, float(existing.points))
        if event.id is not None:
            known[event.id] = (lead.id, points)
        lead.recorded = lead.dirty = True
        lead.recorded_types.add(event.type)
        if points:
            lead.scored.append((engagement, points))
        self._consequences(lead, event)
        changed = self.rescore(lead, engagement)
        return EventResult(index, RECORDED, lead.row.email, event.type, event.id, points, lead.score, lead.stage, changed)

    def _burst(self, lead: _LeadState, event: EventIn) -> float | None:
        """The points of an event this one repeats within its dedupe window, None if it is new."""
        assert event.occurred_at is not None and event.dedupe_within is not None
        query = select(EV.c.properties, EV.c.points).where(
            EV.c.lead_id == lead.id, EV.c.type == event.type,
            EV.c.occurred_at >= event.occurred_at - event.dedupe_within,
            EV.c.occurred_at <= event.occurred_at + event.dedupe_within,
        )
        if event.delivery_id is None:
            query = query.where(EV.c.delivery_id.is_(None))
        else:
            query = query.where(EV.c.delivery_id == event.delivery_id)
        url = event.properties.get("url")
        for row in self.conn.execute(query):
            if (row.properties or {}).get("url") == url:
                return float(row.points)
        return None

    def _duplicate(self, index: int, event: EventIn, lead_id: int, points: float) -> EventResult:
        lead = self.by_id.get(lead_id)
        if lead is not None:
            return EventResult(index, DUPLICATE, lead.row.email, event.type, event.id, points, lead.score, lead.stage,
                               False)
        row = self.conn.execute(select(L.c.email, L.c.score, L.c.stage).where(L.c.id == lead_id)).one()
        return EventResult(index, DUPLICATE, row.email, event.type, event.id, points, float(row.score), row.stage, False)

    def _consequences(self, lead: _LeadState, event: EventIn) -> None:
        """Suppression, goal exits and waking the enrollments that wait for this event type."""
        at = event.occurred_at
        assert at is not None
        reason = SUPPRESSION_REASONS.get(event.type)
        if reason is not None:
            if event.type == UNSUBSCRIBE and lead.unsubscribed_at is None:
                lead.unsubscribed_at = at
            elif event.type in (BOUNCE, COMPLAINT) and lead.bounced_at is None:
                lead.bounced_at = at
            exit_enrollments(self.conn, lead.id, reason, self.now)
            return
        goal_of = self.goals.get(event.type)
        if goal_of:
            # Only enrollments that began before the event: a late-arriving old event does not end a newer enrollment.
            reached = self.conn.execute(
                select(E.c.campaign_id).where(
                    E.c.lead_id == lead.id, E.c.status == "active", E.c.campaign_id.in_(goal_of), E.c.enrolled_at <= at
                )
            ).scalars().all()
            if reached:
                exit_enrollments(self.conn, lead.id, f"goal:{event.type}", self.now, campaign_ids=reached)
        if event.type in self.awaited:  # only a wait_for step sets an enrollment's waiting_for
            wake_waiting(self.conn, lead.id, event.type, at)

    def rescore(self, lead: _LeadState, event: Engagement | None = None) -> bool:
        """Recompute the lead's score; scoring may make it an MQL, then the sales rules an SQL (with its handoff) or
        disqualified (:func:`nurture.storage.promotion.after_rescore`). True when its stage changed."""
        view = lead.view()
        if lead.fit is None:
            lead.fit = fit_items(self.rules, view)
        breakdown = score(self.rules, view, lead.scored, self.now, fit=lead.fit)
        lead.score = breakdown.total
        changed = False
        decision = stage_after_scoring(self.rules, lead.stage, breakdown)
        if decision is not None and decision[0] != lead.stage and not promotion.recycling(
                lead.stage, lead.row.fields, self.now):  # sales said "not now": it waits out recycle_after
            self.move(lead, decision[0], decision[1], actor="rule")
            changed = True
        return promotion.after_rescore(self, lead, breakdown, event) or changed

    def move(self, lead: _LeadState, stage: str, reason: str, *, actor: str) -> int:
        """Move the lead to ``stage`` (with its history row) and end the campaigns that stage exits; return the
        history row's id."""
        change_id = self.conn.execute(self.sql.insert_stage_change_id, dict(
            lead_id=lead.id, from_stage=lead.stage, to_stage=stage, at=self.now, reason=reason, actor=actor,
        )).scalar_one()
        lead.stage, lead.stage_changed_at = stage, self.now
        lead.stage_changed = lead.dirty = True
        exits = [c.id for c in self.catalog.campaigns.values() if stage in c.exit.stages]
        if exits:
            exit_enrollments(self.conn, lead.id, f"stage:{stage}", self.now, campaign_ids=exits)
        return int(change_id)

    def finish(self) -> None:
        """Write every changed lead back (one statement for the batch)."""
        rows = [
            dict(b_id=lead.id, b_score=lead.score, b_stage=lead.stage, b_stage_changed_at=lead.stage_changed_at,
                 b_unsubscribed_at=lead.unsubscribed_at, b_bounced_at=lead.bounced_at, b_updated_at=self.now)
            for lead in self.by_id.values() if lead.dirty
        ]
        if rows:
            self.conn.execute(self.sql.update_lead, rows)

    def to_enroll(self, *, include_unchanged: bool = False) -> list[int]:
        """Leads that may enter a campaign now: created, moved to another stage, or with a new event of a type an
        entry filter reads (``had_event``). Other events change nothing that entry depends on: no second
        transaction for them."""
        campaigns = [c for c in self.catalog.campaigns.values() if not c.paused]
        entry_stages = {s for c in campaigns for s in c.entry.stages()}
        entry_events = {t for c in campaigns if c.entry.where and c.entry.where.had_event for t in c.entry.where.had_event}
        return sorted(
            lead.id for lead in self.by_id.values()
            if (include_unchanged or lead.created or lead.stage_changed or lead.recorded_types & entry_events)
            and lead.stage in entry_stages
            and lead.unsubscribed_at is None and lead.bounced_at is None
        )


def _retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def record_events(
    engine: Engine, catalog: Catalog, rules: ScoringRules, events: Sequence[EventIn], *, now: datetime, actor: str,
    sales: SalesRules | None = None, handoff: Handoff | None = None,
) -> list[EventResult]:
    """Record a batch of events and their consequences in one transaction; return one result per event, in order.

    With ``sales`` rules, a lead may become an SQL (or be disqualified) in the same transaction, its handoff queued in
    the outbox with ``handoff``'s signed links (see :mod:`nurture.storage.promotion`).

    Every event is validated first: one bad event rejects the whole batch with :class:`InvalidEvents` (naming each
    bad item by its index) and nothing is written. A client ``id`` seen before makes the event a ``duplicate`` that
    changes nothing. New and promoted leads are enrolled in the campaigns they now match in the same transaction.
    """
    if actor not in STAGE_ACTORS:
        raise ValueError(f"unknown actor {actor!r}")
    cleaned = clean_events(events, now)
    if not cleaned:
        return []
    for attempt in range(_RETRIES):
        try:
            with transaction(engine) as conn:
                batch = _Batch(conn, catalog, rules, now, actor, sales=sales, handoff=handoff)
                known = batch.prepare(cleaned)
                batch.load_history()
                results = [batch.record(index, event, known) for index, event in enumerate(cleaned)]
                batch.finish()
                created = enroll_in_transaction(conn, catalog, batch.to_enroll(), now)
            break
        except DBAPIError as exc:
            if attempt + 1 == _RETRIES or not _retryable(exc):
                raise
            log.info("event batch hit a %s; retrying", type(exc.orig).__name__)
    recorded = [r for r in results if r.status == RECORDED]
    log.info("recorded %d event(s), %d duplicate(s); types: %s", len(recorded), len(results) - len(recorded),
             ", ".join(sorted({r.type for r in recorded})) or "-")
    if created:
        log.info("enrolled %d lead(s) after recording events", created)
    return results


# --- leads through the API ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedLead:
    """What :func:`save_lead` did."""

    email: str
    created: bool
    stage: str
    score: float
    stage_changed: bool
    enrolled: int


def save_lead(
    engine: Engine, catalog: Catalog, rules: ScoringRules, data: Mapping[str, Any], *, now: datetime, actor: str,
    sales: SalesRules | None = None, handoff: Handoff | None = None,
) -> SavedLead:
    """Create or update a lead (fields as :func:`nurture.storage.leads.clean_lead_data` accepts them) and rescore it.

    The fields are written by :func:`nurture.storage.leads.upsert_lead` (an explicit stage is recorded with
    ``actor``); then the new score, fit points included, may promote the lead (to MQL; with ``sales`` rules to SQL,
    or disqualify it, as :func:`record_events` does). A stage that a campaign exits on ends that enrollment at once.
    After the commit the lead is enrolled in every campaign it now matches.
    """
    if actor not in STAGE_ACTORS:
        raise ValueError(f"unknown actor {actor!r}")
    email = clean_lead_data(data)["email"]  # InvalidInput before any transaction
    for attempt in range(_RETRIES):
        try:
            with session(engine) as orm_session:
                conn = orm_session.connection()
                before = conn.execute(select(L.c.stage).where(L.c.email == email).with_for_update()).scalar()
                upsert_lead(orm_session, data, actor=actor, now=now)
                batch = _Batch(conn, catalog, rules, now, actor, sales=sales, handoff=handoff)
                lead = batch.track(conn.execute(select(L).where(L.c.email == email)).one(), before is None)
                if before is not None and lead.stage != before:
                    lead.stage_changed = True
                    exits = [c.id for c in catalog.campaigns.values() if lead.stage in c.exit.stages]
                    if exits:
                        exit_enrollments(conn, lead.id, f"stage:{lead.stage}", now, campaign_ids=exits)
                batch.load_history()
                batch.rescore(lead)
                lead.dirty = True
                batch.finish()
                enrolled = enroll_in_transaction(conn, catalog, batch.to_enroll(include_unchanged=True), now)
            break
        except DBAPIError as exc:
            if attempt + 1 == _RETRIES or not _retryable(exc):
                raise
    return SavedLead(email, before is None, lead.stage, lead.score, lead.stage_changed, enrolled)
