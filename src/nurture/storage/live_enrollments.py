"""The queries behind a campaign change: where a campaign's active enrollments wait (by version and step), how many an
exit change would end, and moving the enrollments of a removed step on (or ending them) when a new version comes into
force. What goes where is decided in :mod:`nurture.core.changes`; these only count and write."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, or_, select, union_all, update
from sqlalchemy.engine import Connection

from nurture.storage.dialect import without_parallel_workers
from nurture.storage.tables import E, EV, L


def _version_is(version: str | None) -> Any:
    return E.c.campaign_version.is_(None) if version is None else E.c.campaign_version == version


def waiting(conn: Connection, campaign_id: str) -> list[tuple[str | None, str | None, int]]:
    """(campaign version, step id, how many) of the campaign's active enrollments."""
    rows = conn.execute(
        select(E.c.campaign_version, E.c.step_id, func.count())
        .where(E.c.campaign_id == campaign_id, E.c.status == "active")
        .group_by(E.c.campaign_version, E.c.step_id)
    )
    return [(row[0], row[1], int(row[2])) for row in rows]


def waiting_elsewhere(conn: Connection, campaign_id: str, version: str,
                      steps: Sequence[str]) -> list[tuple[str | None, str | None, int]]:
    """:func:`waiting` for the campaign's active enrollments that are not under ``version`` at one of ``steps``:
    those under another version or none, and those under ``version`` at any other step or none (a worker with an
    older catalog can move an enrollment on to a step only that catalog has).

    Ranges of the index on (campaign, status, version, step): below ``version``, above it, without one, and under it
    the ranges of step ids around ``steps``; so it reads what it finds rather than every active enrollment of the
    campaign: at 400,000 active enrollments on PostgreSQL, under 5 ms where counting them all took 50-150 ms a
    campaign before a vacuum (every row read) and 40 ms after. A ``<>`` or an ``OR`` of the ranges was planned as a
    scan of the campaign's whole range."""
    where = (E.c.campaign_id == campaign_id, E.c.status == "active")
    ranges = [E.c.campaign_version < version, E.c.campaign_version > version, E.c.campaign_version.is_(None)]
    bounds = sorted(set(steps))
    at_version = E.c.campaign_version == version
    if not bounds:
        ranges.append(at_version)
    else:
        ranges.append(and_(at_version, E.c.step_id < bounds[0]))
        ranges += [and_(at_version, E.c.step_id > low, E.c.step_id < high) for low, high in pairwise(bounds)]
        ranges += [and_(at_version, E.c.step_id > bounds[-1]), and_(at_version, E.c.step_id.is_(None))]
    counted = union_all(*(
        select(E.c.campaign_version, E.c.step_id, func.count()).where(*where, in_range)
        .group_by(E.c.campaign_version, E.c.step_id) for in_range in ranges))
    with without_parallel_workers(conn):
        return [(row[0], row[1], int(row[2])) for row in conn.execute(counted)]


def exiting(conn: Connection, campaign_id: str, stages: Sequence[str], events: Sequence[str]) -> int:
    """How many of the campaign's active enrollments belong to a lead in one of ``stages``, or that recorded one of
    ``events`` since it enrolled: the enrollments an exit change ends."""
    if not stages and not events:
        return 0
    reasons = []
    if stages:
        reasons.append(exists().where(L.c.id == E.c.lead_id, L.c.stage.in_(list(stages))))
    if events:
        reasons.append(exists().where(EV.c.lead_id == E.c.lead_id, EV.c.type.in_(list(events)),
                                      EV.c.occurred_at >= E.c.enrolled_at))
    query = select(func.count()).select_from(E).where(E.c.campaign_id == campaign_id, E.c.status == "active",
                                                      or_(*reasons))
    return int(conn.execute(query).scalar_one())


def _at(campaign_id: str, version: str | None, step_id: str) -> Any:
    return and_(E.c.campaign_id == campaign_id, E.c.status == "active", _version_is(version), E.c.step_id == step_id)


def _with_note(conn: Connection, where: Any, note: dict[str, Any], values: dict[str, Any]) -> int:
    """Update the enrollments ``where`` selects with ``values``, adding ``note`` to each one's path; return how many."""
    rows = list(conn.execute(select(E.c.id, E.c.state).where(where)))
    if not rows:
        return 0
    params = []
    for row in rows:
        state = dict(row.state or {})
        state["path"] = [*state.get("path", []), note]
        params.append({"e_id": row.id, "e_state": state})
    conn.execute(update(E).where(E.c.id == bindparam("e_id")).values(state=bindparam("e_state"), **values), params)
    return len(rows)


def move(conn: Connection, campaign_id: str, version: str | None, step_id: str, *, target: str,
         note: dict[str, Any], now: datetime) -> int:
    """Move the active enrollments waiting at a removed step (under ``version``) on to ``target``, due at ``now``
    (the target's wait counts from when they reached the removed step); return how many."""
    return _with_note(conn, _at(campaign_id, version, step_id), note,
                      {"step_id": target, "next_due_at": now, "waiting_for": None})


def end(conn: Connection, campaign_id: str, version: str | None, step_id: str, *, status: str, reason: str,
        note: dict[str, Any], now: datetime) -> int:
    """End the active enrollments waiting at a removed step (under ``version``); return how many."""
    return _with_note(conn, _at(campaign_id, version, step_id), note,
                      {"status": status, "end_reason": reason, "ended_at": now, "next_due_at": None,
                       "waiting_for": None})


def relabel(conn: Connection, campaign_id: str, version: str, *, priority: int, due_at: datetime | None) -> int:
    """Put the campaign's active enrollments under ``version`` (and its ``priority``); with ``due_at``, make them due
    then, so the engine plans them again with the new definition. Returns how many it changed."""
    values: dict[str, Any] = {"campaign_version": version, "priority": priority}
    where = [E.c.campaign_id == campaign_id, E.c.status == "active"]
    if due_at is not None:
        values["next_due_at"] = due_at
    else:  # rows already under this version and priority (enrolled with it, by an import) are not written again
        where.append(or_(E.c.campaign_version.is_distinct_from(version), E.c.priority != priority))
    result = conn.execute(update(E).where(*where).values(**values))
    return result.rowcount or 0
