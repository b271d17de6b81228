"""The dispatcher's queries: claim due enrollments, load what the engine needs, write its decisions, track deliveries.

Each function is one short transaction; none is held across rendering or network I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from nurture.core.facts import Engagement, History, LeadView, Send
from nurture.storage.database import transaction
from nurture.storage.dialect import (
    dispatch_writer,
    for_update_skip_locked,
    in_ids,
    lock_for_claim,
    not_in_ids,
    upsert_insert,
)
from nurture.storage.rows import LEAD_COLUMNS, VIEW_COLUMNS, lead_view
from nurture.storage.tables import D, E, EV, L, O, SO

# Lists of ids are bound as one parameter (:func:`nurture.storage.dialect.in_ids`): the statement compiles once
# (cached), not once per value, and on PostgreSQL its text is the same for every length of list.

_LEASED = E.alias("leased")

def _lead_not_leased(now: datetime) -> Any:
    """No enrollment of the row's lead is leased (by a live lease) right now.

    A worker that claimed one of a lead's enrollments may not have written the email it decided yet: until it has
    (its lease is released then, in the same transaction as the delivery row), another worker claiming the lead's
    other enrollments would not see that email, and the frequency cap would let both go. So a lead is claimed by one
    worker at a time; its other enrollments wait a moment and then see the email the cap counts. An enrollment that
    ended while leased (intake: a goal, an unsubscribe) sends nothing more and holds nothing.
    """
    return ~exists().where(_LEASED.c.lead_id == E.c.lead_id, _LEASED.c.status == "active",
                           _LEASED.c.lease_until >= now)


def claim_due_enrollments(
    engine: Engine, now: datetime, *, limit: int, owner: str, lease: timedelta, campaign_ids: Iterable[str]
) -> list[Any]:
    """Lease up to ``limit`` active enrollments due at ``now`` whose leads no live worker holds; return their rows.

    A lead's due enrollments are claimed together, and only while none of its enrollments is leased
    (:func:`_lead_not_leased`), so the frequency cap holds across workers. Claims are serialized: SQLite's write lock
    does it, on PostgreSQL an advisory lock (:func:`nurture.storage.dialect.lock_for_claim`), so that a claim sees the
    leases of the one before.
    """
    with transaction(engine) as conn:
        lock_for_claim(conn)
        ids_query = (
            select(E.c.id)
            .where(
                E.c.status == "active",
                E.c.next_due_at <= now,
                E.c.campaign_id.in_(list(campaign_ids)),
                or_(E.c.lease_until.is_(None), E.c.lease_until < now),
                _lead_not_leased(now),
            )
            .order_by(E.c.next_due_at)
            .limit(limit)
        )
        ids = [row.id for row in conn.execute(for_update_skip_locked(ids_query, conn.dialect))]
        if not ids:
            return []
        dialect = conn.dialect
        # The same leads' other due enrollments come along, so the engine sees all that compete for a lead's
        # frequency cap at once and lets the highest priority go first (not whichever fell due a moment earlier).
        lead_ids = [row.lead_id for row in conn.execute(
            select(E.c.lead_id).where(in_ids(E.c.id, "ids", dialect)).distinct(), {"ids": ids})]
        siblings = (
            select(E.c.id)
            .where(
                in_ids(E.c.lead_id, "lead_ids", dialect),
                E.c.status == "active",
                E.c.next_due_at <= now,
                E.c.campaign_id.in_(list(campaign_ids)),
                or_(E.c.lease_until.is_(None), E.c.lease_until < now),
                not_in_ids(E.c.id, "ids", dialect),
            )
        )
        ids += [row.id for row in conn.execute(for_update_skip_locked(siblings, dialect),
                                                {"ids": ids, "lead_ids": lead_ids})]
        conn.execute(update(E).where(in_ids(E.c.id, "ids", dialect)).values(lease_until=now + lease, lease_owner=owner),
                     {"ids": ids})
        return list(conn.execute(select(E).where(in_ids(E.c.id, "ids", dialect))
                                 .order_by(E.c.lead_id, E.c.priority.desc()), {"ids": ids}).all())


@dataclass
class LeadFacts:
    """A lead and its history as the engine needs them (sends accumulate while a batch is decided)."""

    lead: LeadView
    events: list[Engagement] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)

    def history(self) -> History:
        """The engine's view of this lead's history."""
        return History(self.events, self.sends)


_VIEW = tuple(L.c[name] for name in VIEW_COLUMNS)  # a dispatch batch reads its leads as views only


def _chunks(values: Sequence[Any], size: int = 900) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def load_facts(engine: Engine, lead_ids: Sequence[int], events_since: datetime) -> dict[int, LeadFacts]:
    """Leads, their engagement since ``events_since`` and every nurture email they were sent or are being sent."""
    facts: dict[int, LeadFacts] = {}
    with transaction(engine, read_only=True) as conn:
        dialect = conn.dialect
        for chunk in _chunks(list(lead_ids)):
            # .all(): the driver's fetchall loads the rows in one call, iterating calls its fetchone per row
            for row in conn.execute(select(*_VIEW).where(in_ids(L.c.id, "ids", dialect)), {"ids": chunk}).all():
                facts[row.id] = LeadFacts(lead_view(row))
            events = conn.execute(
                select(EV.c.lead_id, EV.c.type, EV.c.occurred_at, EV.c.campaign_id, EV.c.step_key, EV.c.properties)
                .where(in_ids(EV.c.lead_id, "ids", dialect), EV.c.occurred_at >= events_since)
                .order_by(EV.c.occurred_at),
                {"ids": chunk},
            ).all()
            for ev in events:
                facts[ev.lead_id].events.append(
                    Engagement(ev.type, ev.occurred_at, ev.campaign_id, ev.step_key, ev.properties or {})
                )
            sends = conn.execute(
                select(D.c.lead_id, D.c.campaign_id, D.c.step_key, D.c.sent_at, D.c.created_at).where(
                    in_ids(D.c.lead_id, "ids", dialect), D.c.channel == "email",
                    D.c.status.in_(("claimed", "sent", "retry")),
                ),
                {"ids": chunk},
            ).all()
            for s in sends:
                content = s.step_key.split("/", 1)[1] if "/" in s.step_key else None
                facts[s.lead_id].sends.append(Send(s.sent_at or s.created_at, s.campaign_id, s.step_key, content))
    return facts


@dataclass
class EnrollmentUpdate:
    """What the engine decided for one enrollment."""

    id: int
    step_id: str | None
    arrived_at: datetime
    state: dict[str, Any]
    next_due_at: datetime | None
    waiting_for: str | None
    ended: str | None
    outcomes: list[tuple[str, str, str, datetime]] = field(default_factory=list)  # (step, outcome, detail, at)


@dataclass
class NewDelivery:
    """A message to create (and then send) for an enrollment step."""

    enrollment_id: int
    lead_id: int
    campaign_id: str
    step_id: str
    step_key: str
    variant: str | None
    message_id: str
    channel: str = "email"
    campaign_version: str | None = None  # the version of the campaign that decided it


@dataclass
class LeadChange:
    """Field and tag changes an ``update`` step makes."""

    lead_id: int
    set: dict[str, Any]
    add_tags: list[str]
    remove_tags: list[str]


def write_decisions(
    engine: Engine,
    now: datetime,
    *,
    enrollments: list[EnrollmentUpdate],
    deliveries: list[NewDelivery],
    lead_changes: list[LeadChange],
    outbox: list[dict[str, Any]],
    lease: timedelta,
    owner: str,
    then: Callable[[Connection], object] | None = None,
) -> list[Any]:
    """In one transaction: create the deliveries (leased for sending), advance the enrollments, release their lease;
    ``then`` runs last in the same transaction (the leads an update step changed are enrolled with the change).

    Returns the created delivery rows. A delivery whose (enrollment, step) key exists already is not created again:
    that is what makes a step send at most once per enrollment.
    """
    with transaction(engine) as conn:
        # Intake may have ended an enrollment since the claim (a goal event, promotion to SQL, an unsubscribe):
        # such an enrollment keeps its end, and the email decided for it is not created.
        ids = [u.id for u in enrollments]
        writer = dispatch_writer(conn.dialect)
        mine = select(E.c.id, E.c.campaign_id).where(in_ids(E.c.id, "ids", conn.dialect), E.c.status == "active",
                                                      E.c.lease_owner == owner)
        campaign_ids = {row.id: row.campaign_id for chunk in _chunks(ids) for row in conn.execute(mine, {"ids": chunk})}
        still_mine = set(campaign_ids)
        enrollments = [u for u in enrollments if u.id in still_mine]
        deliveries = [d for d in deliveries if d.enrollment_id in still_mine]
        created: list[Any] = []
        if deliveries and writer is not None:
            created = writer.insert_deliveries(conn, [d.__dict__ for d in deliveries], lease_until=now + lease,
                                               created_at=now)
        elif deliveries:
            insert = upsert_insert(D, conn.dialect).on_conflict_do_nothing(index_elements=["enrollment_id", "step_key"])
            rows = [
                dict(enrollment_id=d.enrollment_id, lead_id=d.lead_id, campaign_id=d.campaign_id, step_id=d.step_id,
                     step_key=d.step_key, variant=d.variant, channel=d.channel, status="claimed", attempts=0,
                     lease_until=now + lease, message_id=d.message_id, created_at=now,
                     campaign_version=d.campaign_version)
                for d in deliveries
            ]
            created = list(conn.execute(insert.returning(*D.c), rows).all())
        if enrollments:
            advanced = [
                dict(e_id=u.id, step_id=u.step_id, arrived_at=u.arrived_at, state=u.state,
                     next_due_at=None if u.ended else u.next_due_at, waiting_for=None if u.ended else u.waiting_for,
                     status=("completed" if u.ended == "completed" else "exited") if u.ended else "active",
                     ended_at=now if u.ended else None, end_reason=u.ended)
                for u in enrollments
            ]
            if writer is not None:
                writer.update_enrollments(conn, advanced)
            else:
                conn.execute(
                    update(E).where(E.c.id == bindparam("e_id")).values(
                        step_id=bindparam("step_id"), arrived_at=bindparam("arrived_at"), state=bindparam("state"),
                        next_due_at=bindparam("next_due_at"), waiting_for=bindparam("waiting_for"),
                        status=bindparam("status"), ended_at=bindparam("ended_at"), end_reason=bindparam("end_reason"),
                        lease_until=None, lease_owner=None,
                    ),
                    advanced,
                )
        outcomes = [dict(enrollment_id=u.id, campaign_id=campaign_ids[u.id], step_id=step, outcome=outcome,
                         detail=detail, at=at) for u in enrollments for step, outcome, detail, at in u.outcomes]
        if outcomes:
            conn.execute(SO.insert(), outcomes)
        for change in lead_changes:
            _apply_lead_change(conn, change, now)
        if outbox:
            conn.execute(upsert_insert(O, conn.dialect).on_conflict_do_nothing(index_elements=["dedup_key"]), outbox)
        if then is not None:
            then(conn)
        return created


def _apply_lead_change(conn: Connection, change: LeadChange, now: datetime) -> None:
    row = conn.execute(select(L).where(L.c.id == change.lead_id)).one_or_none()
    if row is None:
        return
    values: dict[str, Any] = {"updated_at": now}
    custom = dict(row.fields or {})
    for name, value in change.set.items():
        if name in LEAD_COLUMNS or name in ("timezone",):
            values[name] = value
        else:
            custom[name] = value
    # tags match case-insensitively everywhere (entry filters, conditions), so they are removed that way too
    removed = {t.casefold() for t in change.remove_tags}
    tags = [t for t in (row.tags or []) if t.casefold() not in removed]
    present = {t.casefold() for t in tags}
    tags += [t for t in change.add_tags if t.casefold() not in present]
    values.update(fields=custom, tags=tags)
    conn.execute(update(L).where(L.c.id == change.lead_id).values(**values))


def release_enrollments(engine: Engine, ids: Sequence[int], *, owner: str) -> None:
    """Give leased enrollments back without changes (shutting down, or a batch that failed); only those ``owner``
    still holds: one whose lease ran out may be another worker's now, mid-batch."""
    with transaction(engine) as conn:
        for chunk in _chunks(list(ids)):
            conn.execute(update(E).where(in_ids(E.c.id, "ids", conn.dialect), E.c.lease_owner == owner)
                         .values(lease_until=None, lease_owner=None), {"ids": chunk})


