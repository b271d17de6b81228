"""Enrolling leads into campaigns (entry criteria and re-entry policy) and ending enrollments early."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import and_, bindparam, exists, func, literal_column, or_, select, text, update
from sqlalchemy.engine import Connection, Engine

from nurture.core.conditions import filter_matches
from nurture.core.facts import Engagement, History
from nurture.definitions.campaign import Campaign
from nurture.definitions.loader import Catalog
from nurture.storage.database import transaction
from nurture.storage.dialect import upsert_insert
from nurture.storage.schedule import lead_view
from nurture.storage.tables import CV, E, EV, L


CHUNK = 2000

RECYCLE_AT = "recycle_at"
"""The custom field sales' reject sets (ISO UTC): a recycled lead enters no campaign before that time."""


def recycle_pending(stage: str, fields: Mapping[str, Any] | None, now: datetime) -> bool:
    """Whether a recycled lead still waits out the ``recycle_after`` of the reason sales rejected it for (the
    ``recycle_at`` custom field the rejection set): until then it enters no campaign, and scoring does not promote it.

    Only the recycled stage waits: a gate left over from an earlier rejection must not keep a lead that has since moved
    on (to sql, opportunity, customer) out of that stage's campaigns. A value that is not a time is no gate.
    """
    value = (fields or {}).get(RECYCLE_AT) if stage == "recycled" else None
    if not isinstance(value, str):
        return False
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return False
    return (at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)) > now


def waiting_to_recycle(lead: Any, now: datetime) -> bool:
    """:func:`recycle_pending` for a lead row."""
    return recycle_pending(lead.stage, lead.fields, now)


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


def _events_since_last_entry(conn: Connection, campaign_id: str, lead_ids: Sequence[int]) -> dict[int, list[Engagement]]:
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


def _enroll_chunk(conn: Connection, campaign: Campaign, version: str, now: datetime, *, after_id: int,
                  lead_ids: Sequence[int] | None) -> tuple[int, int | None]:
    """Enroll one chunk of matching leads with ids above ``after_id`` (a sweep, filtered in SQL); return
    (created, last id seen or None)."""
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
    leads = list(conn.execute(query))
    if not leads:
        return 0, None
    where = campaign.entry.where
    events = _events_since_last_entry(conn, campaign.id, [r.id for r in leads]) if where and where.had_event else {}
    rows = [
        dict(lead_id=r.id, campaign_id=campaign.id, status="active", step_id=campaign.steps[0].id,
             arrived_at=now, next_due_at=now, state={}, campaign_version=version,
             priority=campaign.priority, enrolled_at=now)
        for r in leads
        if not waiting_to_recycle(r, now) and filter_matches(where, lead_view(r), History(events.get(r.id, [])))
    ]
    created = 0
    if rows:
        insert = upsert_insert(E, conn.dialect).on_conflict_do_nothing(
            index_elements=["lead_id", "campaign_id"], index_where=text("status = 'active'")
        )
        created = len(conn.execute(insert.returning(E.c.id), rows).all())  # rowcount is -1 for executemany on psycopg
    return created, leads[-1].id


def _blocked(campaign: Campaign, past: list[Any], now: datetime) -> bool:
    """Whether this lead's enrollments in the campaign keep it from entering again (the re-entry policy)."""
    if any(e.status == "active" for e in past):
        return True
    policy = campaign.reentry
    if policy.policy == "always":
        return False
    if policy.policy == "after" and policy.after is not None:
        since = now - policy.after.as_timedelta()
        return any(e.ended_at is not None and e.ended_at > since for e in past)
    return bool(past)


