"""Definition versions' queries: the version of each file in force, the texts of past versions, recording a new one,
and a campaign's history with what ran under each version."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection

from nurture.storage.tables import D, DV, E


def in_force(conn: Connection) -> dict[tuple[str, str], Any]:
    """(kind, name) -> the row of the version in force (the newest row not ended) of every file the worker ran."""
    rows = conn.execute(select(DV).where(DV.c.ended_at.is_(None)).order_by(DV.c.id))
    return {(row.kind, row.name): row for row in rows}


def texts(conn: Connection, kind: str, name: str, hashes: Iterable[str]) -> dict[str, str | None]:
    """Content hash -> the stored text (None when it was recorded without one) of these versions of one file."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    rows = conn.execute(select(DV.c.content_hash, DV.c.text)
                        .where(DV.c.kind == kind, DV.c.name == name, DV.c.content_hash.in_(wanted)).order_by(DV.c.id))
    found: dict[str, str | None] = {}
    for row in rows:
        found[row.content_hash] = row.text if row.text is not None else found.get(row.content_hash)
    return found


def record(conn: Connection, *, kind: str, name: str, content_hash: str, fingerprint: str | None, text: str | None,
           now: datetime, summary: dict[str, Any] | None = None) -> None:
    """Put a new version of a file in force at ``now``: the version in force until now ends then."""
    end(conn, kind, name, now)
    conn.execute(DV.insert().values(kind=kind, name=name, content_hash=content_hash, fingerprint=fingerprint,
                                    text=text, loaded_at=now, summary=summary))


def end(conn: Connection, kind: str, name: str, now: datetime, summary: dict[str, Any] | None = None) -> None:
    """End the version of a file in force (replaced, or its file removed)."""
    values: dict[str, Any] = {"ended_at": now}
    if summary is not None:
        values["summary"] = summary
    conn.execute(update(DV).where(DV.c.kind == kind, DV.c.name == name, DV.c.ended_at.is_(None)).values(**values))


@dataclass(frozen=True)
class VersionRun:
    """One version of a campaign as it ran: when it came into force and ended, and what ran under it."""

    content_hash: str
    fingerprint: str | None
    has_text: bool
    loaded_at: datetime
    ended_at: datetime | None
    entered: int  # enrollments that began while it was in force
    deliveries: int  # deliveries it decided while it was in force
    active: int  # enrollments that run under it now
    summary: dict[str, Any] | None


def campaign_history(conn: Connection, campaign_id: str) -> list[VersionRun]:
    """Every version of a campaign, oldest first, with the enrollments begun and deliveries made while each was in
    force (deliveries: those it decided)."""
    rows = list(conn.execute(select(DV).where(DV.c.kind == "campaign", DV.c.name == campaign_id).order_by(DV.c.id)))
    runs = []
    for index, row in enumerate(rows):
        # the first version also counts what began before the worker first recorded it (leads imported before)
        since = row.loaded_at if index else datetime.min.replace(tzinfo=row.loaded_at.tzinfo)
        during_e = and_(E.c.enrolled_at >= since, E.c.enrolled_at < row.ended_at) if row.ended_at is not None \
            else E.c.enrolled_at >= since
        during_d = and_(D.c.created_at >= since, D.c.created_at < row.ended_at) if row.ended_at is not None \
            else D.c.created_at >= since
        entered = conn.execute(select(func.count()).select_from(E).where(E.c.campaign_id == campaign_id, during_e))
        sent = conn.execute(select(func.count()).select_from(D).where(
            D.c.campaign_id == campaign_id, D.c.campaign_version == row.content_hash, during_d))
        active = conn.execute(select(func.count()).select_from(E).where(
            E.c.campaign_id == campaign_id, E.c.status == "active", E.c.campaign_version == row.content_hash)) \
            if row.ended_at is None else None
        runs.append(VersionRun(row.content_hash, row.fingerprint, row.text is not None, row.loaded_at, row.ended_at,
                               int(entered.scalar_one()), int(sent.scalar_one()),
                               int(active.scalar_one()) if active is not None else 0, row.summary))
    return runs