def claim_deliveries_to_retry(
    engine: Engine, now: datetime, *, limit: int, lease: timedelta, campaign_ids: Iterable[str]
) -> list[Any]:
    """Lease deliveries due for another attempt, and claimed ones whose sender died (lease expired)."""
    with transaction(engine) as conn:
        query = (
            select(D.c.id)
            .where(
                D.c.channel == "email",
                D.c.campaign_id.in_(list(campaign_ids)),
                or_(
                    and_(D.c.status == "retry", D.c.next_attempt_at <= now),
                    and_(D.c.status == "claimed", D.c.lease_until < now),
                ),
            )
            .order_by(D.c.id)
            .limit(limit)
        )
        ids = [row.id for row in conn.execute(for_update_skip_locked(query, conn.dialect))]
        if not ids:
            return []
        conn.execute(update(D).where(in_ids(D.c.id, "ids", conn.dialect)).values(status="claimed", lease_until=now + lease),
                     {"ids": ids})
        return list(conn.execute(select(D).where(in_ids(D.c.id, "ids", conn.dialect)), {"ids": ids}).all())


def suppressed_leads(engine: Engine, lead_ids: Sequence[int]) -> set[int]:
    """Of these leads, the ones that must not be emailed (unsubscribed or bounced)."""
    found: set[int] = set()
    with transaction(engine, read_only=True) as conn:
        for chunk in _chunks(sorted(set(lead_ids))):
            found |= {
                row.id for row in conn.execute(
                    select(L.c.id).where(in_ids(L.c.id, "ids", conn.dialect),
                                         or_(L.c.unsubscribed_at.is_not(None), L.c.bounced_at.is_not(None))),
                    {"ids": chunk},
                )
            }
    return found


