"""The outbox's queries: enqueue a notification inside the caller's transaction, claim due rows, mark the outcomes.

A row is ``pending`` until it is delivered (``sent``) or given up on (``failed``). While a worker sends it, it carries a
lease (``lease_until``); a worker that dies leaves the lease to expire and the row is claimed again — the receiver
may then see the same notification twice, with the same event id. Each function except :func:`enqueue` is one short
transaction of its own; none is held across network I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.engine import Connection, Engine

from nurture.storage.database import transaction
from nurture.storage.dialect import for_update_skip_locked, upsert_insert
from nurture.storage.tables import O


def enqueue(conn: Connection, *, kind: str, dedup_key: str, payload: dict[str, Any], now: datetime) -> bool:
    """Queue a notification in the caller's transaction, due at ``now``; False when ``dedup_key`` is queued already.

    Call it in the transaction that decides the notification (``with transaction(engine) as conn``, or an ORM
    session's ``session.connection()``): it is sent if and only if that transaction commits.
    """
    statement = (
        upsert_insert(O, conn.dialect)
        .values(kind=kind, dedup_key=dedup_key, payload=payload, status="pending", attempts=0,
                next_attempt_at=now, created_at=now)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(O.c.id)
    )
    return conn.execute(statement).first() is not None


def row_due(now: Any) -> list[Any]:
    """The conditions of a row a claim at ``now`` would take (a datetime, or a bound parameter)."""
    return [O.c.status == "pending", or_(O.c.next_attempt_at.is_(None), O.c.next_attempt_at <= now),
            or_(O.c.lease_until.is_(None), O.c.lease_until < now)]


def claim(engine: Engine, now: datetime, *, limit: int, lease: timedelta) -> list[Any]:
    """Lease up to ``limit`` pending rows that are due at ``now`` and not leased by a live worker; return them.

    Rows whose lease expired (their worker died mid-batch) are claimable again. On PostgreSQL concurrent claimers
    skip each other's rows (``FOR UPDATE SKIP LOCKED``); on SQLite the write lock serializes them.
    """
    due = select(O.c.id).where(*row_due(now)).order_by(O.c.next_attempt_at, O.c.id)
    with transaction(engine, read_only=True) as conn:
        if conn.execute(due.limit(1)).first() is None:
            return []  # idle: a snapshot read, so polling never takes the write lock intake needs
    with transaction(engine) as conn:
        ids = [row.id for row in conn.execute(for_update_skip_locked(due.limit(limit), conn.dialect))]
        if not ids:
            return []
        conn.execute(update(O).where(O.c.id.in_(ids)).values(lease_until=now + lease))
        return list(conn.execute(select(O).where(O.c.id.in_(ids)).order_by(O.c.id)))


@dataclass(frozen=True)
class OutboxOutcome:
    """What became of one claimed row.

    ``status``: ``sent``; ``pending`` (try again at ``next_attempt_at``); ``failed`` (given up, ``error`` says why);
    ``released`` (not attempted this time: the lease is dropped, nothing else changes).
    """

    id: int
    status: str
    attempts: int
    error: str | None = None
    next_attempt_at: datetime | None = None


def mark(engine: Engine, now: datetime, outcomes: list[OutboxOutcome]) -> None:
    """Record a batch of outcomes in one transaction and drop their leases.

    Only ``pending`` rows change: if another worker took a row over after this one's lease expired and already
    recorded it as sent or failed, that record stands.
    """
    attempted = [o for o in outcomes if o.status != "released"]
    released = [o.id for o in outcomes if o.status == "released"]
    with transaction(engine) as conn:
        if attempted:
            conn.execute(
                update(O)
                .where(O.c.id == bindparam("o_id"), O.c.status == "pending")
                .values(status=bindparam("new_status"), attempts=bindparam("new_attempts"),
                        last_error=bindparam("new_error"), next_attempt_at=bindparam("new_next"),
                        sent_at=bindparam("new_sent_at"), lease_until=None),
                [
                    dict(o_id=o.id, new_status=o.status, new_attempts=o.attempts, new_error=o.error,
                         new_next=o.next_attempt_at if o.status == "pending" else None,
                         new_sent_at=now if o.status == "sent" else None)
                    for o in attempted
                ],
            )
        if released:
            conn.execute(update(O).where(O.c.id.in_(released), O.c.status == "pending").values(lease_until=None))


def pending_count(engine: Engine) -> int:
    """How many notifications wait to be delivered (due or not)."""
    with transaction(engine, read_only=True) as conn:
        return int(conn.execute(select(func.count()).select_from(O).where(O.c.status == "pending")).scalar_one())


def next_attempt(engine: Engine) -> datetime | None:
    """When the earliest pending notification is due (None when nothing is pending)."""
    with transaction(engine, read_only=True) as conn:
        return conn.execute(select(func.min(O.c.next_attempt_at)).where(O.c.status == "pending")).scalar()
