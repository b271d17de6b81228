"""Recording engagement: one transaction writes a batch of events and everything they cause.

For every event of a batch, in order: the event is written once (idempotent on its client ``id``), an unknown email
becomes a new lead, scoring gives the event its points, the lead's score is recomputed and may promote it,
suppression events (unsubscribe, bounce, spam complaint, and the soft bounce that makes ``policy.yaml``'s
``soft_bounces`` limit: :mod:`nurture.core.suppression`) end every enrollment, goal events end the campaigns that
list them, and enrollments waiting for that event type become due. All of it commits together or not at all;
nothing external happens inside the transaction. New leads and leads that may now match a campaign are enrolled in
the same transaction, at its end.

How a batch is written (a handful of statements per request, whatever its size): the client ids already recorded
are looked up at once; the batch's leads are read (and locked) at once, the unknown ones created with one insert;
the scored history of the known ones is read at once. Events are then worked through in order in memory: their rows
and the enrollment updates they cause are queued and written together (one insert for the rows, then the updates
in order) at the end, or earlier whenever something reads the database through :attr:`EventBatch.conn` (a promotion
building its brief, a stage change, a tracking-burst check), so every read sees the batch as it stands. Enrollment
updates go only to leads with an active enrollment when the batch began (no other lead can have one before the
batch enrolls at its end); leads are enrolled only when some campaign's stage and lead-field filters could let them in.

Scores: each lead's score keeps running sums per event type (:class:`nurture.core.scoring.ScoreAccumulator`), read
from the lead's score state (:mod:`nurture.core.score_state`) or, without a usable one, summed by the database (decay
included) and written back; either way the result is :func:`nurture.core.scoring.score` over the whole history.

Concurrency: the batch's leads are locked in email order at the start (``FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already serializes writers), so two batches touching one lead compute its score one after the
other. A deadlock or serialization failure reported by PostgreSQL retries the whole batch; so does a client id that
a concurrent batch recorded between our look-up and our insert (the retry finds it recorded: a duplicate), and a
connection lost before the COMMIT (nothing was written; a connection kept by its caller connects again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from nurture.application import batch_state, promote
from nurture.application.batch_state import NO_HISTORY, BatchLead, Committing, Wake, campaign_facts, capped_types
from nurture.application.enroll import enroll_in_transaction
from nurture.application.event_input import DUPLICATE, RECORDED, EventIn, EventResult, clean_events
from nurture.core import score_state
from nurture.core.conditions import filter_matches
from nurture.core.enrollment import recycle_pending
from nurture.core.facts import BOUNCE, COMPLAINT, UNSUBSCRIBE, Engagement
from nurture.core.scoring import (
    ScoreAccumulator,
    ScoreBreakdown,
    awarded_points,
    fit_items,
    half_life_seconds,
    stage_after_scoring,
    utc_day,
)
from nurture.core.suppression import SOFT_BOUNCE, soft_bounce_span, soft_bounces_suppress
from nurture.definitions.loader import Catalog
from nurture.definitions.sales import SalesRules
from nurture.definitions.scoring import ScoringRules
from nurture.handoff import Handoff
from nurture.storage.database import transaction
from nurture.storage.dialect import bulk_writer, is_retryable
from nurture.storage.enrollments import exit_enrollments
from nurture.storage.event_bulk import NURTURED, AlreadyRecorded
from nurture.storage.events import event_times, goal_reached, repeated_points
from nurture.storage.lead_rows import set_missing_attribution
from nurture.storage.lead_state import lead_summary, new_lead_row
from nurture.storage.vocabulary import STAGE_ACTORS

log = logging.getLogger(__name__)


SUPPRESSION_REASONS = {UNSUBSCRIBE: "unsubscribed", BOUNCE: "bounced", COMPLAINT: "spam_complaint"}
"""Event types that stop all email to the lead, and the end reason their enrollments get."""

RETRIES = 3  # attempts at a transaction PostgreSQL failed to break a deadlock or serialization conflict


class EventBatch:
    """One batch being recorded inside one transaction."""

    def __init__(self, conn: Connection, catalog: Catalog, rules: ScoringRules, now: datetime, actor: str, *,
                 sales: SalesRules | None = None, handoff: Handoff | None = None) -> None:
        self._conn, self.catalog, self.rules, self.now, self.actor = conn, catalog, rules, now, actor
        self.sales, self.handoff = sales, handoff
        self.look_up_ids = True
        """Whether :meth:`prepare` looks the client ids up; without, a recorded id shows when its insert is refused
        (:class:`AlreadyRecorded`), and the batch starts over with the look-up: one statement less for batches of
        new events, the usual case, and a second attempt for retried ones."""
        self.leads: dict[str, BatchLead] = {}
        self.by_id: dict[int, BatchLead] = {}
        self.bulk = bulk_writer(conn.dialect)
        self._rows: list[dict[str, Any]] = []  # event rows not written yet
        self._updates: list[Callable[[Connection], Any] | Wake | batch_state.StageMove] = []  # what follows those rows, in order
        self._attributions: list[dict[str, Any]] = []  # leads that take their source from an event's UTM properties
        self.campaigns = campaign_facts(catalog)
        self.half_life = half_life_seconds(rules)

    @property
    def conn(self) -> Connection:
        """The transaction's connection, once every queued event row and enrollment update is written: whatever
        reads through it (promotion, stage changes, burst checks) sees the batch as it stands."""
        self.flush()
        return self._conn

    def flush(self) -> None:
        """Write the queued event rows (one insert), then the enrollment updates they caused, in order.

        :class:`AlreadyRecorded` when a client id turns out recorded already (by an earlier request, when the
        batch did not look its ids up, or by a concurrent batch since it did): the caller starts over.
        """
        conn = self._conn
        if self._rows:
            rows, self._rows = self._rows, []
            self.bulk.insert_events(conn, rows)
        while self._updates:
            updates, self._updates = self._updates, []
            batch_state.write_updates(conn, self.bulk, updates)

    # Leads are locked (or created) in email order before anything else, so concurrent batches never deadlock on them.
    def prepare(self, events: Sequence[EventIn]) -> dict[str, tuple[int, float]]:
        """Find the client ids already recorded (when :attr:`look_up_ids`), then lock or create the leads of the
        other events."""
        known = self.known_ids({e.id for e in events if e.id is not None}) if self.look_up_ids else {}
        first_type: dict[str, str] = {}
        taken: set[str] = set()  # ids an earlier event of the batch records (unless a burst check drops it)
        for event in events:
            if event.id is not None and (event.id in known or event.id in taken):
                continue  # a repeat: it creates no lead
            if event.id is not None and event.dedupe_within is None:
                taken.add(event.id)
            first_type.setdefault(event.email, event.type)
        emails = sorted(first_type)
        found = self._lock_leads(emails)
        missing = [email for email in emails if email not in found]
        created = self.create_leads({email: f"created by a {first_type[email]} event" for email in missing})
        found.update(created)
        if len(found) < len(emails):  # created by a concurrent batch since we looked: lock theirs
            found.update(self._lock_leads([email for email in missing if email not in created]))
        for email in emails:
            self.track(found[email], email in created)
        return known

    def known_ids(self, ids: set[str]) -> dict[str, tuple[int, float]]:
        """Of these client ids, those recorded already, with their lead's id and their points."""
        return self.bulk.known_ids(self._conn, ids)

    def _lock_leads(self, emails: Sequence[str]) -> dict[str, Any]:
        return self.bulk.lock_leads(self._conn, emails) if emails else {}

    def create_leads(self, reasons: Mapping[str, str]) -> dict[str, Any]:
        """Insert leads at stage ``lead``, each with a first history row naming the actor and ``reasons[email]``;
        return the rows inserted by email (a lead a concurrent batch inserted first is theirs)."""
        if not reasons:
            return {}
        now = self.now
        rows = [dict(email=email, tags=[], fields={}, stage="lead", score=0.0, created_at=now, updated_at=now,
                     stage_changed_at=now) for email in sorted(reasons)]
        values = {row["email"]: row for row in rows}
        inserted = {email: new_lead_row(lead_id, values[email])
                    for email, lead_id in self.bulk.insert_leads(self._conn, rows).items()}
        if inserted:
            self.bulk.insert_stage_changes(self._conn, [
                dict(lead_id=inserted[email].id, from_stage=None, to_stage="lead", at=now, actor=self.actor,
                     reason=reasons[email])
                for email in sorted(inserted)
            ])
        return inserted

    def track(self, row: Any, created: bool) -> BatchLead:
        """Follow this lead's changes through the batch."""
        nurtured = getattr(row, NURTURED, None)
        state = BatchLead(
            row=row, created=created, stage=row.stage, score=float(row.score or 0), stage_changed_at=row.stage_changed_at,
            unsubscribed_at=row.unsubscribed_at, bounced_at=row.bounced_at,
            nurtured=not created and (nurtured is None or bool(nurtured)),
            behaviour=ScoreAccumulator.decaying(self.half_life, self.now),
        )
        self.leads[row.email] = state
        self.by_id[int(row.id)] = state
        return state

    def load_history(self, events: Sequence[EventIn] = ()) -> None:
        """Load what scoring needs of the history of every lead of the batch that existed before it: its scored events
        summed per type, and the counts the daily caps of ``events`` compare against. A lead's stored score state
        (:mod:`nurture.core.score_state`) answers both; the history is read (in one go for the batch's leads)
        only for leads without a state that can be used, and for cap counts of days older than the state keeps."""
        now, by_id = self.now, self.by_id
        window = score_state.window_start(now)
        half_life = self.half_life
        to_read: list[int] = []
        for lead in by_id.values():
            if lead.created:
                lead.counted_since = window  # no history: every count is known
                continue
            loaded = score_state.load(lead.row.score_state, now, half_life)
            if loaded is None:
                to_read.append(lead.id)
                continue
            loaded.add_to(lead.behaviour)
            if lead.caps:
                lead.caps.update(loaded.counts)
            else:  # what Counter.update does to an empty Counter, without its Python-level checks
                dict.update(lead.caps, loaded.counts)
            lead.counted_since = loaded.since
        capped = capped_types(self.rules)
        days = {utc_day(event.occurred_at) for event in events if event.type in capped and event.occurred_at}
        read = set(to_read)  # these leads' counts for the batch's days are read with their history
        if to_read:
            to_read.sort()
            for lead_id, event_type, points, raw, count, latest in self.bulk.scored_groups(
                    self._conn, to_read, now, half_life):
                by_id[lead_id].behaviour.add_group(event_type, points, raw, count, latest)
            # every type's counts over the window a state keeps (so the state can be written), and the batch's days
            window_days = {window + timedelta(days=offset) for offset in range(score_state.DAYS)}
            for lead_id, event_type, day, count in self.bulk.scored_counts(
                    self._conn, to_read, None, sorted(window_days | days)):
                by_id[lead_id].caps[(event_type, day)] = count
            for lead_id in to_read:
                by_id[lead_id].counted_since = window
        # a late event of a capped type, from a day before what its lead's state counts: that day's counts, read
        late: dict[int, set[date]] = {}
        for event in events:
            late_lead = self.leads.get(event.email)
            if (event.type in capped and event.occurred_at and late_lead is not None and not late_lead.created
                    and late_lead.counted_since is not None and late_lead.id not in read
                    and (day := utc_day(event.occurred_at)) < late_lead.counted_since):
                late.setdefault(late_lead.id, set()).add(day)
        if late:
            types = sorted({event.type for event in events if event.type in capped})
            for lead_id, event_type, day, count in self.bulk.scored_counts(
                    self._conn, sorted(late), types, sorted(set().union(*late.values()))):
                by_id[lead_id].caps[(event_type, day)] = count  # the database's count: right for any lead asked

    def run(self, events: Sequence[EventIn], known: dict[str, tuple[int, float]]) -> list[EventResult]:
        """Record every event in order and write what they cause; one result per event."""
        results = [self.record(index, event, known) for index, event in enumerate(events)]
        self.flush()
        return results

    def record(self, index: int, event: EventIn, known: dict[str, tuple[int, float]]) -> EventResult:
        """Queue one event and its consequences; a repeated id is a duplicate and changes nothing."""
        if event.id is not None and event.id in known:
            lead_id, points = known[event.id]
            return self._duplicate(index, event, lead_id, points)
        lead = self.leads[event.email]
        at = event.occurred_at
        assert at is not None
        engagement = Engagement(event.type, at, event.campaign_id, event.step_key, dict(event.properties))
        if event.dedupe_within is not None:
            burst = self._burst(lead, event)
            if burst is not None:
                return self._duplicate(index, event, lead.id, burst)
        day = utc_day(at)
        points = awarded_points(self.rules, engagement, lead.caps[(event.type, day)])
        self._rows.append(dict(
            lead_id=lead.id, type=event.type, occurred_at=at, recorded_at=self.now, external_id=event.id,
            campaign_id=event.campaign_id, step_key=event.step_key, delivery_id=event.delivery_id,
            properties=engagement.properties, points=points,
        ))
        if event.id is not None:
            known[event.id] = (lead.id, points)
        lead.recorded = lead.dirty = True
        lead.recorded_types.add(event.type)
        if (acquisition := lead.acquisition_from(engagement.properties)) is not None:
            self._attributions.append(acquisition)
            lead.source_given = True
        lead.add_scored(event.type, at, points, day)
        kind = event.type  # a soft bounce that reaches the policy's limit suppresses as a bounce does
        if kind == SOFT_BOUNCE and lead.bounced_at is None and self._soft_bounces_suppress(lead.id, at):
            kind = BOUNCE
        if lead.nurtured:
            self._consequences(lead, event, kind)
        elif kind in SUPPRESSION_REASONS:
            self._suppress(lead, kind, at)
        changed = self.rescore(lead, engagement)
        return EventResult(index, RECORDED, lead.row.email, event.type, event.id, points, lead.score, lead.stage, changed)

    def _burst(self, lead: BatchLead, event: EventIn) -> float | None:
        """The points of an event this one repeats within its dedupe window, None if it is new."""
        assert event.occurred_at is not None and event.dedupe_within is not None
        return repeated_points(self.conn, lead.id, event.type, event.occurred_at, event.dedupe_within,
                               event.delivery_id, event.properties.get("url"))

    def _duplicate(self, index: int, event: EventIn, lead_id: int, points: float) -> EventResult:
        lead = self.by_id.get(lead_id)
        if lead is not None:
            return EventResult(index, DUPLICATE, lead.row.email, event.type, event.id, points, lead.score, lead.stage,
                               False)
        row = lead_summary(self._conn, lead_id)
        return EventResult(index, DUPLICATE, row.email, event.type, event.id, points, float(row.score), row.stage, False)

    def _suppress(self, lead: BatchLead, event_type: str, at: datetime) -> None:
        if event_type == UNSUBSCRIBE and lead.unsubscribed_at is None:
            lead.unsubscribed_at = at
        elif event_type in (BOUNCE, COMPLAINT) and lead.bounced_at is None:
            lead.bounced_at = at

    def _soft_bounces_suppress(self, lead_id: int, at: datetime) -> bool:
        """Whether this soft bounce makes the policy's limit within its window (one read, this event's row written)."""
        rule = self.catalog.policy.soft_bounces
        within = rule.within.as_timedelta()
        times = event_times(self.conn, lead_id, SOFT_BOUNCE, *soft_bounce_span(at, within)) if rule.limit > 1 else [at]
        return soft_bounces_suppress(times, at, limit=rule.limit, within=within)

    def _consequences(self, lead: BatchLead, event: EventIn, kind: str) -> None:
        """Suppression (``kind``: the event's type, or ``bounce`` for the soft bounce that reached the limit), goal exits
        and waking the enrollments that wait for this event type (queued in order)."""
        at = event.occurred_at
        assert at is not None
        lead_id, now = lead.id, self.now
        reason = SUPPRESSION_REASONS.get(kind)
        if reason is not None:
            self._suppress(lead, kind, at)
            self._updates.append(lambda conn: exit_enrollments(conn, lead_id, reason, now))
            return
        goal_of = self.campaigns.goals.get(event.type)
        if goal_of:
            goal = f"goal:{event.type}"

            def reach(conn: Connection) -> None:
                # Only enrollments that began before the event: a late-arriving old event does not end a newer one.
                reached = goal_reached(conn, lead_id, goal_of, at)
                if reached:
                    exit_enrollments(conn, lead_id, goal, now, campaign_ids=reached)

            self._updates.append(reach)
        if event.type in self.campaigns.awaited:  # only a wait_for step sets an enrollment's waiting_for
            self._updates.append(Wake(lead_id, event.type, at))

    def rescore(self, lead: BatchLead, event: Engagement | None = None) -> bool:
        """Recompute the lead's score; scoring may make it an MQL, then the sales rules an SQL (with its handoff) or
        disqualified (:func:`nurture.application.promote.after_rescore`). True when its stage changed."""
        if lead.fit is None:
            lead.fit = fit_items(self.rules, lead.view())
        # the totals are what the decisions below read; the items only a promotion's brief does
        totals = lead.behaviour.totals(self.rules, lead.fit)
        lead.score = totals.total
        changed = False
        decision = stage_after_scoring(self.rules, lead.stage, totals)
        if decision is not None and decision[0] != lead.stage and not promote.recycling(
                lead.stage, lead.row.fields, self.now):  # sales said "not now": it waits out recycle_after
            self.move(lead, decision[0], decision[1], actor="rule", queued=True)
            changed = True
        if self.sales is None:
            return changed
        outcome = promote.after_rescore(self.sales, lead.view(), totals, event, fields=lead.row.fields,
                                        now=self.now, checks=lead.sales_checks(self.sales))
        if outcome is None:
            return changed
        return self._promotion(lead, outcome, lead.behaviour.breakdown(self.rules, lead.fit)) or changed

    def _promotion(self, lead: BatchLead, outcome: promote.Outcome, breakdown: ScoreBreakdown) -> bool:
        """Write what promotion decided (:func:`nurture.application.promote.after_rescore`); True when the lead's stage
        changed."""
        sales = self.sales
        assert sales is not None
        if outcome.stage is None:
            promote.refresh_pending(self.conn, lead.id, sales=sales, breakdown=breakdown,
                                    links=self.handoff.links if self.handoff is not None else None,
                                    campaign_names=promote.campaign_names(self.catalog), stage=lead.stage)
            return False
        assert outcome.decision is not None
        change_id = self.move(lead, outcome.stage, outcome.reason, actor="rule")
        assert change_id is not None  # not queued: promotion links its handoff to the history row
        if outcome.stage == promote.SQL:
            promote.promoted(self.conn, lead.view(), lead.id, change_id, outcome.decision, breakdown, sales=sales,
                             handoff=self.handoff, catalog=self.catalog, now=self.now)
        else:
            promote.disqualified(self.conn, lead.id, outcome.decision, self.now)
        return True

    def move(self, lead: BatchLead, stage: str, reason: str, *, actor: str, queued: bool = False) -> int | None:
        """Move the lead to ``stage`` (with its history row) and end the campaigns that stage exits; return the
        history row's id. ``queued``: the row may wait with the batch's other writes (its id is not returned), unless
        campaigns end."""
        row = dict(lead_id=lead.id, from_stage=lead.stage, to_stage=stage, at=self.now, reason=reason, actor=actor)
        exits = [c.id for c in self.catalog.campaigns.values() if stage in c.exit.stages]
        queued = queued and not (exits and lead.nurtured)
        change_id = None if queued else self.bulk.insert_stage_change(self.conn, row)
        if queued:
            self._updates.append(batch_state.StageMove(row))
        lead.stage, lead.stage_changed_at = stage, self.now
        lead.stage_changed = lead.dirty = True
        if stage == promote.SQL:
            lead.promoted = True
        if exits and lead.nurtured:
            exit_enrollments(self.conn, lead.id, f"stage:{stage}", self.now, campaign_ids=exits)
        return change_id

    def finish(self) -> None:
        """Write every changed lead back (one statement for the batch)."""
        self.flush()
        rows = [
            dict(b_id=lead.id, b_score=lead.score, b_stage=lead.stage, b_stage_changed_at=lead.stage_changed_at,
                 b_unsubscribed_at=lead.unsubscribed_at, b_bounced_at=lead.bounced_at, b_updated_at=self.now,
                 b_score_state=score_state.dump(lead.behaviour, lead.caps, lead.counted_since))
            for lead in self.by_id.values() if lead.dirty
        ]
        if rows:
            self.bulk.update_leads(self._conn, rows)
        if self._attributions:
            set_missing_attribution(self._conn, self._attributions)
            self._attributions = []

    def to_enroll(self, *, include_unchanged: bool = False) -> list[int]:
        """Leads that may enter a campaign now (created, moved to another stage, with a new event of a type an entry
        filter reads, a new score or source a filter tests) and, unless promoted here, passing some campaign's stage and
        lead-field filters. Other events change nothing that entry depends on."""
        entry_stages, entry_events = self.campaigns.entry_stages, self.campaigns.entry_events
        on_score = self.campaigns.entry_reads_score
        return sorted(
            lead.id for lead in self.by_id.values()
            if (include_unchanged or lead.created or lead.stage_changed or lead.recorded_types & entry_events
                or lead.source_given or (on_score and lead.score != float(lead.row.score or 0)))
            and lead.stage in entry_stages and lead.unsubscribed_at is None and lead.bounced_at is None
            and (lead.promoted or lead.source_given or self._may_enter(lead))  # source_given: its row is stale
        )

    def _may_enter(self, lead: BatchLead) -> bool:
        """Whether some campaign's stages and lead-field filters let the lead in (its history and past enrollments
        aside): a necessary condition of :func:`nurture.application.enroll.enroll_in_transaction` enrolling it."""
        if recycle_pending(lead.stage, lead.row.fields, self.now):
            return False
        view = lead.view()
        for stages, where in self.campaigns.entry_filters:
            if lead.stage in stages and filter_matches(where, view, NO_HISTORY):
                return True
        return False