def exited_enrollments(engine: Engine, enrollment_ids: Sequence[int]) -> set[int]:
    """Of these enrollments, the ones that ended by exiting (their pending messages are not sent)."""
    found: set[int] = set()
    with transaction(engine, read_only=True) as conn:
        for chunk in _chunks(sorted(set(enrollment_ids))):
            found |= {row.id for row in conn.execute(
                select(E.c.id).where(in_ids(E.c.id, "ids", conn.dialect), E.c.status == "exited"), {"ids": chunk})}
    return found


@dataclass
class DeliveryOutcome:
    """The result of one send attempt."""

    id: int
    status: str  # sent | retry | failed | suppressed
    attempts: int
    error: str | None = None
    provider_message_id: str | None = None
    subject: str | None = None
    next_attempt_at: datetime | None = None


RECORD_ATTEMPTS = 5


def record_outcomes(engine: Engine, now: datetime, outcomes: list[DeliveryOutcome]) -> None:
    """Mark a batch of send attempts in one transaction.

    The messages went out already: if the database is busy (a long import holding SQLite's lock), try again a few
    times rather than leave them ``claimed``, which would send them again once their lease runs out.
    """
    if not outcomes:
        return
    for attempt in range(RECORD_ATTEMPTS):
        try:
            _record(engine, now, outcomes)
            return
        except OperationalError:
            if attempt + 1 == RECORD_ATTEMPTS:
                raise
            time.sleep(0.5 * 2**attempt)


