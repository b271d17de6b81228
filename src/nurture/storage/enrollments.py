"""Enrollments' queries: the leads a campaign may take (set-based, in chunks), what the re-entry and entry rules read,
new enrollments, early ends and wake-ups.

Who enters which campaign is decided in :mod:`nurture.application.enroll`; the re-entry policy also appears here as
SQL (:func:`_not_enrolled`), so a sweep over every lead filters in the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, literal_column, or_, select, text, update
from sqlalchemy.engine import Connection

from nurture.core.facts import Engagement
from nurture.definitions.campaign import Campaign
from nurture.storage.dialect import upsert_insert
from nurture.storage.tables import E, EV, L

CHUNK = 2000


def _not_enrolled(campaign: Campaign, now: datetime) -> Any:
    """SQL: the lead has no enrollment that the re-entry policy says blocks a new one."""
    mine = and_(E.c.lead_id == L.c.id, E.c.campaign_id == campaign.id)
    policy = campaign.reentry
    if policy.policy == "always":
        blocking = and_(mine, E.c.status == "active")
    elif policy.policy == "after" and policy.after is not None:
        blocking = and_(mine, or_(E.c.status == "active", E.c.ended_at > now - policy.after.as_timedelta()))
    else:
        blocking = mine
    return ~exists().where(blocking)


def candidates(conn: Connection, campaign: Campaign, now: datetime, *, after_id: int,
               lead_ids: Sequence[int] | None = None) -> list[Any]:
    """Up to :data:`CHUNK` lead rows with ids above ``after_id`` (in id order) that may enter the campaign as far as
    SQL can tell: an entry stage, neither unsubscribed nor bounced, not kept out by the re-entry policy."""
    query = (
        select(L)
        .where(
            L.c.id > after_id,
            L.c.stage.in_(campaign.entry.stages()),
            L.c.unsubscribed_at.is_(None),
            L.c.bounced_at.is_(None),
            _not_enrolled(campaign, now),
        )
        .order_by(L.c.id)
        .limit(CHUNK)
    )
    if lead_ids is not None:
        query = query.where(L.c.id.in_(list(lead_ids)))
    return list(conn.execute(query))


def events_since_last_entry(conn: Connection, campaign_id: str, lead_ids: Sequence[int]) -> dict[int, list[Engagement]]:
    """Each lead's events since it last entered this campaign (all of them if it never did).

    So a ``had_event`` entry filter on a campaign that allows re-entry needs a new event for each new entry.
    """
    last_entry = dict(
        conn.execute(
            select(E.c.lead_id, func.max(E.c.enrolled_at))
            .where(E.c.campaign_id == campaign_id, E.c.lead_id.in_(list(lead_ids)))
            .group_by(E.c.lead_id)
        ).all()
    )
    found: dict[int, list[Engagement]] = {}
    rows = conn.execute(select(EV.c.lead_id, EV.c.type, EV.c.occurred_at).where(EV.c.lead_id.in_(list(lead_ids))))
    for row in rows:
        since = last_entry.get(row.lead_id)
        if since is None or row.occurred_at > since:
            found.setdefault(row.lead_id, []).append(Engagement(row.type, row.occurred_at))
    return found


def leads(conn: Connection, lead_ids: Sequence[int]) -> list[Any]:
    """The rows of these leads."""
    return list(conn.execute(select(L).where(L.c.id.in_(list(lead_ids)))))


def past_enrollments(conn: Connection, lead_ids: Sequence[int]) -> dict[tuple[int, str], list[Any]]:
    """(lead id, campaign id) -> the lead's enrollments in it (``status``, ``ended_at``, ``enrolled_at``)."""
    past: dict[tuple[int, str], list[Any]] = {}
    for row in conn.execute(
        select(E.c.lead_id, E.c.campaign_id, E.c.status, E.c.ended_at, E.c.enrolled_at).where(E.c.lead_id.in_(list(lead_ids)))
    ):
        past.setdefault((row.lead_id, row.campaign_id), []).append(row)
    return past


def events(conn: Connection, lead_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Lead id -> its events (``type``, ``occurred_at``)."""
    found: dict[int, list[Any]] = {}
    for row in conn.execute(select(EV.c.lead_id, EV.c.type, EV.c.occurred_at).where(EV.c.lead_id.in_(list(lead_ids)))):
        found.setdefault(row.lead_id, []).append(row)
    return found


def insert(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert new active enrollments (one statement); one that is active already is skipped. Returns how many were
    created."""
    statement = upsert_insert(E, conn.dialect).on_conflict_do_nothing(
        index_elements=["lead_id", "campaign_id"], index_where=text("status = 'active'")
    )
    return len(conn.execute(statement.returning(E.c.id), rows).all())  # rowcount is -1 for executemany on psycopg


def exit_enrollments(conn: Connection, lead_id: int, reason: str, now: datetime, *, campaign_ids: Iterable[str] | None = None) -> int:
    """End a lead's active enrollments at once (unsubscribe, promotion, disqualification); return how many."""
    query = update(E).where(E.c.lead_id == lead_id, E.c.status == "active")
    if campaign_ids is not None:
        query = query.where(E.c.campaign_id.in_(list(campaign_ids)))
    result = conn.execute(
        query.values(status="exited", ended_at=now, end_reason=reason, next_due_at=None, waiting_for=None)
    )
    return result.rowcount or 0


_WAKE = (update(E).where(E.c.lead_id == bindparam("w_lead_id"), E.c.status == literal_column("'active'"),
                         E.c.waiting_for == bindparam("w_type")).values(next_due_at=bindparam("w_at")))


def wake_all(conn: Connection, wakes: list[dict[str, Any]]) -> None:
    """For each of ``wakes`` in order (keys ``w_lead_id``, ``w_type``, ``w_at``), in one statement: make the lead's
    enrollments that wait for that event type due at that time (the engine checks the event itself)."""
    conn.execute(_WAKE, wakes)
