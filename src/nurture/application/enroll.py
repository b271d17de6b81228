"""Enrolling leads into campaigns: who may enter which campaign now (entry stages and filter, re-entry policy, a
recycled lead's wait), and how many a sweep would enroll (``nurture plan``).

The rules are the core's (:mod:`nurture.core.enrollment`, :func:`nurture.core.conditions.filter_matches`); the reads
and writes are :mod:`nurture.storage.enrollments`'. A sweep over every lead goes campaign by campaign in chunks that
SQL pre-filters; given leads are read once and every campaign decided in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nurture.core.conditions import filter_matches
from nurture.core.enrollment import blocked, waiting_to_recycle
from nurture.core.facts import Engagement, History
from nurture.core.holdout import held_out
from nurture.definitions.campaign import Campaign
from nurture.definitions.loader import Catalog
from nurture.storage import enrollments as store
from nurture.storage.database import transaction
from nurture.storage.enrollments import CHUNK
from nurture.storage.rows import lead_view

if TYPE_CHECKING:  # the connection types only annotate: the queries are storage's
    from sqlalchemy.engine import Connection, Engine


def _new_enrollment(lead_id: int, campaign: Campaign, version: str, now: datetime) -> dict[str, Any]:
    """The row of a new enrollment, due at once; held out when the lead falls in the campaign's holdout share."""
    return dict(lead_id=lead_id, campaign_id=campaign.id, status="active", step_id=campaign.steps[0].id,
                arrived_at=now, next_due_at=now, state={}, campaign_version=version, priority=campaign.priority,
                enrolled_at=now, held_out=held_out(str(lead_id), campaign.id, campaign.holdout))


def _enrollable_chunk(conn: Connection, campaign: Campaign, version: str, now: datetime, *, after_id: int,
                      lead_ids: Sequence[int] | None) -> tuple[list[dict[str, Any]], int | None]:
    """The enrollments one chunk of matching leads with ids above ``after_id`` would get (a sweep, filtered in SQL),
    and the last id seen (None when no lead is left)."""
    leads = store.candidates(conn, campaign, now, after_id=after_id, lead_ids=lead_ids)
    if not leads:
        return [], None
    where = campaign.entry.where
    events = store.events_since_last_entry(conn, campaign.id, [r.id for r in leads]) if where and where.had_event else {}
    rows = [
        _new_enrollment(r.id, campaign, version, now)
        for r in leads
        if not waiting_to_recycle(r, now) and filter_matches(where, lead_view(r), History(events.get(r.id, [])))
    ]
    return rows, leads[-1].id


def _enroll_chunk(conn: Connection, campaign: Campaign, version: str, now: datetime, *, after_id: int,
                  lead_ids: Sequence[int] | None) -> tuple[int, int | None]:
    """Enroll one chunk of matching leads with ids above ``after_id``; return (created, last id seen or None)."""
    rows, last_id = _enrollable_chunk(conn, campaign, version, now, after_id=after_id, lead_ids=lead_ids)
    return (store.insert(conn, rows) if rows else 0), last_id


def count_enrollable(conn: Connection, campaign: Campaign, now: datetime) -> int:
    """How many leads the next sweep would enroll in ``campaign`` (as it is given, paused or not): the same decision
    as :func:`enroll_leads`, read-only, for ``nurture plan``."""
    count, last_id = 0, 0
    while True:
        rows, following = _enrollable_chunk(conn, campaign, "", now, after_id=last_id, lead_ids=None)
        count += len(rows)
        if following is None:
            return count
        last_id = following


def _enroll_given(conn: Connection, catalog: Catalog, campaigns: list[Campaign], lead_ids: Sequence[int],
                  now: datetime) -> int:
    """Enroll the given leads: their rows and enrollments read once, every campaign decided in Python."""
    leads = store.leads(conn, lead_ids)
    past = store.past_enrollments(conn, lead_ids)
    events: dict[int, list[Any]] = {}
    if any(c.entry.where and c.entry.where.had_event for c in campaigns):
        events = store.events(conn, lead_ids)
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
            if blocked(campaign, mine, now):
                continue
            last_entry = max((e.enrolled_at for e in mine), default=None)
            history = History([Engagement(e.type, e.occurred_at) for e in events.get(lead.id, [])
                               if last_entry is None or e.occurred_at > last_entry])
            if filter_matches(where, lead_view(lead), history):
                rows.append(_new_enrollment(lead.id, campaign, catalog.version(campaign.id), now))
    if not rows:
        return 0
    return store.insert(conn, rows)


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
                count, last_id = _enroll_chunk(conn, campaign, catalog.version(campaign.id), now,
                                               after_id=last_id, lead_ids=None)
            created += count
    return created