def _record(engine: Engine, now: datetime, outcomes: list[DeliveryOutcome]) -> None:
    rows = [
        dict(d_id=o.id, status=o.status, attempts=o.attempts, error=o.error, provider_message_id=o.provider_message_id,
             subject=o.subject, next_attempt_at=o.next_attempt_at, sent_at=now if o.status == "sent" else None)
        for o in outcomes
    ]
    with transaction(engine) as conn:
        writer = dispatch_writer(conn.dialect)
        if writer is not None:
            writer.record_outcomes(conn, rows)
            return
        conn.execute(
            update(D).where(D.c.id == bindparam("d_id")).values(
                status=bindparam("status"), attempts=bindparam("attempts"), error=bindparam("error"),
                provider_message_id=bindparam("provider_message_id"), subject=bindparam("subject"),
                next_attempt_at=bindparam("next_attempt_at"), sent_at=bindparam("sent_at"), lease_until=None,
            ),
            rows,
        )


def enrollment_due(now: Any, campaign_ids: Iterable[str]) -> list[Any]:
    """The conditions of an enrollment a claim at ``now`` would take (a datetime, or a bound parameter)."""
    return [E.c.status == "active", E.c.next_due_at <= now, E.c.campaign_id.in_(list(campaign_ids)),
            or_(E.c.lease_until.is_(None), E.c.lease_until < now), _lead_not_leased(now)]


def delivery_due(now: Any, campaign_ids: Iterable[str]) -> list[Any]:
    """The conditions of a delivery due for another attempt at ``now``, or claimed by a sender whose lease ran out."""
    return [D.c.campaign_id.in_(list(campaign_ids)),
            or_(and_(D.c.status == "retry", D.c.next_attempt_at <= now),
                and_(D.c.status == "claimed", D.c.lease_until < now))]


def first_due(now: Any, campaign_ids: Iterable[str]) -> Any:
    """The id of the enrollment due first at ``now`` (a claim's conditions), in the order of the index on (status,
    next due time): a plan that cannot scan the whole table. Without an order, a planner whose statistics say most
    enrollments are due (none refreshed since they were all moved ahead) scans every row looking for one: 100 ms at
    400,000 enrollments on PostgreSQL, against 1 ms along the index."""
    return select(E.c.id).where(*enrollment_due(now, campaign_ids)).order_by(E.c.next_due_at).limit(1)


def anything_due(engine: Engine, now: datetime, campaign_ids: Iterable[str]) -> bool:
    """Whether a tick at ``now`` would find work: read-only (a snapshot on SQLite), so an idle worker never takes
    the write lock that intake needs."""
    with transaction(engine, read_only=True) as conn:
        enrollment = conn.execute(first_due(now, campaign_ids)).first()
        if enrollment is not None:
            return True
    return deliveries_due(engine, now, campaign_ids)


def deliveries_due(engine: Engine, now: datetime, campaign_ids: Iterable[str]) -> bool:
    """Whether a delivery is due for another attempt, or was claimed by a sender whose lease ran out (read-only)."""
    with transaction(engine, read_only=True) as conn:
        delivery = conn.execute(select(D.c.id).where(*delivery_due(now, campaign_ids)).limit(1)).first()
        return delivery is not None