def record_events(
    engine: Engine | Connection, catalog: Catalog, rules: ScoringRules, events: Sequence[EventIn], *, now: datetime,
    actor: str, sales: SalesRules | None = None, handoff: Handoff | None = None,
) -> list[EventResult]:
    """Record a batch of events and their consequences in one transaction; return one result per event, in order.

    ``engine`` may be a connection outside any transaction (:func:`nurture.storage.database.transaction`).

    With ``sales`` rules, a lead may become an SQL (or be disqualified) in the same transaction, its handoff queued in
    the outbox with ``handoff``'s signed links (see :mod:`nurture.application.promote`).

    Every event is validated first: one bad event rejects the whole batch with :class:`InvalidEvents` (naming each
    bad item by its index) and nothing is written. A client ``id`` seen before makes the event a ``duplicate`` that
    changes nothing. New and promoted leads are enrolled in the campaigns they now match in the same transaction.
    """
    if actor not in STAGE_ACTORS:
        raise ValueError(f"unknown actor {actor!r}")
    cleaned = clean_events(events, now)
    if not cleaned:
        return []
    return record_cleaned(engine, catalog, rules, cleaned, now=now, actor=actor, sales=sales, handoff=handoff)


def record_cleaned(
    engine: Engine | Connection, catalog: Catalog, rules: ScoringRules, cleaned: Sequence[EventIn], *, now: datetime,
    actor: str, sales: SalesRules | None = None, handoff: Handoff | None = None, committing: Committing | None = None,
) -> list[EventResult]:
    """:func:`record_events` for events cleaned already; ``committing`` (if given) is set once the statements all ran:
    an exception after that came from the COMMIT, and whether the batch was written is not known."""
    refused: set[str] = set()  # ids an insert found recorded already
    look_up = any(event.id is not None and event.dedupe_within is not None for event in cleaned)
    failures = refusals = 0
    committing = committing if committing is not None else Committing()
    while True:
        try:
            with transaction(engine) as conn:
                batch = EventBatch(conn, catalog, rules, now, actor, sales=sales, handoff=handoff)
                # A first attempt takes the ids for new; a burst check must not answer for an id recorded before.
                batch.look_up_ids = look_up
                known = batch.prepare(cleaned)
                if refused - known.keys():  # recorded by a concurrent batch since prepare looked
                    known.update(batch.known_ids(refused - known.keys()))
                batch.load_history(cleaned)
                results = batch.run(cleaned, known)
                batch.finish()
                created = enroll_in_transaction(conn, catalog, batch.to_enroll(), now)
                committing.now = True
            break
        except AlreadyRecorded as exc:
            refusals += 1
            if refusals > RETRIES:  # looked up after the leads were locked, and still refused
                raise RuntimeError("event ids refused by the database although not recorded") from None
            look_up = True
            refused |= exc.ids if exc.ids is not None else {event.id for event in cleaned if event.id is not None}
            log.debug("event batch holds id(s) recorded already; recording it again with its ids looked up")
        except DBAPIError as exc:
            failures += 1
            if failures == RETRIES or not (is_retryable(exc) or (exc.connection_invalidated and not committing.now)):
                raise
            log.info("event batch hit a %s; retrying", type(exc.orig).__name__)
    if log.isEnabledFor(logging.INFO):
        recorded = [r for r in results if r.status == RECORDED]
        log.info("recorded %d event(s), %d duplicate(s); types: %s", len(recorded), len(results) - len(recorded),
                 ", ".join(sorted({r.type for r in recorded})) or "-")
    if created:
        log.info("enrolled %d lead(s) after recording events", created)
    return results