def _enroll_given(conn: Connection, catalog: Catalog, campaigns: list[Campaign], lead_ids: Sequence[int],
                  now: datetime) -> int:
    """Enroll the given leads: their rows and enrollments read once, every campaign decided in Python."""
    leads = list(conn.execute(select(L).where(L.c.id.in_(list(lead_ids)))))
    past: dict[tuple[int, str], list[Any]] = {}
    for row in conn.execute(
        select(E.c.lead_id, E.c.campaign_id, E.c.status, E.c.ended_at, E.c.enrolled_at).where(E.c.lead_id.in_(list(lead_ids)))
    ):
        past.setdefault((row.lead_id, row.campaign_id), []).append(row)
    events: dict[int, list[Any]] = {}
    if any(c.entry.where and c.entry.where.had_event for c in campaigns):
        for row in conn.execute(select(EV.c.lead_id, EV.c.type, EV.c.occurred_at).where(EV.c.lead_id.in_(list(lead_ids)))):
            events.setdefault(row.lead_id, []).append(row)
    rows = []
    for campaign in campaigns:
        stages = set(campaign.entry.stages())
        where = campaign.entry.where
        for lead in leads:
            if lead.stage not in stages or lead.unsubscribed_at is not None or lead.bounced_at is not None:
                continue
            if waiting_to_recycle(lead, now):
                continue
            mine = past.get((lead.id, campaign.id), [])
            if _blocked(campaign, mine, now):
                continue
            last_entry = max((e.enrolled_at for e in mine), default=None)
            history = History([Engagement(e.type, e.occurred_at) for e in events.get(lead.id, [])
                               if last_entry is None or e.occurred_at > last_entry])
            if filter_matches(where, lead_view(lead), history):
                rows.append(dict(lead_id=lead.id, campaign_id=campaign.id, status="active",
                                 step_id=campaign.steps[0].id, arrived_at=now, next_due_at=now, state={},
                                 campaign_version=catalog.fingerprint(campaign.id), priority=campaign.priority,
                                 enrolled_at=now))
    if not rows:
        return 0
    insert = upsert_insert(E, conn.dialect).on_conflict_do_nothing(
        index_elements=["lead_id", "campaign_id"], index_where=text("status = 'active'")
    )
    return len(conn.execute(insert.returning(E.c.id), rows).all())


def enroll_in_transaction(conn: Connection, catalog: Catalog, lead_ids: Sequence[int], now: datetime) -> int:
    """Enroll these leads inside the caller's transaction (intake: the event and its consequences commit together)."""
    campaigns = [c for c in sorted(catalog.campaigns.values(), key=lambda c: -c.priority) if not c.paused]
    wanted = sorted(set(lead_ids))
    return sum(_enroll_given(conn, catalog, campaigns, wanted[start : start + CHUNK], now)
               for start in range(0, len(wanted), CHUNK))


def enroll_leads(engine: Engine, catalog: Catalog, now: datetime, lead_ids: Iterable[int] | None = None) -> int:
    """Enroll every matching lead (or just ``lead_ids``) into every campaign it may enter now; return how many.

    New enrollments are due at once: the dispatcher's first look at them plans the first step properly. For given
    leads (intake, the CLI) it is one short transaction; a full sweep goes campaign by campaign in chunks.
    """
    campaigns = [c for c in sorted(catalog.campaigns.values(), key=lambda c: -c.priority) if not c.paused]
    created = 0
    if lead_ids is not None:
        wanted = sorted(set(lead_ids))
        for start in range(0, len(wanted), CHUNK):
            with transaction(engine) as conn:
                created += _enroll_given(conn, catalog, campaigns, wanted[start : start + CHUNK], now)
        return created
    for campaign in campaigns:
        last_id: int | None = 0
        while last_id is not None:
            with transaction(engine) as conn:
                count, last_id = _enroll_chunk(conn, campaign, catalog.fingerprint(campaign.id), now,
                                               after_id=last_id, lead_ids=None)
            created += count
    return created


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


def sync_campaign_versions(engine: Engine, catalog: Catalog, now: datetime) -> list[str]:
    """Record each campaign's fingerprint; for an edited one, make its active enrollments due so they are re-planned.

    Returns the ids of campaigns that changed since they were last loaded.
    """
    changed = []
    with transaction(engine) as conn:
        known = {row.campaign_id: row.fingerprint for row in conn.execute(select(CV))}
        for campaign_id, campaign in catalog.campaigns.items():
            current = catalog.fingerprint(campaign_id)
            if known.get(campaign_id) == current:
                continue
            insert = upsert_insert(CV, conn.dialect)
            conn.execute(
                insert.values(campaign_id=campaign_id, fingerprint=current, loaded_at=now).on_conflict_do_update(
                    index_elements=["campaign_id"], set_={"fingerprint": current, "loaded_at": now}
                )
            )
            if campaign_id in known:
                changed.append(campaign_id)
                conn.execute(
                    update(E)
                    .where(E.c.campaign_id == campaign_id, E.c.status == "active")
                    .values(next_due_at=now, campaign_version=current)
                )
    return changed
